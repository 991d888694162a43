"""The editor as a separate process for window tests and the editor benchmark.

``python tests/editor_gui_app.py WORKFLOW`` opens the real editor with the test node
pack plus two picture nodes (so a run shows an image without any model), remote
controlled through ``NODEFLOW_EDITOR_HOOK`` (tests/support/editor_hook.py, installed as a
frame hook: the product editor carries no test code). ``NODEFLOW_TEST_REGISTRY=installed``
uses the installed packs instead (the default workflow, ComfyUI imports).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from nodeflow import Float, Int, Node, Output, Socket  # noqa: E402

from nodes.diffusion.types import IMAGE  # noqa: E402  (the pack's type, so previews and links match)


class Sunset(Node):
    """A picture that 'denoises' over its steps, sending each estimate as a preview."""

    type = "Sunset"
    category = "pictures"
    description = "Paints a sunset gradient in steps, previewing each step."
    size = Int(256, min=16, max=1024, tooltip="width and height in pixels")
    steps = Int(8, min=1, max=200)
    delay = Float(0.05, min=0.0, max=5.0, tooltip="seconds per step")
    outputs = (Output("image", IMAGE),)

    def run(self, ctx, size, steps, delay):
        y = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None]
        x = np.linspace(0.0, 1.0, size, dtype=np.float32)[None, :]
        final = np.stack([0.95 - 0.3 * y + 0 * x, 0.35 + 0.45 * y * (1 - x), 0.25 + 0.6 * y + 0 * x], axis=-1)
        sun = ((x - 0.5) ** 2 + (y - 0.62) ** 2) < 0.02
        final[sun] = (1.0, 0.9, 0.45)
        rng = np.random.default_rng(0)
        noise = rng.random(final.shape, dtype=np.float32)
        for step in range(1, steps + 1):
            time.sleep(delay)
            t = step / steps
            estimate = np.clip(t * final + (1 - t) * noise, 0, 1)
            ctx.progress(step, steps, estimate[None])
        return np.clip(final, 0, 1)[None]


class ShowImage(Node):
    type = "ShowImage"
    category = "pictures"
    description = "Shows a picture in the editor's preview."
    output_node = True
    image = Socket(IMAGE)
    outputs = (Output("image", IMAGE),)

    def run(self, ctx, image):
        return image


def registry():
    import os

    if os.environ.get("NODEFLOW_TEST_REGISTRY") == "installed":
        from nodeflow.model.registry import default_registry

        return default_registry()
    from tests.support.testpack import make_registry

    reg = make_registry()
    reg.register(Sunset, "tests.editor_gui_app")
    reg.register(ShowImage, "tests.editor_gui_app")
    return reg


if __name__ == "__main__":
    from nodeflow.editor.app import run_app
    from tests.support.editor_hook import EditorHook

    sys.exit(run_app(sys.argv[1] if len(sys.argv) > 1 else None, registry(), frame_hooks=(EditorHook.install,)))
