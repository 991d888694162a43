#!/usr/bin/env bash
# Set up nodeflow in ./.venv (idempotent: re-running does nothing unless pyproject.toml changed).
# torch is installed first, pinned to the CPU build: an unpinned torch would pull a
# multi-gigabyte CUDA build. Set NODEFLOW_TORCH (e.g. "torch==2.13.0") to choose another.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
torch_spec=${NODEFLOW_TORCH:-torch==2.13.0}
stamp=.venv/.nodeflow-setup
want="$(sha256sum pyproject.toml | cut -c1-16) $torch_spec"

[ -x .venv/bin/python ] || "$python" -m venv .venv
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "nodeflow: installing into .venv (first run takes a few minutes)" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "$torch_spec"
    # Hold torch where it is: a dependency that asks for another torch (or a CUDA-only
    # companion such as torchvision's PyPI build) fails loudly instead of pulling gigabytes.
    constraints=$(mktemp)
    echo "$torch_spec" > "$constraints"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -c "$constraints" -e '.[test]'
    rm -f "$constraints"
    echo "$want" > "$stamp"
fi
