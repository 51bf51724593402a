#!/bin/bash
# Runs benchmarks/gpu_resnet50.py where ml_collections is missing (the lent
# GPU machines: Python 3.12 with jax/flax/optax/orbax, no ml_collections, no
# TensorFlow). Wheels in .whl/ (not committed) are installed to /tmp/site
# first; fetch them here once with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl \
#       ml_collections==1.1.0
# and carry .whl. Arguments go to gpu_resnet50.py (e.g. --smoke, --batch 64),
# or, when the first one names another script (benchmarks/gpu_ablate.py),
# to that script.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
script=benchmarks/gpu_resnet50.py
if [[ "${1:-}" == *.py ]]; then
  script=$1
  shift
fi
exec python3 "$script" "$@"
