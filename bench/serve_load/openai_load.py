"""A closed-loop load generator for `lowrank serve` built on the official `openai` client.

Each of --users threads owns one `openai.OpenAI` client and sends completions back to back until
--run-time seconds have passed or --max-requests requests have been sent in all: three of four
streamed (server-sent events), one plain; the model (the base or an adapter) and the prompt drawn
from a per-user seeded generator; greedy, `ignore_eos`, so every request asks for exactly
--max-tokens tokens. Each request carries the `X-Lowrank-Model` header (the model it asks for),
which is what the HAProxy recipe in deploy/ hashes on; a single server ignores it.

Per streamed request the client clock gives the time to first token (request sent -> first chunk
that carries text) and one inter-token latency per later text chunk (the gap to the previous
one); per request the whole latency and the completion tokens (the usage the server reports).
A request is an error when the client raises, when the finish reason is not "length"/"stop", or
when the usage differs from --max-tokens.

The request function and the sample format are shared with locustfile.py (the same load under
locust); run.py starts the server and reads the samples this writes:

  python openai_load.py --url http://127.0.0.1:PORT --models tiny,alpha --users 8 \
      --run-time 20 [--max-requests 2000] [--max-tokens 16] [--api-key KEY] --out samples.json
"""
import argparse
import json
import random
import threading
import time

PROMPTS = ["Hello, world", "The quick brown fox", "Once upon a time there was", "A B C D E F G",
           "In the beginning", "To be or not to be"]
STREAMED_SHARE = 0.75


def one_request(client, model, prompt, max_tokens, streamed):
    """Sends one greedy completion; returns its sample (a dict, see the module docstring)."""
    sample = {"model": model, "stream": streamed, "ok": False, "latency": None, "ttft": None, "itl": [],
              "tokens": 0, "error": None, "t0": time.time(), "t1": None}
    args = dict(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                extra_body={"ignore_eos": True}, extra_headers={"X-Lowrank-Model": model})
    start = time.perf_counter()
    finish = None
    try:
        if streamed:
            last = None
            for chunk in client.completions.create(stream=True, stream_options={"include_usage": True}, **args):
                now = time.perf_counter()
                for choice in chunk.choices:
                    if choice.text:
                        if last is None:
                            sample["ttft"] = now - start
                        else:
                            sample["itl"].append(now - last)
                        last = now
                    finish = choice.finish_reason or finish
                if chunk.usage:
                    sample["tokens"] = chunk.usage.completion_tokens
        else:
            out = client.completions.create(**args)
            finish = out.choices[0].finish_reason
            sample["tokens"] = out.usage.completion_tokens
    except Exception as e:  # every failure counts as an error sample, whatever raised it
        sample["error"] = f"{type(e).__name__}: {e}"[:300]
        sample["latency"] = time.perf_counter() - start
        sample["t1"] = time.time()
        return sample
    sample["latency"] = time.perf_counter() - start
    sample["t1"] = time.time()
    if finish not in ("length", "stop"):
        sample["error"] = f"finish_reason {finish!r}"
    elif sample["tokens"] != max_tokens:
        sample["error"] = f"usage.completion_tokens {sample['tokens']} != max_tokens {max_tokens}"
    elif streamed and sample["ttft"] is None:
        sample["error"] = "a stream without text"
    else:
        sample["ok"] = True
    return sample


def make_client(url, api_key):
    import openai
    return openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=api_key or "none", max_retries=0, timeout=300)


def run(url, models, users, run_time, max_requests, max_tokens, api_key, seed=0):
    samples, lock = [], threading.Lock()
    budget = [max_requests if max_requests > 0 else float("inf")]
    deadline = time.perf_counter() + run_time

    def user(index):
        rng = random.Random(seed * 1000 + index)
        client = make_client(url, api_key)
        while time.perf_counter() < deadline:
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            sample = one_request(client, rng.choice(models), rng.choice(PROMPTS), max_tokens,
                                 rng.random() < STREAMED_SHARE)
            with lock:
                samples.append(sample)

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--models", required=True, help="comma-separated: the base model and adapters to ask for")
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--run-time", type=float, default=20)
    p.add_argument("--max-requests", type=int, default=0, help="0: bounded by time only")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--api-key", default="")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    samples = run(a.url, a.models.split(","), a.users, a.run_time, a.max_requests, a.max_tokens, a.api_key)
    with open(a.out, "w") as f:
        json.dump({"samples": samples}, f)


if __name__ == "__main__":
    main()
