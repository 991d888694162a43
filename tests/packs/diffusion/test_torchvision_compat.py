"""torchvision imports beside any torch build once the diffusion pack is imported: with
PyPI's CUDA build of torchvision beside a CPU torch (what scripts/setup.sh installs) its
compiled operators do not load, and the compatibility step declares the two schemas its
meta registrations need; where they do load, it leaves them alone. Each case runs in a
fresh interpreter: torchvision and torch's operator registry are per process."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision not installed")


def _python(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_pack_makes_diffusers_transformers_spandrel_and_torchvision_import():
    found = _python(
        "import json, nodes.diffusion\n"
        "from diffusers import StableDiffusionPipeline, AutoencoderKL\n"
        "import transformers.image_utils, spandrel, torchvision, torch\n"
        "from torchvision.transforms import functional\n"
        "from nodes.diffusion.impl import torchvision_compat as compat\n"
        "picture = functional.resize(torch.rand(3, 8, 8), [4, 4], antialias=True)\n"
        "print(json.dumps({'outcome': compat.outcome, 'has_ops': torchvision.extension._has_ops(),\n"
        "                  'declared': compat._library is not None, 'resized': list(picture.shape)}))\n"
    )
    assert found["resized"] == [3, 4, 4]  # what spandrel's architectures use of torchvision works
    if found["has_ops"]:  # a torchvision whose compiled operators load here: nothing was declared
        assert found["outcome"] == "torchvision's compiled operators load" and not found["declared"]
    else:
        assert found["declared"] and "schemas were declared" in found["outcome"]


def test_operators_already_registered_are_left_alone():
    """As when torchvision's own compiled library has loaded (simulated by registering the
    two operators first, as that library does): nothing is declared and torchvision imports."""
    found = _python(
        "import json, torch\n"
        "own = torch.library.Library('torchvision', 'DEF')\n"
        "own.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')\n"
        "own.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')\n"
        "import nodes.diffusion\n"
        "import torchvision\n"
        "from nodes.diffusion.impl import torchvision_compat as compat\n"
        "print(json.dumps({'outcome': compat.outcome, 'declared': compat._library is not None}))\n"
    )
    assert found == {"outcome": "torchvision's operators were already registered", "declared": False}


def test_a_library_that_loads_without_the_operators_still_gets_them_declared():
    found = _python(
        "import json, torch, pathlib\n"
        "from nodes.diffusion.impl import torchvision_compat as compat\n"
        "compat.uninstall()\n"
        "lib = next(pathlib.Path(torch.__file__).parent.joinpath('lib').glob('libc10.so*'))\n"
        "outcome = compat.prepare(lib)\n"
        "import torchvision\n"
        "print(json.dumps({'outcome': outcome, 'declared': compat._library is not None}))\n"
    )
    assert found["declared"] and found["outcome"].endswith("their schemas were declared")
