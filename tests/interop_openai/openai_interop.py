"""The OpenAI-compatible server driven by the official `openai` Python client (PyPI).

Starts `lowrank serve` on a free loopback port over a copy of the bundled tiny Llama with two
adapters (alpha: the fixture LoRA; beta: the same weights with 4x lora_alpha), waits for its
"serving ... on http://HOST:PORT" line, then checks through the client:
  - models.list: the base model and both adapters, each adapter with the base as parent;
  - completions, non-streaming and streaming: at temperature 0 the streamed text equals the
    non-streamed text, and each adapter's output differs from the base's and from the other's;
  - chat completions, non-streaming and streaming (with stream_options.include_usage);
  - logprobs: completions (integer top-k) and chat (logprobs + top_logprobs), streamed equal to
    non-streamed; echo with logprobs, whose prompt-token values equal log_softmax of
    `lowrank logits` on the same ids (1e-4); top_logprobs and logit_bias out of range raise
    openai.BadRequestError naming the parameter; logit_bias +100 forces its token; user accepted;
  - vLLM's /tokenize and /detokenize (raw HTTP) round trip, and /version;
  - adapters loaded and unloaded at run time through vLLM's POST /v1/load_lora_adapter and
    /v1/unload_lora_adapter (raw HTTP): a loaded copy of alpha answers as alpha, an unloaded one
    raises openai.NotFoundError; a path out of the adapter root is refused (400);
  - structured output: response_format json_schema (chat, streamed and not) validates, vLLM's
    guided_choice and guided_regex through extra_body, an unsupported schema keyword raises
    openai.BadRequestError naming the field;
  - a wrong API key raises openai.AuthenticationError;
  - SIGTERM stops the server with exit status 0;
  - SIGTERM under load (a second server, --drain-seconds 0.5): every choice of a streamed chat and
    a non-streamed completion ends with a finish reason the client parses ("abort" for what the
    drain cut), a call during the drain raises InternalServerError (503, Retry-After), exit 0.

usage: openai_interop.py LOWRANK_BINARY MODEL_DIR TOKENIZER_JSON ADAPTER_DIR WORK_DIR
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
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import serve_process  # noqa: E402

try:
    import openai
except ImportError as e:  # the peer stack is installed by scripts/setup
    print(f"SKIP: {e}")
    sys.exit(77)

lowrank, model_src, tokenizer, adapter_src, work = sys.argv[1:6]
KEY = "interop-key"
PROMPT = [1, 17, 240, 33, 5, 99]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def exit_status(process, timeout):
    """The process's exit status, waiting up to `timeout` seconds (then it is killed)."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return f"killed after {timeout} s"


shutil.rmtree(work, ignore_errors=True)
model_dir = os.path.join(work, "model")
shutil.copytree(model_src, model_dir)
shutil.copy(tokenizer, os.path.join(model_dir, "tokenizer.json"))
root = os.path.join(work, "adapters")
shutil.copytree(adapter_src, os.path.join(root, "alpha"))
shutil.copytree(adapter_src, os.path.join(root, "beta"))
beta_config = os.path.join(root, "beta", "adapter_config.json")
with open(beta_config) as f:
    config = json.load(f)
config["lora_alpha"] = config["lora_alpha"] * 4
with open(beta_config, "w") as f:
    json.dump(config, f)

# serve_process.start waits for the "serving" line (the server prints it once it listens) and keeps
# draining the output afterwards so that the server never blocks on a full pipe.
log = []
server, serving = serve_process.start(
    [lowrank, "serve", "--model", model_dir, "--adapters", root, "--port", "0", "--api-key", KEY,
     "--model-name", "tiny", "--pool-mb", "16"], sink=log, timeout=180)
if serving is None:
    print("".join(log))
    print("FAIL: the server did not print its serving line")
    sys.exit(1)
check(serving.group(1) == "tiny" and serving.group(2) == "2",
      f"two adapters registered at start ({serving.group(0)})")
url = serving.group(3)


def raw_post(path, body, key=KEY):
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def structured_output_checks(client):
    """Structured output through the client: response_format json_schema (chat, streamed and not)
    and vLLM's guided_choice / guided_regex through extra_body; a bad schema raises
    BadRequestError naming the field."""
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5},
                                               "n": {"type": "integer"}}, "required": ["name", "n"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}
    messages = [{"role": "user", "content": "a person, as JSON"}]
    for seed in range(3):
        out = client.chat.completions.create(model="tiny", messages=messages, max_tokens=64, temperature=1,
                                             seed=seed, response_format=response_format)
        text = out.choices[0].message.content
        value = json.loads(text) if out.choices[0].finish_reason == "stop" else None
        check(isinstance(value, dict) and set(value) == {"name", "n"} and isinstance(value["n"], int)
              and isinstance(value["name"], str) and len(value["name"]) <= 5,
              f"json_schema output validates: {text!r}")
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=64, temperature=1, seed=0, stream=True,
        response_format=response_format) if chunk.choices)
    first = client.chat.completions.create(model="tiny", messages=messages, max_tokens=64, temperature=1, seed=0,
                                           response_format=response_format).choices[0].message.content
    check(streamed == first, "streamed json_schema output == non-streamed (same seed)")
    choices = ["yes", "no", "maybe so"]
    for seed in range(3):
        out = client.completions.create(model="alpha", prompt="ok?", max_tokens=8, temperature=1, seed=seed,
                                        extra_body={"guided_choice": choices})
        check(out.choices[0].text in choices, f"guided_choice output is a choice: {out.choices[0].text!r}")
    out = client.completions.create(model="tiny", prompt="code:", max_tokens=16, temperature=1, seed=1,
                                    extra_body={"guided_regex": "[a-c]{2,4}-[0-9]"})
    check(re.fullmatch("[a-c]{2,4}-[0-9]", out.choices[0].text) is not None,
          f"guided_regex output matches: {out.choices[0].text!r}")
    try:
        bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "patternProperties": {}}}}
        client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, response_format=bad)
        check(False, "an unsupported schema keyword raises BadRequestError")
    except openai.BadRequestError as e:
        check("patternProperties" in str(e) and e.body.get("param") == "response_format.json_schema.schema",
              f"an unsupported schema keyword raises BadRequestError naming it: {e.body}")


try:
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120)

    models = {m.id: m for m in client.models.list()}
    check(set(models) == {"tiny", "alpha", "beta"}, f"models.list: {sorted(models)}")
    check(getattr(models.get("alpha"), "parent", None) == "tiny", "adapter alpha lists tiny as parent")
    check(getattr(models.get("tiny"), "parent", "x") is None, "the base model has no parent")

    def complete(model, stream=False, prompt=PROMPT):
        args = dict(model=model, prompt=prompt, max_tokens=8, temperature=0, extra_body={"ignore_eos": True})
        if not stream:
            out = client.completions.create(**args)
            return out.choices[0].text, out.choices[0].finish_reason, out.usage
        text, finish = "", None
        for chunk in client.completions.create(stream=True, **args):
            for choice in chunk.choices:
                text += choice.text
                finish = choice.finish_reason or finish
        return text, finish, None

    base, finish, usage = complete("tiny")
    check(finish == "length" and usage.completion_tokens == 8 and usage.prompt_tokens == len(PROMPT),
          f"completion: finish {finish}, usage {usage}")
    streamed, finish, _ = complete("tiny", stream=True)
    check(streamed == base and finish == "length", "streamed completion == non-streamed (temperature 0)")
    alpha, _, _ = complete("alpha")
    beta, _, _ = complete("beta")
    check(complete("alpha", stream=True)[0] == alpha, "streamed adapter completion == non-streamed")
    check(alpha != base and beta != base and alpha != beta, "adapters change the output")
    text, _, _ = complete("tiny", prompt="hello world")
    check(isinstance(text, str), "text prompt")

    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    chat = client.chat.completions.create(model="alpha", messages=messages, max_tokens=6, temperature=0,
                                          extra_body={"ignore_eos": True})
    content = chat.choices[0].message.content
    check(chat.choices[0].message.role == "assistant" and chat.choices[0].finish_reason == "length"
          and chat.usage.completion_tokens == 6, f"chat completion: {chat.choices[0]}")
    pieces, usage = [], None
    for chunk in client.chat.completions.create(model="alpha", messages=messages, max_tokens=6, temperature=0,
                                                stream=True, stream_options={"include_usage": True},
                                                extra_body={"ignore_eos": True}):
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
        usage = chunk.usage or usage
    check("".join(pieces) == content, "streamed chat == non-streamed chat")
    check(usage is not None and usage.completion_tokens == 6, f"streamed chat usage: {usage}")

    # Log-probabilities (vLLM's shapes), echo, tokenize / detokenize, version.
    out = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=4, temperature=0, logprobs=3,
                                    extra_body={"ignore_eos": True})
    lp = out.choices[0].logprobs
    check(lp is not None and len(lp.tokens) == 4 and len(lp.token_logprobs) == 4 and len(lp.top_logprobs) == 4
          and len(lp.text_offset) == 4, f"completion logprobs: {lp}")
    check(all(t <= 0 for t in lp.token_logprobs) and all(len(top) >= 3 for top in lp.top_logprobs)
          and all(abs(max(top.values()) - t) < 1e-6 for top, t in zip(lp.top_logprobs, lp.token_logprobs)),
          "greedy: each token is its position's most likely, reported among the top 3")
    check(lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0, "text offsets run from 0")
    streamed_lp = []
    for chunk in client.completions.create(model="tiny", prompt=PROMPT, max_tokens=4, temperature=0, logprobs=3,
                                           stream=True, extra_body={"ignore_eos": True}):
        for choice in chunk.choices:
            if choice.logprobs:
                streamed_lp += choice.logprobs.token_logprobs
    check(len(streamed_lp) == 4 and all(abs(a - b) < 1e-6 for a, b in zip(streamed_lp, lp.token_logprobs)),
          f"streamed completion logprobs == non-streamed: {streamed_lp}")
    echo = client.completions.create(model="tiny", prompt="hello world", max_tokens=3, temperature=0, echo=True,
                                     logprobs=1, extra_body={"ignore_eos": True})
    e = echo.choices[0]
    check(e.text.startswith("hello world") and e.logprobs.token_logprobs[0] is None
          and len(e.logprobs.tokens) == echo.usage.prompt_tokens + 3, f"echo with logprobs: {e}")
    # The oracle: the echoed prompt's logprobs equal log_softmax of `lowrank logits` on the same ids.
    import torch
    from safetensors.torch import load_file, save_file
    save_file({"input_ids": torch.tensor([PROMPT], dtype=torch.int64)}, os.path.join(work, "ids.safetensors"))
    subprocess.run([lowrank, "logits", "--model", model_dir, "--input", os.path.join(work, "ids.safetensors"),
                    "--out", os.path.join(work, "logits.safetensors")], check=True, stdout=subprocess.DEVNULL)
    reference = load_file(os.path.join(work, "logits.safetensors"))["logits"][0].double().log_softmax(-1)
    scored = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=1, echo=True, logprobs=0)
    got = scored.choices[0].logprobs.token_logprobs[1:len(PROMPT)]
    want = [reference[j - 1, PROMPT[j]].item() for j in range(1, len(PROMPT))]
    check(max(abs(a - b) for a, b in zip(got, want)) < 1e-4, f"prompt logprobs == lowrank logits: {got} vs {want}")

    chat = client.chat.completions.create(model="alpha", messages=messages, max_tokens=3, temperature=0,
                                          logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
    content = chat.choices[0].logprobs.content
    check(len(content) == 3 and all(len(c.top_logprobs) == 2 and c.bytes == list(c.token.encode())
                                    and c.top_logprobs[0].logprob >= c.top_logprobs[1].logprob for c in content),
          f"chat logprobs: {content}")
    streamed_content = []
    for chunk in client.chat.completions.create(model="alpha", messages=messages, max_tokens=3, temperature=0,
                                                logprobs=True, top_logprobs=2, stream=True,
                                                extra_body={"ignore_eos": True}):
        for choice in chunk.choices:
            if choice.logprobs and choice.logprobs.content:
                streamed_content += choice.logprobs.content
    check([c.logprob for c in streamed_content] == [c.logprob for c in content], "streamed chat logprobs")
    try:
        client.chat.completions.create(model="tiny", messages=messages, max_tokens=2, logprobs=True,
                                       top_logprobs=21)
        check(False, "top_logprobs above 20 raises BadRequestError")
    except openai.BadRequestError as error:
        check(error.body.get("param") == "top_logprobs", f"top_logprobs above 20: {error.body}")
    try:
        client.completions.create(model="tiny", prompt=PROMPT, max_tokens=2, logit_bias={"5": 101})
        check(False, "a logit_bias above 100 raises BadRequestError")
    except openai.BadRequestError as error:
        check(error.body.get("param") == "logit_bias", f"logit_bias above 100: {error.body}")
    biased = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=3, temperature=0,
                                       logit_bias={"42": 100}, user="interop", extra_body={"ignore_eos": True})
    status, body = raw_post("/detokenize", {"tokens": [42, 42, 42]})
    check(status == 200 and json.loads(body)["prompt"] == biased.choices[0].text,
          f"logit_bias +100 forces token 42: {biased.choices[0].text!r} vs {body}")
    status, body = raw_post("/tokenize", {"prompt": "hello world", "return_token_strs": True})
    tokens = json.loads(body)
    check(status == 200 and tokens["count"] == len(tokens["tokens"]) == len(tokens["token_strs"])
          and tokens["max_model_len"] > 0, f"/tokenize: {body}")
    status, body = raw_post("/detokenize", {"tokens": tokens["tokens"]})
    check(status == 200 and json.loads(body)["prompt"].endswith("hello world"), f"/detokenize: {body}")
    with urllib.request.urlopen(url + "/version", timeout=10) as response:
        check("version" in json.loads(response.read()), "/version")

    # Runtime adapter load / unload (vLLM's API), from the adapter root only.
    shutil.copytree(adapter_src, os.path.join(root, "gamma"))
    status, body = raw_post("/v1/load_lora_adapter", {"lora_name": "gamma"})
    check(status == 200, f"load_lora_adapter gamma: {status} {body}")
    check("gamma" in {m.id for m in client.models.list()}, "gamma listed after loading")
    check(complete("gamma")[0] == alpha, "gamma (a copy of alpha) answers as alpha")
    status, body = raw_post("/v1/unload_lora_adapter", {"lora_name": "gamma"})
    check(status == 200, f"unload_lora_adapter gamma: {status} {body}")
    try:
        complete("gamma")
        check(False, "an unloaded adapter raises NotFoundError")
    except openai.NotFoundError:
        check(True, "an unloaded adapter raises NotFoundError")
    status, body = raw_post("/v1/load_lora_adapter", {"lora_name": "../model"})
    check(status == 400, f"a name out of the root is refused: {status}")
    status, body = raw_post("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": os.path.abspath(adapter_src)})
    check(status == 400, f"a path out of the root is refused: {status}")

    structured_output_checks(client)

    try:
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        check(False, "a wrong API key raises AuthenticationError")
    except openai.AuthenticationError:
        check(True, "a wrong API key raises AuthenticationError")
finally:
    server.send_signal(signal.SIGTERM)
    code = exit_status(server, 60)
    check(code == 0, f"SIGTERM: exit status {code}")



def check_drain_with_official_client():
    """SIGTERM while the official client streams and waits: each accepted call ends with a finish
    reason the client parses ("abort" for what the drain cut, vLLM's name), the stream ends
    normally, a call during the drain raises InternalServerError (503), and the exit status is 0."""
    drained, serving = serve_process.start(
        [lowrank, "serve", "--model", model_dir, "--port", "0", "--model-name", "tiny", "--pool-mb", "16",
         "--max-running", "1", "--max-batch-tokens", "4", "--drain-seconds", "0.5"])
    if serving is None:
        check(False, "drain: the second server did not start")
        return
    drain_url = serving.group(3)
    c = openai.OpenAI(base_url=drain_url + "/v1", api_key="none", max_retries=0)
    streamed = threading.Event()
    results = {}

    def stream_chat():
        finishes = {}
        for chunk in c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=180, n=8, stream=True,
                                               extra_body={"ignore_eos": True}):
            streamed.set()
            for choice in chunk.choices:
                if choice.finish_reason is not None:
                    finishes[choice.index] = choice.finish_reason
        results["stream"] = finishes

    def complete_plain():
        r = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=180, n=8,
                                 extra_body={"ignore_eos": True})
        results["plain"] = {choice.index: choice.finish_reason for choice in r.choices}

    threads = [threading.Thread(target=stream_chat), threading.Thread(target=complete_plain)]
    for t in threads:
        t.start()
    streamed.wait(timeout=30)
    time.sleep(0.05)
    drained.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    try:
        c.completions.create(model="tiny", prompt=PROMPT, max_tokens=2)
        check(False, "drain: a call during the drain raises InternalServerError")
    except openai.InternalServerError as e:
        check(e.status_code == 503 and e.response.headers.get("retry-after"),
              f"drain: a call during the drain gets 503 with Retry-After ({e.status_code})")
    except openai.APIConnectionError:
        check(False, "drain: the server closed before the drain ended")
    for t in threads:
        t.join(timeout=60)
    code = exit_status(drained, 30)
    check(code == 0, f"drain: exit status {code}")
    allowed = {"stop", "length", "abort"}
    for kind in ("stream", "plain"):
        finishes = results.get(kind, {})
        check(len(finishes) == 8 and set(finishes.values()) <= allowed,
              f"drain: every {kind} choice ends with a finish reason: {finishes}")
    every = list(results.get("stream", {}).values()) + list(results.get("plain", {}).values())
    check("abort" in every, "drain: the drain cut what still ran, as finish_reason 'abort'")


check_drain_with_official_client()

if failures:
    print("".join(log))
    print(f"{len(failures)} failure(s)")
    sys.exit(1)
print("all checks passed")
