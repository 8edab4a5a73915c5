#!/usr/bin/env bash
# Rehearses the GPU check on this CPU, on the path a bare GPU machine takes, so its one call there
# runs right the first time:
#   1. a venv holding only distributions the GPU image holds (benchmarks/gpu_image.txt): torch and
#      torchvision, and the image's other packages that the project imports, at any version;
#   2. the wheelhouse of benchmarks/gpu_wheels.sh for this Python, and the 3.12 set for the GPU
#      (its pip dry run proves every 3.12 wheel installs on CPython 3.12 manylinux x86_64);
#   3. bash benchmarks/gpu_check.sh --smoke with that venv's python: the wheels are installed with
#      --no-deps into a temp folder, exactly as on the GPU machine, and every step runs.
#
#   bash benchmarks/gpu_rehearsal.sh      (the venv is built once, in $TMPDIR, then reused)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${TMPDIR:-/tmp}/fashion-lab-gpu-rehearsal
# What the image holds and the project imports. Versions are free; these match requirements.txt.
IMAGE=(
  torch==2.14.1 torchvision==0.29.1 numpy==2.4.6 pandas==3.1.1 pyarrow==25.0.1
  matplotlib==3.11.2 seaborn==0.13.2 scikit-learn==1.9.1 scipy==1.17.1 psutil==7.2.2
  PyYAML==6.0.4 tqdm==4.70.1 pytest==9.2.0 requests==2.34.2 protobuf==7.36.2 click==8.5.1
  cloudpickle==3.1.3 packaging==26.4 typing_extensions==4.16.0 MarkupSafe==3.0.4 anyio==4.16.0
  zipp==4.1.2 annotated-doc==0.0.7
)
stamp=$venv/.image-$(printf '%s\n' "${IMAGE[@]}" | md5sum | cut -c1-8)
if [[ ! -f $stamp ]]; then
  echo "== building $venv (torch from this machine's disk: about 2 minutes)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "${IMAGE[@]}"
  # Whatever pip pulled in beyond the image (tzdata, say) goes, so nothing here hides a gap.
  extra=$("$venv/bin/pip" list --format=freeze | cut -d= -f1 | tr '[:upper:]_' '[:lower:]-' \
    | grep -vxF -f <(grep -v '^#' benchmarks/gpu_image.txt) || true)
  [[ -n $extra ]] && "$venv/bin/pip" uninstall -q -y $extra
  touch "$stamp"
fi
tag=$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')

echo "== wheelhouses for CPython 3.12 (the GPU machine) and $tag (this rehearsal)"
bash benchmarks/gpu_wheels.sh --python 3.12
[[ $tag == 3.12 ]] || bash benchmarks/gpu_wheels.sh --python "$tag"

echo "== gpu_check.sh --smoke on the image-only venv"
bash benchmarks/gpu_check.sh --smoke --python "$venv/bin/python" --wheels ".gpu/wheels-cp${tag/./}"
