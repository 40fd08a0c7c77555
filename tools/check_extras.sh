#!/usr/bin/env bash
# Each torch-free deployable installed alone, from this tree, in a fresh virtualenv, then run:
#   base   - the CLI's light part (spaces, a LUT file and its predictor)
#   server - the LUT server: migrations, `budgetnas serve`, a LUT imported and predicted over REST
# and neither may bring torch. (The agent and train extras are the main .venv's `.[all]`, which the whole
# suite runs in.) Usage: tools/check_extras.sh [base server]; PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
EXTRAS=("$@")
[ ${#EXTRAS[@]} -gt 0 ] || EXTRAS=(base server)
WORK="$(mktemp -d /tmp/budgetnas-extras.XXXXXX)"
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# the tracked files as they are in the working tree, copied out: the wheel is built from them alone (a
# stale build/ or egg-info of an earlier local build cannot leak into it); the installs need the package index
SRC="$WORK/src"
mkdir -p "$SRC"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$SRC"

fresh_venv() {  # fresh_venv NAME EXTRA: a virtualenv with only the project (and EXTRA) installed, not editable
  "$PY" -m venv "$WORK/$1"
  "$WORK/$1/bin/pip" install --quiet --upgrade pip
  "$WORK/$1/bin/pip" install --quiet "$SRC$2"
  if "$WORK/$1/bin/python" -c "import torch" 2>/dev/null; then
    echo "check_extras: the $1 install brought torch" >&2
    exit 1
  fi
}

check_base() {
  fresh_venv base ""
  local bn="$WORK/base/bin/budgetnas"
  "$bn" --help >/dev/null
  "$bn" spaces sample nb201 --n 3 >/dev/null
  # a LUT file and its cost model, with nothing but the base install
  "$WORK/base/bin/python" - "$WORK/lut.json" <<'EOF'
import sys
from budgetnas.luts.lut import LUT, LatencyStats, LUTMeta, LUTPredictor
from budgetnas.spaces import get_space
sp = get_space("nb201")
lut = LUT(LUTMeta(space=sp.describe(), device="d", backend="ort-cpu"),
          {k: LatencyStats.from_samples([0.1, 0.2]) for k in sp.all_block_keys()})
lut.save(sys.argv[1])
arch = sp.sample_many(1, 0)[0]
assert LUTPredictor(LUT.load(sys.argv[1]), sp).raw([arch])[0] > 0
EOF
  echo "check_extras: base ok"
}

check_server() {
  fresh_venv server "[server]"
  local port
  port="$("$WORK/server/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  BUDGETNAS_ADMIN_TOKEN=extras-check "$WORK/server/bin/budgetnas" serve --db "sqlite:///$WORK/server.db" \
    --host 127.0.0.1 --port "$port" --log-level warning > "$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  "$WORK/server/bin/python" - "http://127.0.0.1:$port" <<'EOF' || { cat "$WORK/server.log" >&2; exit 1; }
import json, sys, time
import httpx
from budgetnas.luts.lut import LUT, LatencyStats, LUTMeta
from budgetnas.spaces import get_space
url, admin = sys.argv[1], {"Authorization": "Bearer extras-check"}
for _ in range(120):
    try:
        if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    time.sleep(0.5)
else:
    sys.exit("check_extras: the server did not answer /healthz")
sp = get_space("nb201")
lut = LUT(LUTMeta(space=sp.describe(), device="d", backend="ort-cpu"),
          {k: LatencyStats.from_samples([0.1, 0.2]) for k in sp.all_block_keys()})
r = httpx.post(f"{url}/v1/luts/import", json={"format": "json", "content": json.dumps(lut.to_json_dict())},
               headers=admin, timeout=30)
assert r.status_code == 201, r.text
arch = sp.format(sp.sample_many(1, 0)[0])
r = httpx.post(f"{url}/v1/predict", json={"lut": r.json()["id"], "archs": [arch]}, timeout=30)
assert r.status_code == 200 and r.json()["predictions"][0]["latency_ms"] > 0, r.text
EOF
  kill "$SERVER_PID" 2>/dev/null || true  # it may have stopped on its own: the checks above passed
  SERVER_PID=""
  echo "check_extras: server ok"
}

for extra in "${EXTRAS[@]}"; do
  case "$extra" in
    base) check_base ;;
    server) check_server ;;
    *) echo "check_extras: unknown extra $extra (base, server)" >&2; exit 2 ;;
  esac
done
