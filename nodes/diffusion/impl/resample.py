"""Resizing by spherical interpolation ("bislerp"), for images and latents.

Bilinear resizing mixes neighbouring pixel vectors linearly, which shrinks their length
where they point different ways (a latent loses contrast). bislerp interpolates each
pixel's direction along the great circle between its two neighbours (slerp) and its length
linearly, one axis at a time (width, then height), with the same sample positions as
bilinear resizing without corner alignment.
"""

from __future__ import annotations

import torch


def resize(samples: torch.Tensor, size: tuple[int, int], method: str) -> torch.Tensor:
    """``samples`` [B, C, H, W] resized to ``size`` (height, width) by ``method``: nearest
    (torch's nearest-exact: its plain "nearest" is shifted by half a cell), bilinear, bicubic,
    area or bislerp. The latent upscale and Deep Shrink's feature resizing share it."""
    import torch.nn.functional as F

    if tuple(samples.shape[-2:]) == tuple(size):
        return samples
    if method == "bislerp":
        return bislerp(samples, *size)
    if method == "nearest":
        return F.interpolate(samples, size=size, mode="nearest-exact")
    if method == "area":
        return F.interpolate(samples, size=size, mode="area")
    return F.interpolate(samples, size=size, mode=method, align_corners=False)


def bislerp(samples: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``samples`` [B, C, H, W] resized to ``height`` x ``width``; vectors are along C."""
    out = _along(samples.float(), width, dim=3)
    return _along(out, height, dim=2).to(samples.dtype)


def _along(samples: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    old = samples.shape[dim]
    if old == size:
        return samples
    position = ((torch.arange(size, dtype=torch.float64) + 0.5) * old / size - 0.5).clamp(0, old - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=old - 1)
    t = (position - low).float()
    a = samples.index_select(dim, low)
    b = samples.index_select(dim, high)
    shape = [1] * samples.ndim
    shape[dim] = size
    return slerp(a, b, t.view(shape))


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per position, vectors along dim 1: directions slerped, lengths lerped."""
    length_a = a.norm(dim=1, keepdim=True)
    length_b = b.norm(dim=1, keepdim=True)
    unit_a = a / length_a.clamp_min(eps)
    unit_b = b / length_b.clamp_min(eps)
    cos = (unit_a * unit_b).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    angle = torch.acos(cos)
    sin = torch.sin(angle)
    straight = sin.abs() < 1e-4  # (nearly) the same or opposite direction: lerp the directions
    safe = torch.where(straight, torch.ones_like(sin), sin)
    weight_a = torch.where(straight, 1.0 - t, torch.sin((1.0 - t) * angle) / safe)
    weight_b = torch.where(straight, t, torch.sin(t * angle) / safe)
    direction = weight_a * unit_a + weight_b * unit_b
    return direction * ((1.0 - t) * length_a + t * length_b)
