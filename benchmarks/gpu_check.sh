#!/usr/bin/env bash
# The GPU check: one prepared script that proves the CUDA path and measures it, under 8 minutes.
#   tests       pytest -m gpu (tests/test_gpu.py): bf16 steps, CUDA checkpoints and resume, two
#               workers sharing the GPU, an out-of-memory trial; it fails unless every one of
#               them ran and passed, so a machine where they were skipped never passes;
#   throughput  training images/s, fast path vs the tutorial's DataLoader, tutorial_cnn and resnet;
#   accuracy    time in train() to 93% and to 94% test accuracy (experiments/gpu_speedrun*.yaml).
# On a bare GPU machine, a python3 with torch but without mlflow or optuna installs the wheels
# that benchmarks/gpu_wheels.sh packed (with --no-deps, into a temp folder) and reads the data it
# copied (.gpu/data) unless FASHION_MNIST_DIR is set. Results name the commit git reports there:
# the checkout's .git must travel with the tree. A failed step is noted and the rest still run.
#
#   bash benchmarks/gpu_check.sh                  everything, on the GPU machine
#   bash benchmarks/gpu_check.sh --steps tests    some steps only
#   bash benchmarks/gpu_check.sh --smoke          every step on the CPU at tiny sizes; the GPU
#                                                 tests skip there, so it ends "failed: GPU tests ran"
# --python PY (default: .venv/bin/python, else python3), --wheels DIR (default: .gpu/wheels-cpXY
# for it), --out DIR (default: $OUT if set, else benchmarks/, or a temp folder with --smoke).
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS LIMIT_S=480 scale=1

smoke=0 out=${OUT:-} py="" wheels="" steps="tests,throughput,accuracy"
while (($#)); do
  case "$1" in
    --smoke) smoke=1 ;;
    --steps) steps=${2:?--steps needs a list like tests,accuracy}; shift ;;
    --python) py=${2:?--python needs an interpreter}; shift ;;
    --wheels) wheels=${2:?--wheels needs a folder}; shift ;;
    --out) out=${2:?--out needs a folder}; shift ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) sed -n '2,19p' "$0" >&2; exit 2 ;;
  esac
  shift
done
[[ $steps =~ ^(tests|throughput|accuracy)(,(tests|throughput|accuracy))*$ ]] \
  || { echo "error: steps are a list of tests, throughput, accuracy, not '$steps'" >&2; exit 2; }
want() { [[ ,$steps, == *,$1,* ]]; }

if ((smoke)); then
  out=${out:-$(mktemp -d -t fashion-lab-gpu-check-XXXXXX)}
  scale=4 LIMIT_S=$((LIMIT_S * 4))  # the limits are sized for a GPU, not a busy 2-core CPU
else
  out=${out:-benchmarks}
fi
mkdir -p "$out"
exec > >(tee -a "$out/gpu_check.log") 2>&1

[[ -z $py && -x .venv/bin/python ]] && py=.venv/bin/python
py=${py:-python3}
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
"$py" -m data_utils || exit 2

if ((smoke)); then
  device=cpu flags=(--smoke)
else
  device=cuda flags=(--repeats 2)
  "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || { echo "error: torch sees no GPU here; --smoke runs this on the CPU" >&2; exit 2; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
echo "steps: $steps; results: $out; at most ${LIMIT_S}s in all"

failed=()
# step NAME LIMIT_S CMD...: CMD under its own limit and what is left of the overall one.
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
# Every test in pytest's report ran and passed: none skipped, none failed.
RAN='import sys, xml.etree.ElementTree as ET
s = ET.parse(sys.argv[1]).getroot().find("testsuite")
n, skipped = int(s.get("tests")), int(s.get("skipped"))
bad = int(s.get("failures")) + int(s.get("errors"))
print(f"GPU tests: {n - skipped - bad} of {n} ran and passed, {skipped} skipped, {bad} failed")
sys.exit(0 if n and not skipped and not bad else 1)'
bench=(--device "$device" --out "$out" "${flags[@]}")

if want tests; then
  step "pytest -m gpu" 200 "$py" -m pytest -m gpu tests/test_gpu.py -p no:cacheprovider -q -rs \
    --junitxml "$out/gpu_tests.xml"
  step "GPU tests ran" 30 "$py" -c "$RAN" "$out/gpu_tests.xml"
fi
if want throughput; then
  step "throughput tutorial_cnn" 45 "$py" -m benchmarks.bench_throughput "${bench[@]}"
  # At smoke sizes resnet takes the same path as tutorial_cnn, ten times slower on a CPU.
  ((smoke)) || step "throughput resnet" 40 "$py" -m benchmarks.bench_throughput "${bench[@]}" \
    --model resnet
fi
if want accuracy; then
  step "time to 93% and 94%" 170 "$py" -m benchmarks.bench_time_to_accuracy "${bench[@]}" \
    --baseline-max-epochs 0 --limit-on train \
    --recipe experiments/configs/gpu_speedrun.yaml 0.93 15 \
    --recipe experiments/configs/gpu_speedrun94.yaml 0.94 60
fi

echo "gpu_check: $((SECONDS - start))s in all; results and log in $out"
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}"
  exit 1
fi
