#!/usr/bin/env bash
# The GPU check: one prepared script that proves the CUDA path and measures it, under 8 minutes.
#   tests       pytest -m gpu: bf16 steps, CUDA checkpoints and resume, a study of two workers
#               sharing the GPU, an out-of-memory trial (tests/test_gpu.py);
#   throughput  training images/s, fast path vs the tutorial's DataLoader, tutorial_cnn and resnet;
#   accuracy    time in train() to 93% and to 94% test accuracy (experiments/gpu_speedrun*.yaml);
#   study       a 20-trial study with 1, 2 and 4 workers sharing the GPU: trials/h, GPU utilization.
# It runs on a bare GPU machine: a python3 with torch but without mlflow or optuna gets the
# wheels that benchmarks/gpu_wheels.sh packed (installed with --no-deps into a temp folder), and
# the data it copied (.gpu/data) when FASHION_MNIST_DIR is not set. A step that fails is noted
# and the rest still run; the table of everything measured comes last.
#
#   bash benchmarks/gpu_check.sh                     everything, on the GPU machine
#   bash benchmarks/gpu_check.sh --steps tests,study some steps only
#   bash benchmarks/gpu_check.sh --smoke             the same steps on the CPU at tiny sizes
# Options: --python PY (default: .venv/bin/python, else python3), --wheels DIR (default:
# .gpu/wheels-cpXY for that python), --out DIR (default: $OUT if set, else benchmarks/, or a temp
# folder with --smoke).
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
LIMIT_S=480 scale=1

smoke=0 out=${OUT:-} py="" wheels="" steps="tests,throughput,accuracy,study"
usage="usage: bash benchmarks/gpu_check.sh [--smoke] [--steps LIST] [--python PY] [--wheels DIR] [--out DIR]"
while (($#)); do
  case "$1" in
    --smoke) smoke=1 ;;
    --steps) steps=${2:?--steps needs a list like tests,study}; shift ;;
    --python) py=${2:?--python needs an interpreter}; shift ;;
    --wheels) wheels=${2:?--wheels needs a folder}; shift ;;
    --out) out=${2:?--out needs a folder}; shift ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift
done
for s in ${steps//,/ }; do
  [[ $s =~ ^(tests|throughput|accuracy|study)$ ]] \
    || { echo "error: unknown step '$s'; steps: tests, throughput, accuracy, study" >&2; exit 2; }
done
want() { [[ ,$steps, == *,$1,* ]]; }

if ((smoke)); then
  out=${out:-$(mktemp -d -t fashion-lab-gpu-check-XXXXXX)}
  # The limits are sized for a GPU; a busy 2-core CPU takes longer even at tiny sizes.
  scale=4 LIMIT_S=$((LIMIT_S * 4))
else
  out=${out:-benchmarks}
fi
mkdir -p "$out"
log=$out/gpu_check.log
exec > >(tee -a "$log") 2>&1

if [[ -z $py ]]; then
  py=python3
  [[ -x .venv/bin/python ]] && py=.venv/bin/python
fi
export MPLBACKEND=Agg PYTHONUNBUFFERED=1 TQDM_DISABLE=1
# mlflow and optuna from the wheelhouse where the interpreter lacks them.
if ! "$py" -c 'import mlflow, optuna' 2>/dev/null; then
  wheels=${wheels:-.gpu/wheels-$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')}
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    echo "error: $py lacks mlflow/optuna and $wheels holds no wheels; run" \
      "bash benchmarks/gpu_wheels.sh (or make setup)" >&2
    exit 2
  fi
  site=$(mktemp -d -t fashion-lab-site-XXXXXX)
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    "$wheels"/*.whl || { echo "error: installing $wheels failed" >&2; exit 2; }
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  echo "installed $(ls "$wheels"/*.whl | wc -l) wheels from $wheels into $site"
fi
[[ -z ${FASHION_MNIST_DIR:-} && -d .gpu/data ]] && export FASHION_MNIST_DIR=$PWD/.gpu/data
"$py" -c 'import train, tune' || { echo "error: the project does not import with $py" >&2; exit 2; }
"$py" -m data_utils || exit 2

if ((smoke)); then
  device=cpu sfx="" flags=(--smoke)
else
  device=cuda sfx="_cuda" flags=()
  "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || { echo "error: torch sees no GPU here; --smoke runs this on the CPU" >&2; exit 2; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  # Results land beside the ones already published, so RESULTS.md keeps its other sections.
  [[ $out != benchmarks && ! -f $out/RESULTS.md ]] && cp benchmarks/RESULTS.md "$out/"
fi
"$py" -c 'import platform, torch; print("python", platform.python_version(), "torch", torch.__version__)'
echo "steps: $steps; results: $out; at most ${LIMIT_S}s in all"

failed=() names=()
# step NAME LIMIT_S CMD...: one command under its own limit and what is left of the overall one;
# a failure is noted and the rest goes on, so the table still prints with what was measured.
step() {
  local name=$1 limit=$(($2 * scale)) t0=$SECONDS left
  shift 2
  left=$((LIMIT_S - (SECONDS - start)))
  ((left < limit)) && limit=$left
  if ((limit < 10)); then
    echo "== $name: SKIPPED, the ${LIMIT_S}s limit is spent"
    failed+=("$name")
    return
  fi
  echo "== $name (at most ${limit}s)"
  if timeout --kill-after=10 "$limit" "$@"; then
    echo "== $name: done in $((SECONDS - t0))s"
  else
    echo "== $name: FAILED (exit $?) after $((SECONDS - t0))s"
    failed+=("$name")
  fi
}
bench=(--device "$device" --out "$out" "${flags[@]}")

if want tests; then
  step "pytest -m gpu" 200 "$py" -m pytest -m gpu tests/test_gpu.py -p no:cacheprovider -q -rs
fi
if want throughput; then
  step "throughput tutorial_cnn" 45 "$py" -m benchmarks.bench_throughput "${bench[@]}" \
    --model tutorial_cnn --repeats 2
  names+=("throughput$sfx")
  # At smoke sizes resnet takes the same path as tutorial_cnn, ten times slower on a CPU.
  if ((!smoke)); then
    step "throughput resnet" 40 "$py" -m benchmarks.bench_throughput "${bench[@]}" \
      --model resnet --repeats 2
    names+=("throughput${sfx}_resnet")
  fi
fi
if want accuracy; then
  step "time to 93% and 94%" 110 "$py" -m benchmarks.bench_time_to_accuracy "${bench[@]}" \
    --baseline-max-epochs 0 \
    --limit-on train --recipe experiments/configs/gpu_speedrun.yaml 0.93 15 \
    --recipe experiments/configs/gpu_speedrun94.yaml 0.94 60
  names+=("time_to_accuracy$sfx")
fi
if want study; then
  # At smoke sizes, 2 workers take the path 4 would, in half the processes.
  sizes=(--workers 2,1)
  ((smoke)) || sizes=(--workers 4,2,1 --n-trials 20 --epochs 2 --train-subset 10000)
  step "20-trial study, 1 vs 2 vs 4 workers" 170 "$py" -m benchmarks.bench_study "${bench[@]}" \
    --compare workers "${sizes[@]}"
  names+=("study${sfx}_workers")
fi

echo
echo "gpu_check: $((SECONDS - start))s in all; results and log in $out"
((${#names[@]})) && "$py" -m benchmarks.summary --out "$out" "${names[@]}"
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}"
  exit 1
fi
