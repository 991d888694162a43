"""Which block of the original SD UNet a diffusers UNet weight belongs to.

ComfyUI's block merges (ModelMergeBlocks, ModelMergeSDXL) name blocks as the original
(LDM) UNet does: ``input_blocks.N``, ``middle_block.N``, ``output_blocks.N``, plus
``time_embed``, ``label_emb`` and ``out``. nodeflow's UNets are diffusers
``UNet2DConditionModel``s, so each weight name is mapped to its LDM block by the same
counting the original layout uses: input block 0 is ``conv_in``; each down level has
``layers_per_block`` resnet(+attention) blocks and then its downsampler; the middle is
resnet, attention, resnet; each up level has ``layers_per_block + 1`` blocks, the
upsampler inside the last.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

_TOP = {"conv_in": "input_blocks.0", "time_embedding": "time_embed", "add_embedding": "label_emb",
        "class_embedding": "label_emb", "conv_norm_out": "out", "conv_out": "out"}


def ldm_block(key: str, config: Mapping[str, Any]) -> str | None:
    """The LDM block of diffusers UNet weight ``key`` (e.g. ``input_blocks.4``), None for
    weights outside them (e.g. an encoder projection)."""
    top = _TOP.get(key.split(".", 1)[0])
    if top is not None:
        return top
    down = _layers(config, len(config["down_block_types"]))
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.", key):
        level, kind, layer = int(m[1]), m[2], int(m[3])
        first = 1 + sum(n + 1 for n in down[:level])
        return f"input_blocks.{first + (down[level] if kind == 'downsamplers' else layer)}"
    if m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.", key):
        return f"middle_block.{1 if m[1] == 'attentions' else 2 * int(m[2])}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.", key):
        up = list(reversed(down))
        level, kind, layer = int(m[1]), m[2], int(m[3])
        first = sum(n + 1 for n in up[:level])
        return f"output_blocks.{first + (up[level] if kind == 'upsamplers' else layer)}"
    return None


def ratio_for(block: str | None, ratios: Mapping[str, float], default: float) -> float:
    """ComfyUI's rule: the ratio of the longest name that the weight's LDM name starts
    with (``out`` covers ``output_blocks.*`` too), else ``default``."""
    if block is None:
        return default
    name = block + "."
    best = max((n for n in ratios if name.startswith(n)), key=len, default=None)
    return default if best is None else ratios[best]


def _layers(config: Mapping[str, Any], levels: int) -> Sequence[int]:
    per = config["layers_per_block"]
    return [int(per)] * levels if isinstance(per, int) else [int(n) for n in per]
