"""lowrank serve against llama-server: one model, K LoRA adapters, concurrent clients, behind a gate.

Needs the opt-in llama.cpp build with its server (scripts/setup-llamacpp --server: llama-server,
and the vendored convert_hf_to_gguf.py, convert_lora_to_gguf.py and gguf-py) and lowrank's
build/bin/lowrank (LOWRANK_BUILD_DIR overrides build/).

Model: the trained quickstart model (--quickstart, runs/quickstart/model), converted to a GGUF F32
file with llamacpp.py's wrapper around convert_hf_to_gguf.py (our tokenizers need its two
workarounds). Adapters: --adapters (16) PEFT LoRA adapters written with peft on that model, rank
--rank (8), lora_alpha --alpha (16), on q_proj/k_proj/v_proj/o_proj; A random (N(0, 1/in)), B
random and non-zero, each module's B scaled so that its update (alpha/r) B A has a Frobenius norm
of --adapter-size (0.25) times its base weight's: small enough to keep the text fluent, large
enough that the adapters' greedy texts differ (at 0.1 most adapters left most gate prompts'
texts as the base model's). lowrank serves the PEFT directories (--adapters ROOT);
llama-server loads all of them at start, each converted by the vendored convert_lora_to_gguf.py
(--outtype f32), with --lora FILE ... --lora-init-without-apply.

Scale semantics: PEFT applies (lora_alpha / r) B A. convert_lora_to_gguf.py stores lora_alpha as
adapter.lora.alpha, and llama.cpp applies scale * alpha / rank B A with the request's scale
(`"lora": [{"id": i, "scale": 1.0}]`): the same update at scale 1. Adapters a request does not
list run at scale 0, which llama.cpp leaves out of the graph; a base-model request sends
`"lora": [{"id": 0, "scale": 0}]`, because a request with no "lora" runs every adapter loaded
with --lora at its start-up scale, 1 (--lora-init-without-apply keeps them only out of the
server's first context).

Workload (the same requests to both servers, token ids only, neither server tokenises):
--requests (64) requests, prompts of --prompt-min..--prompt-max (32..64) ids taken from the
quickstart validation split (random ids when it is absent), --new-tokens (64) new tokens, greedy
(temperature 0), eos ignored, no stop; --clients (16) client threads in a closed loop, one
keep-alive connection each. K = the number of distinct adapters in the workload: request i uses
adapter i mod K; K = 0 is the base model only. Throughput = completion tokens of all requests /
wall time from the first request sent to the last answer. lowrank: `POST /v1/completions` with
`"prompt": [ids]`, `"model": NAME`, `"ignore_eos": true`. llama-server: `POST /completion` with
`"prompt": [ids]`, `"n_predict"`, `"ignore_eos": true`, `"cache_prompt": false` (and
`--cache-ram 0`: no prompt reuse across requests, which lowrank does not do either), and the
request's "lora" (for the base model: adapter 0 at scale 0, see above). (Both servers' eos rule
differs: llama.cpp's ignore_eos bans the eos tokens, lowrank's, as vLLM's, decodes past them; an
eos where the gate looks would make it fail.) Servers: `lowrank --threads T serve --model DIR
--adapters ROOT` (its defaults: up to 64 running requests, 16 HTTP threads) and `llama-server -t
T -tb T -np 16 -c 16*C -fa off -ctk f32 -ctv f32` (16 slots of the model's context C, 128; an f32
KV cache and no flash attention, as lowrank's float32 path).

Per thread count (--threads, 1 and 2) both servers are started side by side (an idle server
sleeps: the CPU time each one used during the other's runs is recorded), then:
  gate     for the base model and each adapter, --gate-prompts (4) prompts one request at a time
           on each server: the greedy texts must be identical and both must report --new-tokens
           tokens; every adapter must change the text of at least one prompt (else it was not
           applied). A throughput row is measured and printed only if the base model and every
           adapter its workload uses passed.
  warm-up  one untimed run of the workload per server
  timing   --repeats passes; each pass runs every K on both servers, the server order alternating
           from pass to pass; a row's tokens/s is the median over passes.
Ratios are lowrank / llama-server (above 1: lowrank is faster). Targets (issue 26):
lowrank >= 1.0x llama-server at K = 0 and >= 1.5x at K = 16 at every thread count, and lowrank
at 2 threads >= 1.3x itself at 1 thread (at every K).

  scripts/setup-llamacpp --server
  .venv-peers/bin/python bench/peers/serve_llamacpp.py --out bench/peers/results/serve-llamacpp.json
        [--threads 1,2] [--ks 0,1,4,16] [--repeats 5] [--work DIR (keep models and adapters)]
        [--note TEXT]
  .venv-peers/bin/python bench/peers/serve_llamacpp.py --table bench/peers/results/serve-llamacpp.json
        (the markdown of docs/benchmarks.md, from a results file)
"""
import argparse
import contextlib
import datetime
import http.client
import json
import math
import os
import pathlib
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import llamacpp  # bench/peers/llamacpp.py: the converter wrapper, tools, machine information

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
BASE_NAME = "base"
SLOTS = 16  # llama-server's --parallel: one slot per client
START_TIMEOUT = 120.0
REQUEST_TIMEOUT = 600.0


def fail(message):
    sys.exit(f"serve_llamacpp.py: {message}")


def adapter_name(i):
    return f"a{i:02d}"


# ---------------------------------------------------------------------------------------------
# Models and adapters.

def up_to_date(stamp, key):
    """Whether `stamp` (a JSON file beside cached outputs) records `key`: what they were made from."""
    try:
        return json.loads(stamp.read_text()) == key
    except (OSError, ValueError):
        return False


def source_key(model_dir):
    weights = sorted(model_dir.glob("*.safetensors"))
    return {"model": str(model_dir.resolve()),
            "weights": [[p.name, p.stat().st_size, p.stat().st_mtime] for p in weights]}


def write_adapters(args, model_dir, root):
    """--adapters PEFT LoRA adapters of model_dir under root/aNN (kept when written with the same settings;
    root holds nothing else, as lowrank serve serves every adapter directory in it)."""
    names = [adapter_name(i) for i in range(args.adapters)]
    key = {**source_key(model_dir), "target_modules": TARGET_MODULES,
           **{k: getattr(args, k) for k in ("adapters", "rank", "alpha", "adapter_size", "seed")}}
    stamp = root.parent / "adapters.json"
    if up_to_date(stamp, key):
        return names
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    import torch
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import LlamaForCausalLM

    torch.manual_seed(args.seed)
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0,
                                                  target_modules=TARGET_MODULES))
    layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
    if len(layers) != len(TARGET_MODULES) * model.config.num_hidden_layers:
        fail(f"peft wrapped {len(layers)} modules of {model_dir}, expected {TARGET_MODULES} in every layer")
    generator = torch.Generator().manual_seed(args.seed)
    for name in names:
        with torch.no_grad():
            for layer in layers:
                a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
                a.copy_(torch.randn(a.shape, generator=generator) / math.sqrt(a.shape[1]))
                b.copy_(torch.randn(b.shape, generator=generator))
                delta = layer.scaling["default"] * (b @ a)
                b.mul_(args.adapter_size * layer.get_base_layer().weight.norm() / delta.norm())
        peft_model.save_pretrained(str(root / name))
    stamp.write_text(json.dumps(key))
    return names


def gguf_files(args, tools, model_dir, work, names):
    """The base model as GGUF F32 (llamacpp.py's wrapper) and each adapter as a GGUF LoRA (F32)."""
    llama_dir = tools["src"]
    model, stamp = work / "model-F32.gguf", work / "model-F32.json"
    if not model.exists() or not up_to_date(stamp, source_key(model_dir)):
        pre = llamacpp.pre_tokenizer_name(model_dir / "tokenizer.json", args.pre_tokenizer)
        tmp = model.with_name(model.name + ".tmp")
        llamacpp.run([sys.executable, llamacpp.__file__, "--convert-child", llama_dir, model_dir, tmp, pre],
                     what="convert_hf_to_gguf.py")
        os.replace(tmp, model)
        stamp.write_text(json.dumps(source_key(model_dir)))
    loras = []
    for name in names:
        out, source = work / "gguf-lora" / f"{name}.gguf", work / "adapters" / name / "adapter_model.safetensors"
        if not out.exists() or out.stat().st_mtime < source.stat().st_mtime:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp")
            llamacpp.run([sys.executable, llama_dir / "convert_lora_to_gguf.py", "--base", model_dir, "--outtype",
                          "f32", "--outfile", tmp, work / "adapters" / name], what="convert_lora_to_gguf.py")
            os.replace(tmp, out)
        loras.append(out)
    return model, loras


def prompt_pool(args, vocab, count):
    """count prompts of --prompt-min..--prompt-max ids: consecutive windows of the quickstart
    validation split (random ids when it is absent); the lengths are drawn with --seed."""
    import numpy as np
    rng = np.random.default_rng(args.seed)
    lengths = rng.integers(args.prompt_min, args.prompt_max + 1, size=count)
    validation = pathlib.Path(args.quickstart) / ".." / "dataset" / "validation.bin"
    if validation.exists():
        tokens = np.fromfile(validation, dtype=np.uint16).astype(np.int64)
        if tokens.size >= int(lengths.sum()) and tokens.max() < vocab:
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            return [[int(t) for t in tokens[s:s + n]] for s, n in zip(starts, lengths)], "quickstart validation split"
    return [[int(t) for t in rng.integers(0, vocab, size=n)] for n in lengths], f"random ids (seed {args.seed})"


# ---------------------------------------------------------------------------------------------
# Servers.

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads), from /proc."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listen_overflows():
    """The kernel's count of connections dropped because a listen queue was full (all sockets)."""
    try:
        lines = [line.split() for line in pathlib.Path("/proc/net/netstat").read_text().splitlines()
                 if line.startswith("TcpExt:")]
        return int(dict(zip(lines[0], lines[1]))["ListenOverflows"])
    except (OSError, IndexError, KeyError, ValueError):
        return 0


def die_with_parent():
    """In the child before exec: SIGTERM when this script dies, even by SIGKILL (Linux prctl)."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Server:
    """A server in a process group of its own, its output in a log file; stopped by stop() (SIGTERM to
    the group, SIGKILL after 10 s) and, should this script be killed, by the kernel."""

    def __init__(self, label, cmd, log, port=None, env=None):
        self.label, self.cmd, self.log, self.port = label, [str(c) for c in cmd], log, port
        with open(log, "w") as out:
            self.process = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True, preexec_fn=die_with_parent)

    def log_tail(self, lines=20):
        try:
            return "\n".join(pathlib.Path(self.log).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, port_pattern=None):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                fail(f"{self.label} exited with status {self.process.returncode} while starting: "
                     f"{' '.join(self.cmd)}\n{self.log_tail()}")
            if self.port is None and port_pattern:
                match = re.search(port_pattern, pathlib.Path(self.log).read_text(errors="replace"))
                if match:
                    self.port = int(match.group(1))
            if self.port is not None:
                try:
                    status, _ = request(self.port, "GET", "/health", None, timeout=5)
                    if status == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.2)
        fail(f"{self.label} did not answer /health within {START_TIMEOUT:.0f} s: {' '.join(self.cmd)}\n"
             f"{self.log_tail()}")

    def stop(self):
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def request(port, method, path, body, timeout=REQUEST_TIMEOUT, connection=None):
    """One HTTP request; returns (status, parsed JSON or text). Reuses `connection` when given."""
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        response = conn.getresponse()
        text = response.read().decode(errors="replace")
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text
    finally:
        if connection is None:
            conn.close()


class LowrankApi:
    label = "lowrank"

    def __init__(self, server, new_tokens):
        self.server, self.new_tokens = server, new_tokens

    def body(self, prompt, adapter):
        return ("/v1/completions", {"model": BASE_NAME if adapter is None else adapter_name(adapter),
                                    "prompt": prompt, "max_tokens": self.new_tokens, "temperature": 0,
                                    "ignore_eos": True})

    @staticmethod
    def parse(answer):
        return answer["choices"][0]["text"], answer["usage"]["completion_tokens"]


class LlamaApi:
    label = "llama-server"

    def __init__(self, server, new_tokens, adapters):
        self.server, self.new_tokens, self.adapters = server, new_tokens, adapters

    def body(self, prompt, adapter):
        body = {"prompt": prompt, "n_predict": self.new_tokens, "temperature": 0, "ignore_eos": True,
                "cache_prompt": False}
        if self.adapters:
            # Always an explicit list: without one, the request gets the server's defaults, which are
            # every --lora adapter at scale 1 (--lora-init-without-apply only keeps them out of the
            # context at start-up). Adapters not listed run at scale 0.
            body["lora"] = [{"id": 0 if adapter is None else adapter, "scale": 0.0 if adapter is None else 1.0}]
        return "/completion", body

    @staticmethod
    def parse(answer):
        return answer["content"], answer["tokens_predicted"]


def start_servers(args, tools, stack, threads, model_dir, context, adapter_root, model_gguf, loras, logs):
    env = dict(os.environ, LOWRANK_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    ours = Server("lowrank serve", [llamacpp.BUILD / "lowrank", "--threads", threads, "serve", "--model", model_dir,
                                    "--adapters", adapter_root, "--model-name", BASE_NAME, "--port", 0],
                  logs / f"lowrank-{threads}t.log", env=env)
    stack.callback(ours.stop)
    port = free_port()
    cmd = [tools["bin"] / "llama-server", "-m", model_gguf, "--host", "127.0.0.1", "--port", port, "-t", threads,
           "-tb", threads, "-np", SLOTS, "-c", SLOTS * context, "-fa", "off", "-ctk", "f32", "-ctv", "f32",
           "--cache-ram", 0, "--lora-init-without-apply"]
    for lora in loras:
        cmd += ["--lora", lora]
    theirs = Server("llama-server", cmd, logs / f"llama-server-{threads}t.log", port=port)
    stack.callback(theirs.stop)
    ours.wait_ready(r"serving \S+ \(\+\d+ adapters\) on http://[^:]+:(\d+)")
    theirs.wait_ready()
    return LowrankApi(ours, args.new_tokens), LlamaApi(theirs, args.new_tokens, len(loras))


# ---------------------------------------------------------------------------------------------
# Gate and workload.

def call(api, prompt, adapter, connection=None):
    path, body = api.body(prompt, adapter)
    status, answer = request(api.server.port, "POST", path, body, connection=connection)
    if status != 200 or not isinstance(answer, dict):
        fail(f"{api.label}: {path} answered {status}: {str(answer)[:500]}\n{api.server.log_tail()}")
    return api.parse(answer)


def gate(apis, prompts, adapters, new_tokens):
    """Greedy texts of the base model (None) and every adapter on each prompt, one request at a time."""
    models = [None] + list(range(adapters))
    texts = {api.label: {} for api in apis}
    checks = []
    for m in models:
        for p, prompt in enumerate(prompts):
            got = {api.label: call(api, prompt, m) for api in apis}
            (ours, n_ours), (theirs, n_theirs) = got["lowrank"], got["llama-server"]
            for api in apis:
                texts[api.label][(m, p)] = got[api.label][0]
            checks.append({"model": BASE_NAME if m is None else adapter_name(m), "prompt": p,
                           "identical": ours == theirs and n_ours == n_theirs == new_tokens,
                           "tokens": [n_ours, n_theirs],
                           **({} if ours == theirs else {"lowrank": ours, "llama_server": theirs})})
    per_model = {}
    for m in models:
        name = BASE_NAME if m is None else adapter_name(m)
        rows = [c for c in checks if c["model"] == name]
        changes = m is None or any(texts["lowrank"][(m, p)] != texts["lowrank"][(None, p)] for p in range(len(prompts)))
        per_model[name] = {"identical": sum(c["identical"] for c in rows), "checks": len(rows),
                           "changes_the_base_text": changes,
                           "passed": changes and all(c["identical"] for c in rows)}
    distinct = [len({texts["lowrank"][(m, p)] for m in models}) for p in range(len(prompts))]
    return {"checks": len(checks), "identical": sum(c["identical"] for c in checks),
            "distinct_texts_per_prompt": distinct, "models": per_model,
            "failures": [c for c in checks if not c["identical"]][:8]}


def workload(args, prompts, k):
    """The --requests requests: (prompt, adapter or None)."""
    return [(prompts[i % len(prompts)], None if k == 0 else i % k) for i in range(args.requests)]


def run_workload(api, requests, clients, peer, new_tokens):
    """Sends requests from `clients` threads (closed loop, one keep-alive connection each); returns
    tokens/s and what else was measured."""
    lock = threading.Lock()
    next_index = [0]
    tokens, latencies, errors = [0] * len(requests), [0.0] * len(requests), []
    ready = threading.Barrier(clients + 1)
    connect_lock = threading.Lock()
    retries = [0]

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", api.server.port, timeout=REQUEST_TIMEOUT)
        try:
            # Connect before the clock starts, one client at a time, and wait until the server has
            # accepted the connection (it answers /health on it): lowrank serve's HTTP library listens
            # with a backlog of 5, and 16 simultaneous connects overflow it (the kernel drops the
            # handshakes, which costs a retransmission of a second or more, or resets them).
            with connect_lock:
                status, _ = request(api.server.port, "GET", "/health", None, connection=conn)
            if status != 200:
                raise ConnectionError(f"/health answered {status}")
            ready.wait()
            while True:
                with lock:
                    i = next_index[0]
                    next_index[0] += 1
                if i >= len(requests):
                    return
                t0 = time.perf_counter()
                for attempt in range(3):
                    try:
                        _, tokens[i] = call(api, *requests[i], connection=conn)
                        break
                    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                        # No answer came: the server never took the request (a keep-alive connection it
                        # had closed, or a reset connect). Reconnect and send it again; counted.
                        conn.close()
                        with lock:
                            retries[0] += 1
                        if attempt == 2:
                            raise
                latencies[i] = time.perf_counter() - t0
        except (SystemExit, Exception) as e:  # keep the message for the main thread
            errors.append(str(e) if isinstance(e, SystemExit) else f"{api.label}: {e!r}")
            with contextlib.suppress(threading.BrokenBarrierError):
                ready.abort()
        finally:
            conn.close()

    pool = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in pool:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        ready.wait()
    cpu0, peer0 = cpu_seconds(api.server.process.pid), cpu_seconds(peer.server.process.pid)
    overflows0 = listen_overflows()
    start = time.perf_counter()
    for t in pool:
        t.join()
    wall = time.perf_counter() - start
    cpu1, peer1 = cpu_seconds(api.server.process.pid), cpu_seconds(peer.server.process.pid)
    if errors:
        fail(errors[0])
    short = sum(1 for n in tokens if n != new_tokens)
    if short:
        fail(f"{api.label}: {short} of {len(requests)} requests returned other than {new_tokens} tokens")
    return {"tokens_per_second": sum(tokens) / wall, "seconds": wall, "tokens": sum(tokens),
            "latency_median_seconds": statistics.median(latencies), "server_cpu_seconds": cpu1 - cpu0,
            "idle_peer_cpu_seconds": peer1 - peer0, "connection_retries": retries[0],
            "listen_overflows": listen_overflows() - overflows0}


# ---------------------------------------------------------------------------------------------
# The run.

def find_tools(args):
    tools = llamacpp.find_tools(args)
    if not (tools["bin"] / "llama-server").exists():
        fail(f"{tools['bin'] / 'llama-server'} is missing: run scripts/setup-llamacpp --server")
    if not (tools["src"] / "convert_lora_to_gguf.py").exists():
        fail(f"{tools['src'] / 'convert_lora_to_gguf.py'} is missing: a damaged llama.cpp tree? "
             f"Remove it and run scripts/setup-llamacpp --server")
    return tools


def machine(tools):
    info = llamacpp.machine_info(tools)
    import peft
    info["peer_peft"] = peft.__version__
    # lowrank --version names no commit: record the checkout holding the binaries, at run time, and when
    # the server binary was written (the checkout may have moved on since the build).
    info["lowrank_binaries_checkout"] = subprocess.run(
        ["git", "-C", llamacpp.BUILD, "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    info["lowrank_binary_written"] = datetime.datetime.fromtimestamp(
        (llamacpp.BUILD / "lowrank").stat().st_mtime, datetime.timezone.utc).isoformat(timespec="seconds")
    return info


def measure(args):
    tools = find_tools(args)
    model_dir = pathlib.Path(args.quickstart)
    if not (model_dir / "config.json").exists():
        fail(f"--quickstart: {model_dir / 'config.json'} does not exist (run scripts/quickstart)")
    config = json.loads((model_dir / "config.json").read_text())
    context = config.get("max_position_embeddings", 0)
    if args.prompt_max + args.new_tokens > context:
        fail(f"--prompt-max {args.prompt_max} + --new-tokens {args.new_tokens} exceed the context of "
             f"{model_dir / 'config.json'} (max_position_embeddings {context})")
    work = pathlib.Path(args.work) if args.work else pathlib.Path(tempfile.mkdtemp(prefix="lowrank-serve-llamacpp-"))
    results = {"note": args.note, "date": datetime.date.today().isoformat(),
               "settings": {k: getattr(args, k) for k in (
                   "threads", "ks", "requests", "clients", "prompt_min", "prompt_max", "new_tokens", "adapters",
                   "rank", "alpha", "adapter_size", "gate_prompts", "repeats", "seed")},
               "machine": machine(tools), "model": {k: config[k] for k in (
                   "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")},
               "threads": {}}
    results["settings"]["target_modules"] = TARGET_MODULES
    try:
        work.mkdir(parents=True, exist_ok=True)
        print("writing the PEFT adapters", flush=True)
        names = write_adapters(args, model_dir, work / "adapters")
        print("converting the model and the adapters to GGUF", flush=True)
        model_gguf, loras = gguf_files(args, tools, model_dir, work, names)
        prompts, source = prompt_pool(args, config["vocab_size"], args.gate_prompts + args.requests)
        gate_prompts, load_prompts = prompts[:args.gate_prompts], prompts[args.gate_prompts:]
        results["prompts"] = source
        logs = work / "logs"
        logs.mkdir(exist_ok=True)
        for threads in args.threads:
            entry = results["threads"][str(threads)] = {}
            with contextlib.ExitStack() as stack:
                print(f"{threads} thread(s): starting both servers", flush=True)
                apis = start_servers(args, tools, stack, threads, model_dir, context, work / "adapters",
                                     model_gguf, loras, logs)
                entry["commands"] = {api.label: " ".join(pathlib.Path(c).name if os.sep in c else c
                                                         for c in api.server.cmd) for api in apis}
                print(f"{threads} thread(s): gate", flush=True)
                g = entry["gate"] = gate(apis, gate_prompts, args.adapters, args.new_tokens)
                print(f"  {g['identical']}/{g['checks']} identical", flush=True)
                passed = {k: g["models"][BASE_NAME]["passed"] and all(
                    g["models"][adapter_name(i)]["passed"] for i in range(k)) for k in args.ks}
                runs = entry["runs"] = {str(k): {"gate_passed": passed[k]} for k in args.ks}
                timed = [k for k in args.ks if passed[k]]
                if timed:
                    for api, peer in (apis, apis[::-1]):
                        run_workload(api, workload(args, load_prompts, max(timed)), args.clients, peer,
                                     args.new_tokens)  # warm-up
                samples = {(k, api.label): [] for k in timed for api in apis}
                for r in range(args.repeats):
                    for k in timed:
                        order = apis if r % 2 == 0 else apis[::-1]
                        for api, peer in (order, order[::-1]):
                            s = run_workload(api, workload(args, load_prompts, k), args.clients, peer,
                                             args.new_tokens)
                            samples[(k, api.label)].append(s)
                            print(f"  pass {r + 1}, K = {k}: {api.label} {s['tokens_per_second']:.0f} tok/s",
                                  flush=True)
                for k in timed:
                    row = runs[str(k)]
                    for api in apis:
                        ss = samples[(k, api.label)]
                        row[api.label] = {"tokens_per_second": statistics.median(s["tokens_per_second"] for s in ss),
                                          "samples": ss}
                    row["ratio"] = row["lowrank"]["tokens_per_second"] / row["llama-server"]["tokens_per_second"]
            if args.out:
                llamacpp.write_json_atomically(args.out, results)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return results


# ---------------------------------------------------------------------------------------------
# Tables.

def targets(results):
    threads = [str(t) for t in results["settings"]["threads"]]
    ks = results["settings"]["ks"]

    def ratio(t, k):
        return results["threads"].get(t, {}).get("runs", {}).get(str(k), {}).get("ratio")

    out = []
    for k, need in ((0, 1.0), (max(ks), 1.5)):
        if k not in ks:
            continue
        values = [(t, ratio(t, k)) for t in threads]
        measured = [(t, v) for t, v in values if v is not None]
        verdict = ("not measured" if len(measured) < len(values) else
                   "met" if all(v >= need for _, v in measured) else "**missed**")
        out.append(f"lowrank ≥ {need:.1f}× llama-server at K = {k}: {verdict} ("
                   + ", ".join(f"{v:.2f}× at {t} t" if v is not None else f"– at {t} t" for t, v in values) + ")")
    if len(threads) > 1:
        one, more = threads[0], threads[-1]
        scaling = []
        for k in ks:
            runs = [results["threads"].get(t, {}).get("runs", {}).get(str(k), {}) for t in (one, more)]
            if all("lowrank" in r for r in runs):
                scaling.append((runs[1]["lowrank"]["tokens_per_second"] / runs[0]["lowrank"]["tokens_per_second"], k))
        verdict = ("not measured" if len(scaling) < len(ks) else
                   "met" if all(v >= 1.3 for v, _ in scaling) else "**missed**")
        out.append(f"lowrank at {more} threads ≥ 1.3× itself at {one} (every K): {verdict} ("
                   + ", ".join(f"{v:.2f}× at K = {k}" for v, k in scaling) + ")")
    return out


def markdown(results):
    m, s, c = results["machine"], results["settings"], results["model"]
    b = m["llama_cpp_build"]
    lines = []
    if results.get("note"):
        lines += [f"*{results['note']}*", ""]
    lines += [f"Machine: {m['cpu']} ({m['cpus']} CPUs), {results['date']}; {m['lowrank']}"
              + (f" (binary of {m['lowrank_binary_written'][:16].replace('T', ' ')} UTC, in a checkout then at "
                 f"{m['lowrank_binaries_checkout']})" if m.get("lowrank_binaries_checkout") else "")
              + f"; llama.cpp {b['llama_cpp_commit']} (llama-cpp-python {b['llama_cpp_python']} sdist; "
              f"{' '.join(f for f in b['cmake_flags'] if 'NATIVE' in f or 'BUILD_TYPE' in f or 'SHARED' in f)}, "
              f"AMX {b.get('amx', 'unknown')}; {b['compiler']}); peft {m.get('peer_peft')}, torch {m['peer_torch']}.",
              "",
              f"Model: quickstart (h{c['hidden_size']}, {c['num_hidden_layers']} L, V {c['vocab_size']}), float32 / "
              f"GGUF F32; {s['adapters']} LoRA adapters, r {s['rank']}, alpha {s['alpha']:g}, "
              f"{'/'.join(m_.split('_')[0] for m_ in s['target_modules'])}. Workload: {s['requests']} requests, "
              f"{s['clients']} concurrent clients, prompts of {s['prompt_min']}–{s['prompt_max']} token ids "
              f"({results.get('prompts', '')}), {s['new_tokens']} new tokens, greedy; K distinct adapters "
              f"(request i uses adapter i mod K; K = 0: the base model). Tokens/s: median of {s['repeats']} "
              f"passes. Ratio: lowrank / llama-server (above 1: lowrank is faster).", ""]
    for t, entry in results["threads"].items():
        g = entry.get("gate")
        if g:
            failed = [n for n, v in g["models"].items() if not v["passed"]]
            lines.append(f"Gate at {t} thread(s): {g['identical']}/{g['checks']} greedy texts identical "
                         f"({len(g['models'])} models × {s['gate_prompts']} prompts); distinct texts per prompt "
                         f"over the {len(g['models'])} models: {', '.join(map(str, g['distinct_texts_per_prompt']))}"
                         + (f"; **failed**: {', '.join(failed)}" if failed else "; passed") + ".")
    lines += ["", "| threads | K | lowrank tok/s | llama-server tok/s | ratio | lowrank vs its K = 0 "
              "| llama-server vs its K = 0 | CPU cores busy, lowrank / llama-server |",
              "|---|---|---|---|---|---|---|---|"]
    for t, entry in results["threads"].items():
        runs = entry.get("runs", {})
        base = runs.get("0", {})
        for k in s["ks"]:
            row = runs.get(str(k), {})
            if "ratio" not in row:
                why = "gate failed" if not row.get("gate_passed") else "not measured"
                lines.append(f"| {t} | {k} | {why} | | | | | |")
                continue

            def rel(engine):
                if k == 0 or engine not in base:
                    return "–"
                return f"{row[engine]['tokens_per_second'] / base[engine]['tokens_per_second']:.2f}"
            def busy(engine):  # server CPU seconds per wall second, median over the passes
                return statistics.median(x["server_cpu_seconds"] / x["seconds"] for x in row[engine]["samples"])
            lines.append(f"| {t} | {k} | {row['lowrank']['tokens_per_second']:.0f} "
                         f"| {row['llama-server']['tokens_per_second']:.0f} | {row['ratio']:.2f} "
                         f"| {rel('lowrank')} | {rel('llama-server')} "
                         f"| {busy('lowrank'):.2f} / {busy('llama-server'):.2f} |")
    lines += ["", "Issue 26's serving targets:"]
    lines += [f"- {x}" for x in targets(results)]
    return "\n".join(lines)


def parse_list(flag, text):
    try:
        values = [int(x) for x in text.split(",") if x]
    except ValueError:
        fail(f"{flag}: {text!r} is not a comma-separated list of integers")
    if not values or any(v < 0 for v in values):
        fail(f"{flag}: {text!r} must list non-negative integers")
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2", help="server thread counts (default 1,2)")
    parser.add_argument("--ks", default="0,1,4,16", help="distinct adapters in the workload (default 0,1,4,16)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--prompt-min", type=int, default=32)
    parser.add_argument("--prompt-max", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--adapters", type=int, default=16, help="adapters written and served")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--adapter-size", type=float, default=0.25,
                        help="each update's Frobenius norm relative to its base weight's")
    parser.add_argument("--gate-prompts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pre-tokenizer", choices=sorted(llamacpp.PRE_TOKENIZERS),
                        help="the model's pre-tokenizer preset (default: read from tokenizer.json)")
    parser.add_argument("--quickstart", default=str(llamacpp.ROOT / "runs" / "quickstart" / "model"))
    parser.add_argument("--llamacpp", help="the scripts/setup-llamacpp directory (default: its own default)")
    parser.add_argument("--work", help="keep the converted model, the adapters and the server logs here "
                                       "(default: a temporary directory)")
    parser.add_argument("--out", help="results JSON file (written after every thread count)")
    parser.add_argument("--note", default="", help="a note stored in the results (e.g. the machine's state)")
    parser.add_argument("--table", metavar="RESULTS", help="print the markdown of a results file and exit")
    args = parser.parse_args()
    if args.table:
        path = pathlib.Path(args.table)
        if not path.exists():
            fail(f"--table: {path} does not exist")
        try:
            print(markdown(json.loads(path.read_text())))
        except (ValueError, KeyError) as e:
            fail(f"--table: {path} is not a results file of this script ({e!r})")
        return
    args.threads = parse_list("--threads", args.threads)
    args.ks = parse_list("--ks", args.ks)
    if 0 in args.threads:
        fail("--threads: thread counts must be at least 1")
    if max(args.ks) > args.adapters:
        fail(f"--ks: K = {max(args.ks)} needs at least that many adapters (--adapters {args.adapters})")
    for flag, value in (("--requests", args.requests), ("--clients", args.clients), ("--new-tokens", args.new_tokens),
                        ("--rank", args.rank), ("--gate-prompts", args.gate_prompts), ("--repeats", args.repeats),
                        ("--prompt-min", args.prompt_min)):
        if value < 1:
            fail(f"{flag} must be at least 1, got {value}")
    if args.prompt_max < args.prompt_min:
        fail(f"--prompt-max {args.prompt_max} is below --prompt-min {args.prompt_min}")
    if args.clients > SLOTS:
        fail(f"--clients {args.clients}: llama-server is started with {SLOTS} slots")
    if args.alpha <= 0 or args.adapter_size <= 0:
        fail("--alpha and --adapter-size must be positive")
    # SIGTERM and SIGHUP end the run through the same path as an error: the servers are stopped.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(f"serve_llamacpp.py: stopped by signal {signum}"))
    results = measure(args)
    print(markdown(results))
    if args.out:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
