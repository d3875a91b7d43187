"""The load of openai_load.py under locust: each locust user drives the official `openai` client.

Locust's HttpUser times whole responses only; a streamed completion needs the time to its first
token and between tokens, so the user here calls openai_load.one_request (the same request and
checks as the threaded generator) and reports to locust by hand: one "STREAM"/"PLAIN" entry per
request (its whole latency, failed when the request is an error) and one "TTFT" entry per streamed
request, so locust's own --csv tables carry them. The raw samples (every inter-token gap too; locust
rounds its percentiles) are written at exit to $LOWRANK_LOAD_SAMPLES for run.py to summarise.

Settings from the environment (run.py sets them):
  LOWRANK_LOAD_MODELS       comma-separated model ids to ask for (the base and adapters)
  LOWRANK_LOAD_MAX_TOKENS   tokens per request (16)
  LOWRANK_LOAD_MAX_REQUESTS stop the run after this many requests in all (0: bounded by --run-time)
  LOWRANK_LOAD_API_KEY      the server's API key, if any
  LOWRANK_LOAD_SAMPLES      where to write the raw samples (JSON)

  locust -f bench/serve_load/locustfile.py --headless -u 8 -r 8 --run-time 20s \
      --host http://127.0.0.1:PORT --csv results/locust
"""
import itertools
import json
import os
import random
import sys

from locust import User, constant, events, task

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import openai_load  # noqa: E402  (beside this file)

MODELS = os.environ.get("LOWRANK_LOAD_MODELS", "tiny").split(",")
MAX_TOKENS = int(os.environ.get("LOWRANK_LOAD_MAX_TOKENS", "16"))
MAX_REQUESTS = int(os.environ.get("LOWRANK_LOAD_MAX_REQUESTS", "0"))
API_KEY = os.environ.get("LOWRANK_LOAD_API_KEY", "")
SAMPLES_PATH = os.environ.get("LOWRANK_LOAD_SAMPLES", "")

samples = []
user_ids = itertools.count()


class OpenAIClientUser(User):
    wait_time = constant(0)  # closed loop: the next request as soon as the last one finished

    def on_start(self):
        self.client = openai_load.make_client(self.host, API_KEY)
        self.rng = random.Random(next(user_ids))

    @task
    def completion(self):
        if MAX_REQUESTS and len(samples) >= MAX_REQUESTS:
            self.environment.runner.quit()
            return
        streamed = self.rng.random() < openai_load.STREAMED_SHARE
        sample = openai_load.one_request(self.client, self.rng.choice(MODELS), self.rng.choice(openai_load.PROMPTS),
                                         MAX_TOKENS, streamed)
        samples.append(sample)
        failure = None if sample["ok"] else RuntimeError(sample["error"])
        fire = self.environment.events.request.fire
        fire(request_type="STREAM" if streamed else "PLAIN", name="/v1/completions",
             response_time=sample["latency"] * 1000, response_length=sample["tokens"], exception=failure, context={})
        if streamed and sample["ttft"] is not None:
            fire(request_type="TTFT", name="/v1/completions", response_time=sample["ttft"] * 1000,
                 response_length=0, exception=None, context={})


@events.quitting.add_listener
def write_samples(environment, **_):
    if SAMPLES_PATH:
        with open(SAMPLES_PATH, "w") as f:
            json.dump({"samples": samples}, f)
