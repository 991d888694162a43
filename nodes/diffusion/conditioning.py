"""Arithmetic on conditioning: combining prompts and moving along directions between them.

Conditioning is the sequence of token embeddings the UNet cross-attends to. Blends
need equal token counts; a shorter sequence is padded with zero vectors (tokens that
carry nothing), and the pooled embedding of families that have one (SDXL) is blended
the same way. Batches of 1 are broadcast to the other operand's batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable


from nodeflow import Float, Int, Node, NodeError, Output, RunContext, Socket

from nodes.diffusion.types import CONDITIONING, Conditioning

if TYPE_CHECKING:
    import torch


class ConditioningCombine(Node):
    type = "ConditioningCombine"
    display_name = "Combine Conditioning"
    category = "conditioning"
    description = (
        "Uses both prompts at once by concatenating their tokens, so the UNet attends to "
        "everything in a single pass (the pooled embedding, where there is one, is the first's)."
    )

    a = Socket(CONDITIONING)
    b = Socket(CONDITIONING)
    outputs = (Output("conditioning", CONDITIONING),)

    def run(self, ctx: RunContext, a: Conditioning, b: Conditioning) -> Conditioning:
        import torch

        first, second = _same_batch(a.embeds, b.embeds)
        return Conditioning(torch.cat([first, _like(second, first)], dim=1), a.pooled, dict(a.extras))


class ConditioningAverage(Node):
    type = "ConditioningAverage"
    display_name = "Average Conditioning"
    category = "conditioning"
    description = "A weighted blend of two conditionings: weight x a + (1 - weight) x b."

    a = Socket(CONDITIONING)
    b = Socket(CONDITIONING)
    weight = Float(0.5, min=0.0, max=1.0, step=0.05, tooltip="share of a; 1 is a alone, 0 is b alone")
    outputs = (Output("conditioning", CONDITIONING),)

    def run(self, ctx: RunContext, a: Conditioning, b: Conditioning, weight: float) -> Conditioning:
        embeds_a, embeds_b = _aligned(a.embeds, b.embeds)
        pooled = _blend_pooled(a.pooled, b.pooled, lambda pa, pb: weight * pa + (1.0 - weight) * pb)
        return Conditioning(weight * embeds_a + (1.0 - weight) * embeds_b, pooled, dict(a.extras))


class ConditioningDirection(Node):
    type = "ConditioningDirection"
    display_name = "Conditioning Direction"
    category = "conditioning"
    description = (
        "Moves base along the direction from b to a: base + strength x (a - b). For "
        'example base "a man", a "a man wearing a hat", b "a man" adds a hat.'
    )

    base = Socket(CONDITIONING)
    a = Socket(CONDITIONING, tooltip="where the direction points to")
    b = Socket(CONDITIONING, tooltip="where the direction starts")
    strength = Float(1.0, min=-10.0, max=10.0, step=0.05, tooltip="how far to move; negative moves away")
    outputs = (Output("conditioning", CONDITIONING),)

    def run(
        self, ctx: RunContext, base: Conditioning, a: Conditioning, b: Conditioning, strength: float
    ) -> Conditioning:
        embeds_base, embeds_a, embeds_b = _aligned(base.embeds, a.embeds, b.embeds)
        embeds = embeds_base + strength * (embeds_a - embeds_b)
        pooled = None
        if base.pooled is not None and a.pooled is not None and b.pooled is not None:
            pb, pa, pbb = _aligned(base.pooled, a.pooled, b.pooled)
            pooled = pb + strength * (pa - pbb)
        return Conditioning(embeds, pooled if pooled is not None else base.pooled, dict(base.extras))


def _aligned(*tensors: "torch.Tensor") -> list["torch.Tensor"]:
    """The tensors broadcast to one batch, zero-padded to one token count, in the
    first's dtype and device."""
    import torch.nn.functional as F

    batched = _same_batch(*tensors)
    if batched[0].ndim == 2:  # pooled embeddings have no token axis
        return [_like(t, batched[0]) for t in batched]
    tokens = max(t.shape[1] for t in batched)
    return [_like(F.pad(t, (0, 0, 0, tokens - t.shape[1])), batched[0]) for t in batched]


def _same_batch(*tensors: "torch.Tensor") -> list["torch.Tensor"]:
    batch = max(t.shape[0] for t in tensors)
    out = []
    for t in tensors:
        if t.shape[0] not in (1, batch):
            sizes = ", ".join(str(x.shape[0]) for x in tensors)
            raise NodeError(f"the conditionings have batches of {sizes}, which cannot be matched")
        out.append(t.expand(batch, *t.shape[1:]) if t.shape[0] != batch else t)
    if len({t.shape[-1] for t in out}) > 1:
        dims = ", ".join(str(t.shape[-1]) for t in out)
        raise NodeError(f"the conditionings have embedding sizes {dims}: they come from different text encoders")
    return out


def _like(tensor: "torch.Tensor", reference: "torch.Tensor") -> "torch.Tensor":
    return tensor.to(device=reference.device, dtype=reference.dtype)


def _blend_pooled(
    pa: "torch.Tensor | None", pb: "torch.Tensor | None", blend: Callable[..., "torch.Tensor"]
) -> "torch.Tensor | None":
    """``blend`` of two pooled embeddings, or the one that exists."""
    if pa is None or pb is None:
        return pa if pa is not None else pb
    pa, pb = _aligned(pa, pb)
    return blend(pa, pb)


class ConditioningZeroOut(Node):
    type = "ConditioningZeroOut"
    display_name = "Zero Conditioning"
    category = "conditioning"
    description = (
        "The conditioning with every embedding set to zero (pooled too): an empty-prompt "
        "stand-in some SDXL and Turbo workflows use as the negative."
    )

    conditioning = Socket(CONDITIONING)
    outputs = (Output("conditioning", CONDITIONING),)

    def run(self, ctx: RunContext, conditioning: Conditioning) -> Conditioning:
        import torch

        from dataclasses import replace

        pooled = None if conditioning.pooled is None else torch.zeros_like(conditioning.pooled)
        zeroed = [replace(p, embeds=torch.zeros_like(p.embeds), pooled=None if p.pooled is None else torch.zeros_like(p.pooled))
                  for p in conditioning.others]
        return replace(conditioning, embeds=torch.zeros_like(conditioning.embeds), pooled=pooled, others=tuple(zeroed))


class ConditioningStack(Node):
    type = "ConditioningStack"
    display_name = "Stack Conditioning"
    category = "conditioning"
    description = (
        "Uses both conditionings, each in its own UNet pass, and averages the predictions "
        "weighted by strength over their areas (ComfyUI's Conditioning Combine). Unlike "
        "Combine Conditioning, each keeps its own area and step range."
    )

    a = Socket(CONDITIONING)
    b = Socket(CONDITIONING)
    outputs = (Output("conditioning", CONDITIONING),)

    def run(self, ctx: RunContext, a: Conditioning, b: Conditioning) -> Conditioning:
        from dataclasses import replace

        if a.embeds.shape[-1] != b.embeds.shape[-1]:
            raise NodeError(f"the conditionings have embedding sizes {a.embeds.shape[-1]}, {b.embeds.shape[-1]}: "
                            "they come from different text encoders", field="b")
        return replace(a, others=(*a.others, *b.parts()))


class ConditioningSetArea(Node):
    type = "ConditioningSetArea"
    display_name = "Conditioning Area"
    category = "conditioning"
    description = (
        "Applies the conditioning only to a rectangle of the image (regional prompting): the "
        "UNet sees that part of the latent with this prompt. Stack it with a prompt for the "
        "whole image; where areas overlap, predictions are averaged by strength."
    )

    conditioning = Socket(CONDITIONING)
    width = Int(64, min=8, max=16384, step=8, tooltip="in pixels")
    height = Int(64, min=8, max=16384, step=8, tooltip="in pixels")
    x = Int(0, min=0, max=16384, step=8, tooltip="left edge in pixels")
    y = Int(0, min=0, max=16384, step=8, tooltip="top edge in pixels")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01, tooltip="its weight where areas overlap")
    outputs = (Output("conditioning", CONDITIONING),)

    def run(self, ctx: RunContext, conditioning: Conditioning, width: int, height: int, x: int, y: int,
            strength: float) -> Conditioning:
        from dataclasses import replace

        return replace(conditioning, area=(width, height, x, y), area_fraction=None, strength=strength, mask_bounds=False)


class ConditioningSetTimestepRange(Node):
    type = "ConditioningSetTimestepRange"
    display_name = "Conditioning Step Range"
    category = "conditioning"
    description = (
        "Applies the conditioning only during part of the schedule, from `start` to `end` "
        "(0 = the first, noisiest step, 1 = the end), e.g. one prompt for the layout and "
        "another for the details."
    )

    conditioning = Socket(CONDITIONING)
    start = Float(0.0, min=0.0, max=1.0, step=0.001)
    end = Float(1.0, min=0.0, max=1.0, step=0.001)
    outputs = (Output("conditioning", CONDITIONING),)

    @classmethod
    def check_values(cls, values: dict) -> dict[str, str]:
        if values.get("start", 0.0) > values.get("end", 1.0):
            return {"end": f"end {values['end']} is before start {values['start']}"}
        return {}

    def run(self, ctx: RunContext, conditioning: Conditioning, start: float, end: float) -> Conditioning:
        from dataclasses import replace

        return replace(conditioning, timestep_range=(start, end))
