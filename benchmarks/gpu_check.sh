#!/usr/bin/env bash
# The first GPU session: does every CUDA path of uhd-profile work, and are its numbers plausible?
#
#   bash benchmarks/gpu_check.sh [OUT]        # OUT defaults to gpu-check-<UTC time>
#
# Runs, each under a time budget, writing everything under OUT:
#   (a) the GPU-marked tests                       -> OUT/gpu-tests.{log,xml}
#   (b) a known-answer timing check: an 8192^3 bf16 matmul (2 n^3 FLOPs, counted by uhd-profile too)
#       timed with the project's probe against the GPU's dense datasheet peak -> OUT/matmul.{json,log}
#   (c) the paper recipe at 980 px with latency, memory and energy -> OUT/sweep/ (results + report)
#   (d) a profiler trace of v4 in bf16               -> OUT/trace/, OUT/bench.json
# then judges them (benchmarks/gpu_check.py summary): OUT/summary.{md,json}, one line per failed
# check on stderr, exit 1 if any check failed. Without a CUDA device: one line, exit 2.
#
# Budget: under 8 minutes on one H100/H200-class GPU. Per step (timeouts; estimates, not yet
# measured on a GPU -- this project has none -- so read the seconds in OUT/steps.tsv afterwards):
#   (a)  60 s: collecting the suite imports torch/transformers (~10-15 s); the GPU tests run tiny
#        models (a few seconds each).
#   (b)  45 s: CUDA start-up and cuBLAS warm-up (~5-10 s), then 1-10 s of timing (~1.6 ms per
#        matmul at ~700 TFLOP/s), 20 more iterations against the host clock.
#   (c) 270 s: 11 counted points (~0.3 s each, on the meta device) and 11 measured points at 980 px,
#        each in a fresh process (~5 s start-up, ~5 s to build a 0.4 B-parameter tower, >= 1 s and
#        >= 10 samples of timing at ~5-15 ms per forward, memory, NVML) ~ 15-20 s each, then the
#        report (~15 s).
#   (d)  75 s: one bench (start-up, build, timing as in (c)) plus 4 profiled forwards and the trace.
#   Sum of budgets: 450 s; the summary adds a few seconds.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PY="${PYTHON:-python}"
OUT="${1:-gpu-check-$(date -u +%Y%m%d-%H%M%S)}"

# No CUDA: one line from the preflight, exit 2, nothing written.
"$PY" "$HERE/gpu_check.py" preflight "$OUT" || exit $?
OUT="$(cd "$OUT" && pwd)"  # absolute: the steps run from the repository root
cd "$REPO"
: >"$OUT/steps.tsv"

# step NAME BUDGET_S STDOUT_FILE STDERR_FILE COMMAND...: run under `timeout`, record
# "name, exit code, seconds, budget, command" in steps.tsv (timeout's exit code is 124).
step() {
  local name=$1 budget=$2 stdout=$3 stderr=$4
  shift 4
  local t0 rc
  echo "gpu-check: $name (budget ${budget} s): $*"
  t0=$SECONDS
  timeout --kill-after=10 "$budget" "$@" >"$stdout" 2>"$stderr"
  rc=$?
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$budget" "$*" >>"$OUT/steps.tsv"
}

step gpu-tests 60 "$OUT/gpu-tests.log" "$OUT/gpu-tests.err" \
  "$PY" -m pytest -q -m gpu -rs --junitxml "$OUT/gpu-tests.xml"
step matmul 45 "$OUT/matmul.log" "$OUT/matmul.err" \
  "$PY" "$HERE/gpu_check.py" matmul "$OUT" --n 8192 --dtype bf16
step sweep 270 "$OUT/sweep.log" "$OUT/sweep.err" \
  "$PY" -m uhd_profile.cli sweep paper --device cuda --out "$OUT/sweep"
step trace 75 "$OUT/bench.json" "$OUT/bench.err" \
  "$PY" -m uhd_profile.cli bench --variant v4 --device cuda --dtype bf16 --trace "$OUT/trace" --json

"$PY" "$HERE/gpu_check.py" summary "$OUT"
