#!/usr/bin/env bash
# Set up nodeflow in ./.venv (idempotent: re-running does nothing unless pyproject.toml changed).
# torch is installed first, pinned to the CPU build: an unpinned torch would pull a
# multi-gigabyte CUDA build. Set NODEFLOW_TORCH (e.g. "torch==2.13.0") to choose another.
#
# torchvision (needed by spandrel, which loads upscale models) is built for exactly one torch
# release, so it is held to the release that matches the torch installed here:
#     torch 2.N.P  ->  torchvision 0.(N+15).P     e.g. 2.13.0 -> 0.28.0, 2.9.1 -> 0.24.1
# With a torch this rule does not cover, or a torchvision from another index (e.g. the
# PyTorch CPU or CUDA index, installed into .venv before running this), set
# NODEFLOW_TORCHVISION (e.g. "torchvision==0.28.0"). See the README's Quick start.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
torch_spec=${NODEFLOW_TORCH:-torch==2.13.0}
stamp=.venv/.nodeflow-setup

# The torchvision release built for a torch version ("2.13.0+cpu" -> "torchvision==0.28.0").
torchvision_for() {
    local v=${1%%+*} major minor patch
    IFS=. read -r major minor patch <<<"$v"
    if [ "$major" = 2 ] && [[ "$minor" =~ ^[0-9]+$ ]] && [[ "${patch:-0}" =~ ^[0-9]+$ ]]; then
        echo "torchvision==0.$((minor + 15)).${patch:-0}"
    else
        echo "nodeflow: no known torchvision for torch $1; set NODEFLOW_TORCHVISION" >&2
        return 1
    fi
}

[ -x .venv/bin/python ] || "$python" -m venv .venv
want="$(sha256sum pyproject.toml | cut -c1-16) $torch_spec ${NODEFLOW_TORCHVISION:-}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "nodeflow: installing into .venv (first run takes a few minutes)" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "$torch_spec"
    torch_version=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))')
    torchvision_spec=${NODEFLOW_TORCHVISION:-$(torchvision_for "$torch_version")}
    # Hold torch where it is, and torchvision to its match: a dependency that asks for
    # another torch fails loudly instead of pulling gigabytes.
    constraints=$(mktemp)
    printf '%s\n' "torch==${torch_version}" "$torchvision_spec" > "$constraints"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -c "$constraints" -e '.[test]'
    rm -f "$constraints"
    echo "$want" > "$stamp"
fi
