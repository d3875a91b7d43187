"""The two-replica recipe (deploy/run-replicas: two `lowrank serve` behind HAProxy), end to end.

Starts deploy/run-replicas on a free proxy port (the tiny test Llama with adapters alpha, beta,
gamma on both replicas) and checks, through the proxy with the official `openai` client:
  - sticky adapters: every request with X-Lowrank-Model: M lands on one replica per M (the
    X-Lowrank-Replica header HAProxy adds), and that replica's own /metrics count the requests
    (requests_total grows by exactly that many there and not at all on the other);
  - requests without the header spread: both replicas answer some of them (least connections);
  - streaming through the proxy: the streamed text equals the non-streamed text at temperature 0,
    and the events reach the client spread over the generation, not in one piece at its end
    (HAProxy does not hold the stream back);
  - a short load run through the proxy (bench/serve_load/run, locust, adapter churn on both
    replicas): errors = 0, no churn failure;
  - failover: the replica holding an adapter is stopped (SIGTERM); HAProxy's health checks on
    /health mark it DOWN (its log says so) and the adapter's requests, and those without the
    header, all go to the other replica and succeed;
  - SIGTERM to run-replicas stops HAProxy and both replicas and removes its temporary directory.
Skipped (exit 77) when haproxy or the peer stack (openai, locust) is missing.

usage: replicas_test.py LOWRANK_BINARY REPO_ROOT
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

if shutil.which("haproxy") is None:
    print("SKIP: haproxy is not installed (scripts/setup installs it with the full test run)")
    sys.exit(77)
try:
    import locust  # noqa: F401  (the load test's generator; only its presence is checked here)
    import openai
except ImportError as e:
    print(f"SKIP: the peer stack is missing ({e}); scripts/setup installs it")
    sys.exit(77)

lowrank, repo = sys.argv[1:3]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


recipe = subprocess.Popen([os.path.join(repo, "deploy", "run-replicas"), "--lowrank", lowrank, "--port", "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
log, proxy, replicas, work = [], None, {}, None
deadline = time.time() + 120
while time.time() < deadline and work is None:
    line = recipe.stdout.readline()
    if not line:
        break
    log.append(line)
    if m := re.match(r"proxy on (\S+)", line):
        proxy = m.group(1)
    elif m := re.match(r"replica (r\d) on (\S+) pid (\d+)", line):
        replicas[m.group(1)] = (m.group(2), int(m.group(3)))
    elif m := re.match(r"logs in (\S+)", line):
        work = m.group(1)
if work is None or proxy is None or len(replicas) != 2:
    recipe.kill()
    print("".join(log) + "FAIL: run-replicas did not print its proxy, replicas and logs")
    sys.exit(1)
threading.Thread(target=lambda: [log.append(l) for l in recipe.stdout], daemon=True).start()


def requests_total(replica):
    """The replica's own count of requests (its /metrics, read from the replica directly)."""
    with urllib.request.urlopen(replicas[replica][0] + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return int(float(re.search(r"^lowrank_requests_total (\S+)", text, re.M).group(1)))


client = openai.OpenAI(base_url=proxy + "/v1", api_key="none", max_retries=0, timeout=120)


def complete(model, header=True, max_tokens=4):
    """A greedy completion through the proxy; (text, the replica that answered)."""
    raw = client.completions.with_raw_response.create(
        model=model, prompt="Hello, world", max_tokens=max_tokens, temperature=0, extra_body={"ignore_eos": True},
        extra_headers={"X-Lowrank-Model": model} if header else None)
    out = raw.parse()
    check(out.choices[0].finish_reason == "length" and out.usage.completion_tokens == max_tokens,
          f"{model}: a complete answer")
    return out.choices[0].text, raw.headers.get("x-lowrank-replica")


try:
    # Sticky adapters, seen by HAProxy's header and by the replicas' own request counters.
    owner = {}
    for model in ["tiny", "alpha", "beta", "gamma"]:
        before = {r: requests_total(r) for r in replicas}
        answered = {complete(model)[1] for _ in range(5)}
        after = {r: requests_total(r) for r in replicas}
        check(len(answered) == 1 and answered <= set(replicas), f"{model}: every request on one replica {answered}")
        owner[model] = next(iter(answered))
        deltas = {r: after[r] - before[r] for r in replicas}
        check(deltas == {r: 5 if r == owner[model] else 0 for r in replicas},
              f"{model}: the replicas' own request counts agree ({deltas})")
    check(complete("alpha")[0] != complete("tiny")[0], "the adapter answers, not the base")

    # Without the header: least connections, ties in turn, so both replicas answer.
    spread = [complete("alpha", header=False)[1] for _ in range(8)]
    check(set(spread) == set(replicas), f"requests without the header spread: {spread}")

    # Streaming through the proxy (raw SSE), each event's arrival timed. Not held back: the events
    # arrive spread over the generation (from the first token to the end at least a quarter of the
    # stream's time; a held-back stream arrives in one piece at its end). Without `option
    # http-no-delay` a short generation's whole stream (240 tokens, ~45 kB) arrives when it ends,
    # every time. A busy machine can stall one try: up to five, one after the other.
    plain_text, _ = complete("beta", max_tokens=240)

    def stream_through_proxy():
        request = urllib.request.Request(
            proxy + "/v1/completions", method="POST",
            data=json.dumps({"model": "beta", "prompt": "Hello, world", "max_tokens": 240, "temperature": 0,
                             "ignore_eos": True, "stream": True}).encode(),
            headers={"Content-Type": "application/json", "X-Lowrank-Model": "beta"})
        events, text, first_event_at, first_token_at, finish = 0, "", None, None, None
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            content_type, replica = response.headers.get("Content-Type", ""), response.headers.get("X-Lowrank-Replica")
            for raw_line in response:
                arrived = time.perf_counter() - start
                line = raw_line.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choice = json.loads(line[6:])["choices"][0]
                events += 1
                first_event_at = first_event_at or arrived
                if choice["text"] and first_token_at is None:
                    first_token_at = arrived
                text += choice["text"]
                finish = choice.get("finish_reason") or finish
        return content_type, replica, events, text, finish, first_event_at, first_token_at, time.perf_counter() - start

    streams = []
    for _ in range(5):
        streams.append(stream_through_proxy())
        *_, first_token_at, total = streams[-1]
        if first_token_at is not None and (total - first_token_at) / total >= 0.25:
            break
    spreads = [(total - first_token_at) / total if first_token_at is not None else 0
               for *_, first_token_at, total in streams]
    content_type, replica, events, text, finish, *_ = streams[0]
    check(content_type.startswith("text/event-stream") and replica == owner["beta"],
          f"stream: event-stream from beta's replica ({replica})")
    check(all(t == plain_text and f == "length" and e > 1 for _, _, e, t, f, *_ in streams),
          f"stream through the proxy: {events} events, the same text as non-streamed")
    check(max(spreads) >= 0.25, "stream not held back: first event, first token, end (ms) " + ", ".join(
        f"{first_event_at * 1000:.1f}/{first_token_at * 1000:.1f}/{total * 1000:.1f}"
        for *_, first_event_at, first_token_at, total in streams))
    pieces = []
    for chunk in client.completions.create(model="beta", prompt="Hello, world", max_tokens=240, temperature=0,
                                           stream=True, extra_body={"ignore_eos": True},
                                           extra_headers={"X-Lowrank-Model": "beta"}):
        pieces += [c.text for c in chunk.choices]
    check("".join(pieces) == plain_text, "the openai client's stream through the proxy")

    # A short load run through the proxy, adapter churn on both replicas.
    results = os.path.join(work, "load.json")
    load = subprocess.run(
        [os.path.join(repo, "bench", "serve_load", "run"), "--url", proxy,
         *[arg for r in replicas.values() for arg in ("--admin-url", r[0], "--pid", str(r[1]))],
         "--adapter-root", os.path.join(work, "adapters"), "--run-time", "6", "--users", "4",
         "--max-requests", "400", "--out", results], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=120)
    with open(results) as f:
        summary = json.load(f)
    check(summary["requests"] > 0 and summary["errors"] == 0 and summary["generator_exit_status"] == 0
          and not summary["churn"]["failures"] and summary["churn"]["loads"] > 0,
          f"load through the proxy: {summary['requests']} requests, {summary['errors']} errors, "
          f"churn {summary['churn']}")
    if failures:
        print(load.stdout[-4000:])

    # Failover: stop alpha's replica; HAProxy's checks take it out, the other answers everything.
    down = owner["alpha"]
    other = next(r for r in replicas if r != down)
    os.kill(replicas[down][1], signal.SIGTERM)
    for _ in range(300):
        try:
            os.kill(replicas[down][1], 0)
            time.sleep(0.1)
        except ProcessLookupError:
            break
    marked = False
    for _ in range(100):  # fall 2 x inter 1 s: a few seconds
        with open(os.path.join(work, "haproxy.log")) as f:
            marked = re.search(rf"by_adapter/{down} is DOWN", f.read()) is not None
        if marked:
            break
        time.sleep(0.1)
    check(marked, f"HAProxy's health checks mark {down} DOWN")
    moved = [complete("alpha")[1] for _ in range(4)] + [complete("tiny", header=False)[1] for _ in range(4)]
    check(set(moved) == {other}, f"after {down} went down every request lands on {other}: {moved}")
finally:
    recipe.send_signal(signal.SIGTERM)
    try:
        code = recipe.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(recipe.pid, signal.SIGKILL)
        code = "killed"
    check(code == 143, f"run-replicas stops on SIGTERM (status {code})")
    alive = []
    for name, (_, pid) in replicas.items():
        try:
            os.kill(pid, 0)
            alive.append(name)
        except ProcessLookupError:
            pass
    check(not alive and not os.path.exists(work), f"replicas stopped ({alive} alive), temporary directory removed")

if failures:
    print("".join(log))
    print(f"{len(failures)} failure(s)")
    sys.exit(1)
print("all checks passed")
