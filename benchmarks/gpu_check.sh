#!/usr/bin/env bash
# The GPU check of issue 5: one prepared script, under 8 minutes on one H100.
#   1. training throughput, fast path vs the tutorial's DataLoader path, tutorial_cnn and resnet;
#   2. time to 93% and to 94% test accuracy (experiments/gpu_speedrun.yaml, gpu_speedrun94.yaml);
#   3. the wall time of a 20-trial study with one worker on the GPU, and with two sharing it.
# Each part is a benchmarks/*.py script run with --device cuda; results land in
# benchmarks/results/*_cuda*.json and benchmarks/RESULTS.md. The table comes last.
#
#   bash benchmarks/gpu_check.sh            on the GPU machine (assumes `make setup` has run)
#   bash benchmarks/gpu_check.sh --smoke    on the CPU, tiny sizes, results in a temp folder
#   bash benchmarks/gpu_check.sh --out DIR  results under DIR instead
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

smoke=0 out=""
while (($#)); do
  case "$1" in
    --smoke) smoke=1 ;;
    --out) out=${2:?--out needs a folder}; shift ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--smoke] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done

# The repo's venv; else a python3 that already has what the benchmarks import; else build it.
if [[ -x .venv/bin/python ]]; then
  py=.venv/bin/python
elif python3 -c 'import torch, torchvision, pandas, psutil, mlflow, optuna' 2>/dev/null; then
  py=python3
else
  echo "no .venv: creating it from requirements.txt"
  python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt \
    || { echo "error: could not set up .venv; run make setup" >&2; exit 2; }
  py=.venv/bin/python
fi
export MPLBACKEND=Agg PYTHONUNBUFFERED=1 TQDM_DISABLE=1

if ((smoke)); then
  device=cpu sfx="" flags=(--smoke)
  out=${out:-$(mktemp -d -t fashion-lab-gpu-check-XXXXXX)}
else
  device=cuda sfx="_cuda" flags=()
  out=${out:-benchmarks}
  "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || { echo "error: torch sees no GPU here; --smoke runs this on the CPU" >&2; exit 2; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$py" -m data_utils || exit 2
echo "results: $out"

failed=()
# step NAME LIMIT_S SCRIPT ARGS...: one benchmark script under a time limit; a failure is noted and
# the rest goes on, so the table still prints with what was measured.
step() {
  local name=$1 limit=$2 script=$3 t0=$SECONDS
  shift 3
  echo "== $name (at most ${limit} s)"
  if timeout --kill-after=10 "$limit" \
    "$py" "benchmarks/$script.py" --device "$device" --out "$out" "${flags[@]}" "$@"; then
    echo "== $name: done in $((SECONDS - t0)) s"
  else
    echo "== $name: FAILED (exit $?) after $((SECONDS - t0)) s"
    failed+=("$name")
  fi
}

# Budget on an H100, about 7 of the 8 minutes: 75 + 75 + 140 + 170 s at most, plus start-up.
step "throughput tutorial_cnn" 75 bench_throughput --model tutorial_cnn
step "throughput resnet" 75 bench_throughput --model resnet
step "time to 93% and 94%" 140 bench_time_to_accuracy --baseline-max-epochs 0 --limit-on train \
  --recipe experiments/gpu_speedrun.yaml 0.93 15 --recipe experiments/gpu_speedrun94.yaml 0.94 60
names=("throughput$sfx" "throughput${sfx}_resnet" "time_to_accuracy$sfx")
if [[ -f tune.py ]]; then
  study_sizes=()
  ((smoke)) || study_sizes=(--n-trials 20 --epochs 2 --train-subset 10000)
  step "20-trial study, 1 vs 2 workers" 170 bench_study --compare workers "${study_sizes[@]}"
  names+=("study${sfx}_workers")
else
  echo "== study: skipped, tune.py is not there yet"
fi

echo
echo "gpu_check: $((SECONDS - start)) s in all; results in $out"
"$py" benchmarks/summary.py --out "$out" "${names[@]}"
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
