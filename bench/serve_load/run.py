"""The serving load test: `lowrank serve` under locust (or openai_load.py), with adapter churn.

Setup (unless --url points at a running server or proxy): in a temporary directory, the bundled
tiny Llama of the test fixtures (tests/fixtures/hf/llama-tiny, hidden 64, 2 layers, vocab 512,
random weights) with the byte-level BPE tokenizer, and three adapters under the adapter root, all
the fixture LoRA with lora_alpha x1, x2, x4 (alpha, beta, gamma), so each answers differently.
`lowrank serve --port 0` is started on loopback and is ready when it prints its serving line.

During the run:
  - the load: locust headless (`-u USERS -r SPAWN_RATE --run-time T`, --csv beside the results),
    each user the official openai client (locustfile.py), or with --generator openai the threaded
    generator (openai_load.py); bounded by time and by --max-requests;
  - adapter churn: two more adapters (churn-0, churn-1) written into the adapter root after the
    start are loaded, asked one completion and unloaded again through vLLM's
    /v1/load_lora_adapter and /v1/unload_lora_adapter, every --churn-interval seconds, on every
    server (--admin-url; one each replica behind a proxy). The load never asks for them, so
    its errors stay the server's own;
  - the server's resident memory (VmRSS of /proc/PID/status, every PID of --pid) every 250 ms.

Results (JSON, default bench/results/serve_load_short.json or _soak.json): throughput (requests/s,
generated tokens/s), time to first token and inter-token latency p50/p99 (ms, streamed requests,
client clock, per text chunk), time per output token (a streamed request's time after its first
token over its remaining tokens, vLLM's TPOT), whole-request latency p50/p99, errors (must be 0), the churn's loads,
unloads and failures, and RSS: first-quartile and last-quartile means of the samples and the
verdict "flat" (last quartile <= first quartile x 1.10). Exits 1 on any error, a churn failure, a
failed generator, or memory that is not flat.

  bench/serve_load/run                 # short: 30 s, 8 users (under a minute in all)
  bench/serve_load/run --soak          # 10 minutes, 16 users
  bench/serve_load/run --url http://127.0.0.1:8080 --admin-url URL1 --admin-url URL2 \
      --pid PID1 --pid PID2 --adapter-root ROOT --models tiny,alpha,beta,gamma   # an existing deployment
  bench/serve_load/run --prepare DIR   # only write DIR/model and DIR/adapters (used by deploy/run-replicas)
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import serve_process  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "hf")
ADAPTER_SCALES = {"alpha": 1, "beta": 2, "gamma": 4}
CHURN_ADAPTERS = ["churn-0", "churn-1"]


def write_adapter(root, name, alpha_scale):
    """A copy of the fixture LoRA under root/name with lora_alpha scaled (a different adapter)."""
    dest = os.path.join(root, name)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(os.path.join(FIXTURES, "llama-tiny", "adapter-lora"), dest)
    config_path = os.path.join(dest, "adapter_config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["lora_alpha"] = config["lora_alpha"] * alpha_scale
    with open(config_path, "w") as f:
        json.dump(config, f)


def prepare(work):
    """Writes work/model (the tiny Llama with its tokenizer) and work/adapters (alpha, beta, gamma)."""
    model = os.path.join(work, "model")
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(os.path.join(FIXTURES, "llama-tiny", "model"), model)
    shutil.copy(os.path.join(FIXTURES, "bpe-gpt2style", "tokenizer.json"), os.path.join(model, "tokenizer.json"))
    adapters = os.path.join(work, "adapters")
    os.makedirs(adapters, exist_ok=True)
    for name, scale in ADAPTER_SCALES.items():
        write_adapter(adapters, name, scale)
    return model, adapters


def start_server(lowrank, model, adapters, log_path, extra):
    """Starts `lowrank serve` on a free loopback port; returns (process, url) once it serves."""
    log = open(log_path, "w")
    server, serving = serve_process.start([lowrank, "serve", "--model", model, "--adapters", adapters, "--port", "0",
                                           "--model-name", "tiny", *extra], sink=log)
    if serving is None:
        log.close()
        sys.exit(f"serve_load: the server did not start; see {log_path}")
    return server, serving.group(3)


def post(url, path, body, api_key, timeout=60):
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {api_key or 'none'}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


class Churn(threading.Thread):
    """Loads, uses and unloads the churn adapters on every server until stopped."""

    def __init__(self, admin_urls, adapter_root, interval, api_key):
        super().__init__(daemon=True)
        self.admin_urls, self.interval, self.api_key = admin_urls, interval, api_key
        self.loads = self.unloads = self.completions = 0
        self.failures = []
        self.stop = threading.Event()
        for i, name in enumerate(CHURN_ADAPTERS):
            write_adapter(adapter_root, name, 3 + i)

    def fail(self, what):
        if len(self.failures) < 20:
            self.failures.append(what)

    def run(self):
        # Adapters found under the root at start are registered: begin from "unloaded" (404: fine).
        for url in self.admin_urls:
            for name in CHURN_ADAPTERS:
                post(url, "/v1/unload_lora_adapter", {"lora_name": name}, self.api_key)
        cycle = 0
        while not self.stop.wait(self.interval):
            name = CHURN_ADAPTERS[cycle % len(CHURN_ADAPTERS)]
            cycle += 1
            for url in self.admin_urls:
                status, body = post(url, "/v1/load_lora_adapter", {"lora_name": name}, self.api_key)
                if status != 200:
                    self.fail(f"load {name} at {url}: {status} {body[:200]}")
                    continue
                self.loads += 1
                status, body = post(url, "/v1/completions", {"model": name, "prompt": "churn", "max_tokens": 4,
                                                             "temperature": 0, "ignore_eos": True}, self.api_key)
                if status == 200 and json.loads(body)["usage"]["completion_tokens"] == 4:
                    self.completions += 1
                else:
                    self.fail(f"completion on {name} at {url}: {status} {body[:200]}")
                status, body = post(url, "/v1/unload_lora_adapter", {"lora_name": name}, self.api_key)
                if status == 200:
                    self.unloads += 1
                else:
                    self.fail(f"unload {name} at {url}: {status} {body[:200]}")


class RssSampler(threading.Thread):
    """Samples the summed VmRSS (MiB) of the given processes every 250 ms."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids, self.samples = pids, []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.25):
            total = 0
            for pid in self.pids:
                try:
                    with open(f"/proc/{pid}/status") as f:
                        total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
                except (OSError, StopIteration):
                    pass
            if total:
                self.samples.append(total / 1024)


def percentile(values, q):
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms(x):
    return None if x is None else round(x * 1000, 2)


def summarise(samples, rss, churn):
    ok = [s for s in samples if s["ok"]]
    errors = [s for s in samples if not s["ok"]]
    streamed = [s for s in ok if s["stream"]]
    ttft = [s["ttft"] for s in streamed]
    itl = [gap for s in streamed for gap in s["itl"]]
    # Time per output token after the first (vLLM's TPOT): a request's decode time over its tokens.
    # Unlike the per-chunk gaps it does not see chunks that reach the client in one read as 0 ms.
    tpot = [(s["latency"] - s["ttft"]) / (s["tokens"] - 1) for s in streamed if s["tokens"] > 1]
    latency = [s["latency"] for s in ok]
    span = (max(s["t1"] for s in samples) - min(s["t0"] for s in samples)) if samples else 0
    quarter = max(len(rss) // 4, 1)
    first_q = statistics.fmean(rss[:quarter]) if rss else None
    last_q = statistics.fmean(rss[-quarter:]) if rss else None
    by_model = {}
    for s in ok:
        by_model[s["model"]] = by_model.get(s["model"], 0) + 1
    return {
        "requests": len(samples),
        "ok": len(ok),
        "errors": len(errors),
        "error_examples": sorted({s["error"] for s in errors})[:8],
        "streamed": len(streamed),
        "requests_by_model": by_model,
        "duration_s": round(span, 2),
        "throughput_requests_per_s": round(len(ok) / span, 2) if span else None,
        "throughput_tokens_per_s": round(sum(s["tokens"] for s in ok) / span, 1) if span else None,
        "ttft_ms": {"p50": ms(percentile(ttft, 50)), "p99": ms(percentile(ttft, 99)), "n": len(ttft)},
        "itl_ms": {"p50": ms(percentile(itl, 50)), "p99": ms(percentile(itl, 99)), "n": len(itl)},
        "tpot_ms": {"p50": ms(percentile(tpot, 50)), "p99": ms(percentile(tpot, 99)), "n": len(tpot)},
        "latency_ms": {"p50": ms(percentile(latency, 50)), "p99": ms(percentile(latency, 99))},
        "churn": {"loads": churn.loads if churn else 0, "unloads": churn.unloads if churn else 0,
                  "completions": churn.completions if churn else 0,
                  "failures": churn.failures if churn else []},
        "rss_mib": {"samples": len(rss), "first_quartile_mean": round(first_q, 1) if rss else None,
                    "last_quartile_mean": round(last_q, 1) if rss else None,
                    "max": round(max(rss), 1) if rss else None,
                    "growth_ratio": round(last_q / first_q, 4) if rss else None,
                    "flat": bool(rss) and last_q <= first_q * 1.10},
    }


def package_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--soak", action="store_true", help="10 minutes, 16 users (default: 30 s, 8 users)")
    p.add_argument("--generator", choices=["locust", "openai"], default="locust")
    p.add_argument("--users", type=int)
    p.add_argument("--spawn-rate", type=float, help="users started per second (default: all in one second)")
    p.add_argument("--run-time", type=float, help="seconds")
    p.add_argument("--max-requests", type=int, help="stop after this many requests (default 20000; soak 400000)")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--churn-interval", type=float, default=0.5, help="seconds between adapter loads (0: no churn)")
    p.add_argument("--lowrank", default=os.path.join(ROOT, "build", "bin", "lowrank"))
    p.add_argument("--serve-arg", action="append", default=[], help="one more argument for `lowrank serve`")
    p.add_argument("--url", help="load this server or proxy instead of starting one")
    p.add_argument("--admin-url", action="append", default=[], help="with --url: a server to churn adapters on")
    p.add_argument("--pid", action="append", type=int, default=[], help="with --url: a server process to sample")
    p.add_argument("--adapter-root", help="with --url: the servers' adapter root (churn adapters are written there)")
    p.add_argument("--models", default="tiny," + ",".join(ADAPTER_SCALES))
    p.add_argument("--api-key", default="")
    p.add_argument("--out")
    p.add_argument("--prepare", metavar="DIR", help="only write DIR/model and DIR/adapters, then exit")
    a = p.parse_args()
    if a.prepare:
        prepare(a.prepare)
        return 0
    mode = "soak" if a.soak else "short"
    users = a.users or (16 if a.soak else 8)
    spawn_rate = a.spawn_rate or users
    run_time = a.run_time or (600 if a.soak else 30)
    max_requests = a.max_requests or (400000 if a.soak else 20000)
    out = a.out or os.path.join(ROOT, "bench", "results", f"serve_load_{mode}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    load_at_start = round(os.getloadavg()[0], 2)  # other work on the machine shares its CPUs
    work = tempfile.mkdtemp(prefix="lowrank-serve-load-")
    server = None
    try:
        if a.url:
            url, admin_urls, pids, adapter_root = a.url, a.admin_url or [a.url], a.pid, a.adapter_root
        else:
            model, adapter_root = prepare(work)
            server, url = start_server(a.lowrank, model, adapter_root, os.path.join(work, "server.log"),
                                       ["--pool-mb", "64", *a.serve_arg])
            admin_urls, pids = [url], [server.pid]
        rss = RssSampler(pids)
        rss.start()
        churn = None
        if a.churn_interval > 0 and adapter_root:
            churn = Churn(admin_urls, adapter_root, a.churn_interval, a.api_key)
            churn.start()

        samples_path = os.path.join(work, "samples.json")
        csv_prefix = os.path.splitext(out)[0] + "_locust"
        if a.generator == "locust":
            env = dict(os.environ, LOWRANK_LOAD_MODELS=a.models, LOWRANK_LOAD_MAX_TOKENS=str(a.max_tokens),
                       LOWRANK_LOAD_MAX_REQUESTS=str(max_requests), LOWRANK_LOAD_API_KEY=a.api_key,
                       LOWRANK_LOAD_SAMPLES=samples_path)
            command = [os.path.join(os.path.dirname(sys.executable), "locust"), "-f",
                       os.path.join(HERE, "locustfile.py"), "--headless", "-u", str(users), "-r", str(spawn_rate),
                       "--run-time", f"{int(run_time)}s", "--host", url, "--csv", csv_prefix, "--only-summary",
                       "--stop-timeout", "30", "--loglevel", "WARNING"]
        else:
            env = dict(os.environ)
            command = [sys.executable, os.path.join(HERE, "openai_load.py"), "--url", url, "--models", a.models,
                       "--users", str(users), "--run-time", str(run_time), "--max-requests", str(max_requests),
                       "--max-tokens", str(a.max_tokens), "--api-key", a.api_key, "--out", samples_path]
        generator = subprocess.run(command, env=env, timeout=run_time + 120)
        rss.stop.set()
        if churn:
            churn.stop.set()
            churn.join(timeout=30)
        with open(samples_path) as f:
            samples = json.load(f)["samples"]
        result = summarise(samples, rss.samples, churn)
        result["generator_exit_status"] = generator.returncode
        result["config"] = {"mode": mode, "generator": a.generator, "users": users, "spawn_rate": spawn_rate,
                            "run_time_s": run_time, "max_requests": max_requests, "max_tokens": a.max_tokens,
                            "models": a.models.split(","), "churn_interval_s": a.churn_interval,
                            "servers": len(admin_urls),
                            "target": "a running server or proxy (--url)" if a.url else "one server started here",
                            "model": "tests/fixtures/hf/llama-tiny (hidden 64, 2 layers, vocab 512), float32, cpu"}
        result["versions"] = {"python": platform.python_version(), "locust": package_version("locust"),
                              "openai": package_version("openai")}
        result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "load_average_1m_at_start": load_at_start}
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
        print(json.dumps({k: result[k] for k in ("requests", "errors", "throughput_requests_per_s",
                                                  "throughput_tokens_per_s", "ttft_ms", "itl_ms", "tpot_ms", "rss_mib",
                                                  "churn")}, indent=1))
        print(f"serve_load: results in {out}")
        failed = (result["errors"] or generator.returncode != 0 or result["churn"]["failures"]
                  or not result["rss_mib"]["flat"])
        return 1 if failed else 0
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
