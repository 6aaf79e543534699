#!/usr/bin/env bash
# One-time (idempotent) set-up: a virtual environment in .venv with the CPU build of
# PyTorch and zotheory installed editable with its test dependencies.
# Usage: bash scripts/setup.sh   (core, tests and the LLM side: extras dev,llm)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch==2.13.0 resolves to the local CPU wheel on this project's machines; any
# other spec would download a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet torch==2.13.0
# The package's dependencies (pyproject.toml) include scikit-learn, whose bundled data sets the
# logistic / squared-hinge problems use; it does not depend on torch, so the pin above holds.
.venv/bin/python -m pip install --quiet -e ".[${ZOTHEORY_EXTRAS:-dev,llm}]"
echo "zotheory set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
