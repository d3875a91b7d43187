#!/usr/bin/env bash
# `torchrun --no-python --nproc-per-node 2 lowrank pretrain ...` (torchrun's agent hosts the store;
# both ranks are its clients) gives the one-process run: the same losses within 1e-5 (relative).
# Skipped (77) when the peer stack (.venv-peers, scripts/setup) has no torchrun.
# Usage: torchrun_test.sh PEER_PYTHON LOWRANK_BINARY
set -euo pipefail
python=$1
lowrank=$2
torchrun="$(dirname "$python")/torchrun"
if [ ! -x "$torchrun" ]; then
  echo "skipped: no torchrun beside $python"
  exit 77
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
args=(--threads 1 pretrain --preset tiny --corpus bible --max-documents 40 --seed 3 --steps 4 --dist-timeout 60)
"$lowrank" "${args[@]}" --out "$dir/one" > "$dir/one.log" 2>&1 || { cat "$dir/one.log"; exit 1; }
"$torchrun" --no-python --nproc-per-node 2 --master-addr 127.0.0.1 --master-port "$port" \
  "$lowrank" "${args[@]}" --out "$dir/two" > "$dir/two.log" 2>&1 || { cat "$dir/two.log"; exit 1; }
"$python" - "$dir/one/run/metrics.jsonl" "$dir/two/run/metrics.jsonl" <<'PY'
import json, sys
one = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
two = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
assert len(one) == len(two) == 4, (len(one), len(two))
for a, b in zip(one, two):
    assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(a["loss"]), (a, b)
print("torchrun: 4 steps, losses equal the one-process run within 1e-5")
PY
test -f "$dir/two/pretrain.json"
test -f "$dir/two/run/logs/rank-1.log"
