#!/usr/bin/env bash
# Wall time of `make demo` on a fresh clone (no .venv), as a new user would run it.
#   bench/demo_time.sh [DEMO_ARGS...]     e.g. bench/demo_time.sh --quick
# Prints the demo's own output, then "demo wall time: N s" (install included) and the exit code.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/budgetnas-demo-time.XXXXXX)"
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/budgetnas"
cd "$work/budgetnas"
start=$(date +%s)
if [ $# -gt 0 ]; then
  make install >/dev/null && .venv/bin/python -m budgetnas.cli.demo "$@"
else
  make demo
fi
rc=$?
end=$(date +%s)
# keep the run (report.html, demo.json, logs) beside the repository before the clone is removed
mkdir -p "$repo/runs" && cp -r runs/. "$repo/runs/" 2>/dev/null && echo "run kept under $repo/runs/"
echo "demo wall time: $((end - start)) s (fresh clone, install included; exit code $rc)"
exit $rc
