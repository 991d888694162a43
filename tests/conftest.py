import os
import sys
from pathlib import Path

# The test models are tiny: with more than one thread, OpenMP's spinning costs more than
# it gains (about 10x slower on a busy 2-core machine). Set before anything imports
# torch; subprocesses (CLI, editor) inherit it. Benchmarks do not run under pytest.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Tests build diffusers models directly; diffusers imports torchvision through transformers
# when it is installed, which needs the diffusion pack's compatibility step first.
import nodes.diffusion.impl  # noqa: E402,F401

