#!/usr/bin/env python3
"""Sends one completion per served model to a running `lowrank serve`, all at once, and prints them.

Usage: demo_requests.py URL BASE_PROMPT [ADAPTER:PROMPT ...]. Only the standard library: the
quickstart needs no Python packages.
"""
import json
import sys
import threading
import urllib.request


def complete(url, model, prompt, results, index):
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": 40, "temperature": 0.8, "top_p": 0.95, "seed": 1}).encode()
    request = urllib.request.Request(url + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        results[index] = json.load(response)


def main():
    url, base_prompt = sys.argv[1], sys.argv[2]
    with urllib.request.urlopen(url + "/v1/models", timeout=30) as response:
        models = json.load(response)["data"]
    base = next(m["id"] for m in models if not m.get("parent"))
    jobs = [(base, base_prompt)] + [tuple(a.split(":", 1)) for a in sys.argv[3:]]
    results = [None] * len(jobs)
    threads = [threading.Thread(target=complete, args=(url, m, p, results, i)) for i, (m, p) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (model, prompt), result in zip(jobs, results):
        if result is None:
            sys.exit(f"no answer for {model}")
        text = result["choices"][0]["text"]
        print(f"[{model}] {prompt}{text}".replace("\n", " "))


if __name__ == "__main__":
    main()
