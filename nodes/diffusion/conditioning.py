"""Arithmetic on conditioning: combining prompts and moving along directions between them.

Conditioning is the sequence of token embeddings the UNet cross-attends to. Blends
need equal token counts; a shorter sequence is padded with zero vectors (tokens that
carry nothing), and the pooled embedding of families that have one (SDXL) is blended
the same way. Batches of 1 are broadcast to the other operand's batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable


from nodeflow import Float, Node, NodeError, Output, RunContext, Socket

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

        pooled = None if conditioning.pooled is None else torch.zeros_like(conditioning.pooled)
        return Conditioning(torch.zeros_like(conditioning.embeds), pooled, dict(conditioning.extras))
