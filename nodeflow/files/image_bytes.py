"""Images held in memory (a node's IMAGE output) as PNG files' bytes.

An image a workflow shows but does not save (Preview Image) still has to reach a client:
the server keeps it in its temp folder, and a Ray actor, which shares no folder with the
server, sends the bytes back. Both encode it here, the same way. Torch is not imported:
a tensor is recognised by its ``detach`` method.
"""

from __future__ import annotations

import io
from typing import Any


def png_batch(images: Any) -> list[bytes]:
    """Each image of a batch (``[B, H, W, C]`` or ``[H, W, C]`` in 0..1; a torch tensor or
    an array) as the bytes of an 8-bit PNG (RGB, or grey for one channel)."""
    import numpy as np
    from PIL import Image

    data = images.detach().cpu().float().numpy() if hasattr(images, "detach") else np.asarray(images, dtype=float)
    if data.ndim == 3:
        data = data[None]
    encoded = []
    for pixels in np.clip(data * 255.0 + 0.5, 0, 255).astype(np.uint8):
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., :3] if pixels.shape[-1] >= 3 else pixels[..., 0]).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def image_outputs(cls: Any, values: dict[str, Any]) -> list[Any]:
    """The IMAGE values among a node's outputs (``cls`` its node class), in declared order."""
    return [values[output.name] for output in cls.outputs
            if getattr(output.type, "name", output.type) == "IMAGE" and values.get(output.name) is not None]
