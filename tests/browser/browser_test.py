"""The playground and the run reports in a real browser: headless Chromium (Debian's `chromium`
and `chromium-driver`) driven by Selenium (PyPI, in the peer stack .venv-peers).

Starts `lowrank serve` on a free loopback port over a copy of the bundled tiny Llama with two
adapters (alpha, beta: the fixture LoRA, beta with 4x lora_alpha), an API key, one running slot
(--max-running 1, so that a request can be made to wait) and a runs directory, then checks:
  - the page asks for the API key (a 401 opens the dialog); after it is given, nothing is in the
    page's storage and the URL carries no key;
  - the chooser lists the base model and both adapters; with alpha chosen, a seeded sampled
    completion streamed into the page equals the API's own (non-streamed) answer for the same
    request, the finish reason and usage are shown, and hovering a token shows its top logprobs;
  - chat mode streams an answer into the transcript;
  - a request stopped with the Stop button is cancelled on the server (/metrics'
    lowrank_requests_cancelled_total and lowrank_client_disconnects_total go up, and the side
    panel shows it);
  - an adapter loaded through POST /v1/load_lora_adapter appears in the chooser by itself;
  - a completion whose text is HTML (<script>, <img onerror>) is shown as text: no element is
    created and no script runs. The server's tiny model cannot be made to write HTML, so this
    stream is served to the page by a stand-in for fetch() that returns the server's SSE format:
    the page's own parsing and rendering code handles it;
  - `lowrank report RUN_A RUN_B --out report.html` opened in the browser: each plot has one SVG
    polyline per run with as many points as its metrics.jsonl has rows, and /runs/NAME from the
    server likewise;
  - no console error on any page (the CSP would report a blocked inline script there).
Screenshots of the playground and of the report go to OUT_DIR (playground.png, report.png).

Exits 77 (ctest: skipped) with the reason when Chromium, chromedriver or Selenium is missing.

usage: browser_test.py LOWRANK_BINARY MODEL_DIR TOKENIZER_JSON ADAPTER_DIR WORK_DIR
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
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError as e:  # the peer stack is installed by scripts/setup (full, not --core)
    print(f"SKIP: selenium is not installed ({e})")
    sys.exit(77)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/lib/chromium/chromedriver" if os.path.exists("/usr/lib/chromium/chromedriver") else None)
if not CHROMIUM or not CHROMEDRIVER:
    print("SKIP: Chromium or chromedriver is not installed (Debian: apt-get install chromium chromium-driver)")
    sys.exit(77)

lowrank, model_src, tokenizer, adapter_src, work = sys.argv[1:6]
KEY = "browser-key"
ROWS_A, ROWS_B = 12, 7
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


started = time.time()
shutil.rmtree(work, ignore_errors=True)
out_dir = os.path.join(work, "out")
os.makedirs(out_dir)
model_dir = os.path.join(work, "model")
shutil.copytree(model_src, model_dir)
shutil.copy(tokenizer, os.path.join(model_dir, "tokenizer.json"))
root = os.path.join(work, "adapters")
shutil.copytree(adapter_src, os.path.join(root, "alpha"))
shutil.copytree(adapter_src, os.path.join(root, "beta"))
with open(os.path.join(root, "beta", "adapter_config.json")) as f:
    config = json.load(f)
config["lora_alpha"] = config["lora_alpha"] * 4
with open(os.path.join(root, "beta", "adapter_config.json"), "w") as f:
    json.dump(config, f)

# Two runs as pretraining leaves them (run/metrics.jsonl, pretrain.json).
runs = os.path.join(work, "runs")
for name, rows, rate in (("run-a", ROWS_A, 0.3), ("run-b", ROWS_B, 0.5)):
    os.makedirs(os.path.join(runs, name, "run"))
    with open(os.path.join(runs, name, "run", "metrics.jsonl"), "w") as f:
        for step in range(1, rows + 1):
            f.write(json.dumps({"step": step, "loss": 6.0 / (1 + rate * step), "lr": 1e-3 * min(1, step / 4),
                                "grad_norm": 2.0 / step ** (rate + 0.2), "tokens_per_s": 900 + 10 * step}) + "\n")
    with open(os.path.join(runs, name, "pretrain.json"), "w") as f:
        json.dump({"steps": rows, "final_loss": 6.0 / (1 + rate * rows), "train_seconds": 1.5,
                   "validation": {"nll": 2.0, "perplexity": 7.389},
                   "memory": {"weights": 3 << 20, "grads": 3 << 20, "optimizer_states": 6 << 20, "projectors": 0,
                              "total": 12 << 20},
                   "trainer": {"batch_size": 4, "grad_accum": 1, "seq_len": 32}}, f)

log = []
server, serving = serve_process.start(
    [lowrank, "serve", "--model", model_dir, "--adapters", root, "--port", "0", "--api-key", KEY,
     "--model-name", "tiny", "--pool-mb", "16", "--max-running", "1", "--runs", runs], sink=log)
if serving is None:
    print("".join(log))
    print("FAIL: the server did not print its serving line")
    sys.exit(1)
url = serving.group(3)


def api(path, body=None, key=KEY):
    request = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                     method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(name):
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    m = re.search(r"^lowrank_" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


options = webdriver.ChromeOptions()
options.binary_location = CHROMIUM
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,860",
            "--no-first-run", "--disable-extensions", "--disable-background-networking"):
    options.add_argument(arg)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = None


def console_errors():
    # The 401 that opens the key dialog is logged by Chromium as a failed load: it is expected.
    return [e for e in driver.get_log("browser")
            if e.get("level") == "SEVERE" and "status of 401" not in e.get("message", "")]


def wait(cond, what, timeout=20):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: cond())
    except Exception:
        check(False, f"timed out waiting for {what}")
        return None


def by_id(i):
    return driver.find_element(By.ID, i)


def set_value(i, value):
    element = by_id(i)
    element.clear()
    element.send_keys(str(value))


def chooser():
    # Read in one script: the page rebuilds the options when the list changes, which would make
    # element handles taken one by one stale.
    return driver.execute_script("return [...document.getElementById('model').options].map((o) => o.value);")


def output_text():
    # The model's text: the token spans (the prompt's span is apart).
    return driver.execute_script(
        "return [...document.querySelectorAll('#output .tok')].map((s) => s.textContent).join('');")


try:
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(20)

    # --- the key prompt and the chooser ----------------------------------------------------------
    driver.get(url + "/")
    wait(lambda: driver.execute_script("return document.getElementById('key-dialog').open;"), "the key dialog")
    set_value("api-key", KEY)
    by_id("key-save").click()
    wait(lambda: driver.execute_script("return document.body.dataset.ready === '1';"), "the model list")
    models = chooser()
    check(models == ["tiny", "alpha", "beta"], f"the chooser lists the base model and both adapters: {models}")
    storage = driver.execute_script("return [localStorage.length, sessionStorage.length];")
    check(storage == [0, 0], f"the key is in no storage without 'remember': {storage}")
    check(KEY not in driver.current_url, "the key is not in the URL")

    # --- a seeded completion from an adapter, streamed, equals the API's answer ------------------
    Select(by_id("model")).select_by_value("alpha")
    Select(by_id("mode")).select_by_value("completion")
    for field, value in (("temperature", 0.9), ("top_p", 0.95), ("max_tokens", 24), ("seed", 1234),
                         ("top_logprobs", 3)):
        set_value(field, value)
    set_value("prompt", "hello world")
    by_id("send").click()
    wait(lambda: by_id("finish").text.startswith("finish reason"), "the streamed completion to finish")
    streamed = output_text()
    status, body = api("/v1/completions", {"model": "alpha", "prompt": "hello world", "max_tokens": 24,
                                           "temperature": 0.9, "top_p": 0.95, "seed": 1234})
    answer = json.loads(body)["choices"][0] if status == 200 else {}
    check(status == 200 and streamed == answer.get("text") and streamed != "",
          f"streamed text equals the API's answer for the same seed: {streamed!r} vs {answer.get('text')!r}")
    check(by_id("finish").text == "finish reason: " + str(answer.get("finish_reason")),
          f"the finish reason is shown: {by_id('finish').text!r}")
    check(re.match(r"usage: \d+ prompt \+ \d+ completion tokens", by_id("usage").text) is not None,
          f"the usage is shown: {by_id('usage').text!r}")
    tokens = driver.find_elements(By.CSS_SELECTOR, "#output .tok")
    if tokens:
        ActionChains(driver).move_to_element(tokens[0]).perform()
        wait(lambda: by_id("token-info").is_displayed(), "the logprob hover")
        info = by_id("token-info").text
        check(len(info.splitlines()) >= 4, f"hovering a token shows it and its top 3 alternatives: {info!r}")
    driver.save_screenshot(os.path.join(out_dir, "playground.png"))

    # --- chat ------------------------------------------------------------------------------------
    Select(by_id("mode")).select_by_value("chat")
    Select(by_id("model")).select_by_value("beta")
    set_value("prompt", "hi there")
    by_id("send").click()
    wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#transcript .assistant")) == 1, "the chat answer")
    turns = driver.find_elements(By.CSS_SELECTOR, "#transcript .turn")
    check(len(turns) == 2 and turns[0].text == "hi there", "chat: the user's turn and the answer in the transcript")

    # --- stop: the request is cancelled on the server --------------------------------------------
    # A long streaming request holds the one running slot; the page's request waits behind it,
    # and the Stop button closes its connection.
    hog_done = threading.Event()

    def hog():
        api("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 250, "n": 12, "ignore_eos": True})
        hog_done.set()

    threading.Thread(target=hog, daemon=True).start()
    wait(lambda: (metric("running_requests") or 0) >= 1, "the long request to run")
    cancelled_before = metric("requests_cancelled_total")
    disconnects_before = metric("client_disconnects_total")
    Select(by_id("mode")).select_by_value("completion")
    set_value("max_tokens", 200)
    set_value("prompt", "a long answer")
    by_id("send").click()
    wait(lambda: by_id("cancel").is_enabled(), "the Stop button")
    time.sleep(0.3)
    by_id("cancel").click()
    wait(lambda: "cancelled" in by_id("finish").text, "the page to show the stop")
    wait(lambda: metric("requests_cancelled_total") >= cancelled_before + 1, "/metrics to count the cancel")
    check(metric("requests_cancelled_total") == cancelled_before + 1,
          f"/metrics: one request cancelled ({cancelled_before} -> {metric('requests_cancelled_total')})")
    check(metric("client_disconnects_total") == disconnects_before + 1, "/metrics: one client disconnect")
    wait(lambda: by_id("m-cancelled").text == str(int(cancelled_before + 1)), "the side panel to show the cancel")
    hog_done.wait(60)

    # --- an adapter loaded through the API appears by itself -------------------------------------
    shutil.copytree(adapter_src, os.path.join(root, "gamma"))
    status, body = api("/v1/load_lora_adapter", {"lora_name": "gamma"})
    check(status == 200, f"load_lora_adapter gamma: {status} {body}")
    wait(lambda: "gamma" in chooser(), "gamma in the chooser", timeout=10)
    check("gamma" in chooser(), "an adapter loaded through the API appears in the chooser")

    # --- model text that is HTML stays text ------------------------------------------------------
    hostile = '<script>window.__ran = 1</script><img src=x onerror="window.__ran = 2"><b>bold</b>'
    driver.execute_script("""
        const hostile = arguments[0];
        const realFetch = window.fetch;
        window.fetch = (path, options) => {
          if (!String(path).endsWith('/v1/completions')) return realFetch(path, options);
          const chunk = (text, finish) => 'data: ' + JSON.stringify({object: 'text_completion', choices: [
              {index: 0, text: text, finish_reason: finish, logprobs: null}]}) + '\\n\\n';
          const body = chunk(hostile.slice(0, 20), null) + chunk(hostile.slice(20), null) + chunk('', 'stop') +
              'data: [DONE]\\n\\n';
          return Promise.resolve(new Response(body, {status: 200, headers: {'Content-Type': 'text/event-stream'}}));
        };""", hostile)
    set_value("prompt", "anything")
    by_id("send").click()
    wait(lambda: by_id("finish").text == "finish reason: stop", "the HTML completion")
    time.sleep(0.2)
    check(output_text() == hostile, "HTML in a completion is shown as its text")
    elements = driver.execute_script(
        "return [...document.querySelectorAll('#output *')].filter((e) => !e.matches('span')).length;")
    check(elements == 0, f"no element is created from model text ({elements} non-span elements)")
    check(driver.execute_script("return window.__ran === undefined;"), "no script from model text ran")
    errors = console_errors()
    check(not errors, f"no console error on the playground: {errors}")

    # --- the report ------------------------------------------------------------------------------
    report = os.path.join(out_dir, "report.html")
    # Relative run paths (from the runs directory): the page's table shows them as given.
    result = subprocess.run([os.path.abspath(lowrank), "report", "run-a", "run-b", "--out", report, "--title",
                             "Two tiny runs"], capture_output=True, text=True, cwd=runs)
    check(result.returncode == 0, f"lowrank report exits 0 ({result.stderr.strip()})")

    def check_curves(page_url, expected, what):
        driver.get(page_url)
        figures = driver.execute_script("""
            return [...document.querySelectorAll('figure[id^="plot-"]')].map((f) => [f.id,
                [...f.querySelectorAll('polyline.series')].map((p) => [p.dataset.series, p.points.numberOfItems])]);""")
        check(len(figures) >= 5, f"{what}: the loss (step, tokens), lr, grad norm and tokens/s plots ({len(figures)})")
        for fid, curves in figures:
            check(curves == expected, f"{what} {fid}: one polyline per run with one point per row: {curves}")
        errors = console_errors()
        check(not errors, f"{what}: no console error: {errors}")

    check_curves("file://" + os.path.abspath(report), [["run-a", ROWS_A], ["run-b", ROWS_B]], "report.html")
    driver.save_screenshot(os.path.join(out_dir, "report.png"))
    check_curves(url + "/runs/run-b", [["run-b", ROWS_B]], "/runs/run-b")
    driver.get(url + "/runs")
    links = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "a")]
    check(links == ["run-a", "run-b"], f"/runs lists the runs: {links}")
finally:
    if driver is not None:
        driver.quit()
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        code = "killed after 60 s"
    check(code == 0, f"SIGTERM: exit status {code}")

print(f"browser suite: {time.time() - started:.1f} s; screenshots in {out_dir}")
if failures:
    print("".join(log))
    print(f"{len(failures)} failure(s)")
    sys.exit(1)
print("all checks passed")
