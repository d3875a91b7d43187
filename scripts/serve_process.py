"""Starting `lowrank serve` from the Python tests and benches (interop, browser, load, replicas).

`lowrank serve --port 0` picks a free port and prints one line once it listens:

    serving NAME (+K adapters) on http://127.0.0.1:PORT

start() spawns the command with stdout and stderr merged, reads until that line, and then keeps
draining the output on a daemon thread so that the server never blocks on a full pipe. Every line
goes to `sink` (a list to append to, or a file to write to).
"""
import re
import subprocess
import threading
import time

SERVING_LINE = re.compile(r"serving (\S+) \(\+(\d+) adapters\) on (http://\S+)")


def _writer(sink):
    if sink is None:
        return lambda line: None
    if isinstance(sink, list):
        return sink.append
    return sink.write


def start(command, sink=None, timeout=120.0):
    """Returns (process, match): match is SERVING_LINE's match (groups: model name, adapter count,
    URL), or None when the server exited or did not print the line within `timeout` seconds (the
    process is then killed)."""
    write = _writer(sink)
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = server.stdout.readline()
        if not line:
            break
        write(line)
        match = SERVING_LINE.search(line)
        if match:
            threading.Thread(target=lambda: [write(rest) for rest in server.stdout], daemon=True).start()
            return server, match
    server.kill()
    server.wait()
    return server, None
