#!/usr/bin/env bash
# Packs what a bare GPU machine needs to run gpu_check.sh: wheels and the data, in ignored folders.
# The GPU machine (benchmarks/gpu_image.txt lists its distributions) has Python 3.12 with torch
# and the scientific stack but no mlflow, optuna or sqlalchemy, and no network. What it lacks
# travels with the working tree, 64 MiB in all, so this packs only what importing train.py,
# tune.py and the tests needs: mlflow-skinny (the tracking client, the SQLite store and its
# migrations; not `mlflow`, whose extra 8 MB are the web UI), optuna and their import-time
# dependencies, installed there with --no-deps. `gpu_check.sh --smoke --python PY --wheels DIR`
# on an interpreter lacking them proves on a CPU that the set is enough.
#
#   bash benchmarks/gpu_wheels.sh                 3.12 wheels into .gpu/wheels-cp312, data into .gpu/data
#   bash benchmarks/gpu_wheels.sh --python 3.11   3.11 wheels into .gpu/wheels-cp311
set -euo pipefail
cd "$(dirname "$0")/.."

python=3.12
while (($#)); do
  case "$1" in
    --python) python=${2:?--python needs a version like 3.12}; shift ;;
    *) echo "usage: bash benchmarks/gpu_wheels.sh [--python 3.12]" >&2; exit 2 ;;
  esac
  shift
done
tag=cp${python/./}
wheels=.gpu/wheels-$tag data=.gpu/data

# Pinned to what requirements.txt resolves to, so the GPU machine runs the tested versions.
WHEELS=(
  mlflow-skinny==3.17.2 optuna==5.0.0
  sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 colorlog==6.12.0
  fastapi==0.165.0 starlette==1.10.0 databricks-sdk==0.162.0 cryptography==50.0.2 cffi==2.1.1
  cachetools==7.3.3 sqlparse==0.6.1 python-dotenv==1.2.4 importlib-metadata==9.1.0
  opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2
  opentelemetry-semantic-conventions==0.66b2
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
)

py=python3
[[ -x .venv/bin/python ]] && py=.venv/bin/python
mkdir -p "$wheels" "$data"
grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
# The GPU machine's glibc is 2.39; pip matches each manylinux tag exactly, so name them all.
target=(--only-binary=:all: --python-version "$python" --implementation cp
  --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64)
# This machine's pip config may name local indexes that don't exist; their warnings are noise.
quiet() { "$@" 2> >(grep -v "^WARNING: Location .* is ignored" >&2); }
echo "wheels for CPython $python (manylinux x86_64) -> $wheels"
quiet "$py" -m pip download -q --no-deps "${target[@]}" -d "$wheels" "${WHEELS[@]}" \
  || { echo "error: pip could not download the wheels (is PyPI reachable?)" >&2; exit 2; }
# One version of each: a wheel left from an older pin would stop the whole install there.
for w in "$wheels"/*.whl; do
  name=$(basename "$w" | cut -d- -f1-2 | tr '[:upper:]_' '[:lower:]-')
  printf '%s\n' "${WHEELS[@]}" | tr '[:upper:]_' '[:lower:]-' | sed 's/==/-/' | grep -qxF "$name" \
    || { echo "removing stale $w"; rm -f "$w"; }
done

"$py" -m data_utils >/dev/null \
  || { echo "error: no verified FashionMNIST here to copy; run make data" >&2; exit 2; }
src=$("$py" -c 'from data_utils import find_data_dir; print(find_data_dir())')
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz \
  t10k-labels-idx1-ubyte.gz; do
  cp -u "$src/$f" "$data/$f"
done

# Proof that the set installs there: the same install the check does, for that Python, dry.
quiet "$py" -m pip install -q --dry-run --no-index --no-deps "${target[@]}" \
  --target "$(mktemp -d)" "$wheels"/*.whl \
  || { echo "error: the wheels in $wheels do not install on CPython $python" >&2; exit 2; }
echo "the wheels install on CPython $python manylinux x86_64 (pip --dry-run)"

size() { du -sm "$@" | awk '{s += $1} END {print s}'; }
tree=$(git ls-files -z | du -cm --files0-from=- | tail -1 | cut -f1)
echo "wheels: $(ls "$wheels" | wc -l) files, $(size "$wheels") MiB; data: $(size "$data") MiB;" \
  "tracked tree: $tree MiB; together $(($(size "$wheels" "$data") + tree)) MiB of the 64 MiB a call carries"
echo "carry: [\"$wheels\", \"$data\"]"
