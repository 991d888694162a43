"""Operations on LATENT batches: paste, blend, crop, pick from and repeat a batch, set a noise mask.

Positions and sizes are in pixels, as the user sees the image, and are divided by the
model family's VAE scale factor (8 for Stable Diffusion); a value that is not a multiple
of it is rounded down, as ComfyUI does.
"""

from __future__ import annotations

from typing import Any

from nodeflow import Bool, Choice, Float, Int, Node, NodeError, Output, RunContext, Socket

from nodes.diffusion.types import LATENT, MASK, Latent

from nodes.diffusion.latent import DEFAULT_FAMILY


def _factor(latent: Latent) -> int:
    return (latent.family or DEFAULT_FAMILY).vae_scale_factor


def _with(latent: Latent, samples: Any, noise_mask: Any = None) -> Latent:
    """A latent like ``latent`` with other samples (of the same batch: its batch index stays)."""
    return Latent(samples, latent.family, noise_mask, latent.batch_index)


def batch_index_of(latent: Latent) -> tuple[int, ...]:
    """Which noise draw each latent of the batch gets (the usual: the i-th the i-th)."""
    return latent.batch_index if latent.batch_index is not None else tuple(range(latent.samples.shape[0]))


class LatentCompositeMasked(Node):
    type = "LatentCompositeMasked"
    display_name = "Paste Latent (masked)"
    category = "latent"
    description = (
        "Pastes `source` into `destination` with its top-left corner at (x, y), only where the "
        "mask is 1 (mixed where it is between); the part beyond the destination's edges is cut off."
    )

    destination = Socket(LATENT, tooltip="the latent pasted into; the result has its size, batch and noise mask")
    source = Socket(LATENT, tooltip="the latent pasted")
    x = Int(0, min=0, max=16384, step=8, tooltip="left edge of the source, in pixels")
    y = Int(0, min=0, max=16384, step=8, tooltip="top edge of the source, in pixels")
    resize_source = Bool(False, tooltip="resize the source (bilinear) to the destination's size first")
    mask = Socket(MASK, optional=True, tooltip="where the source shows (1); resized to the source's size; none = all of it")
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, destination: Latent, source: Latent, x: int, y: int, resize_source: bool,
            mask: Any = None) -> Latent:
        from nodes.diffusion.image_ops import paste

        if source.samples.shape[1] != destination.samples.shape[1]:
            raise NodeError(f"the source has {source.samples.shape[1]} channels, the destination "
                            f"{destination.samples.shape[1]}", field="source")
        factor = _factor(destination)
        pasted = paste(destination.samples.movedim(1, -1), source.samples.movedim(1, -1), x // factor, y // factor,
                       resize_source, mask)
        return _with(destination, pasted.movedim(-1, 1).contiguous().to(destination.samples.dtype), destination.noise_mask)


class LatentAdd(Node):
    type = "LatentAdd"
    display_name = "Add Latents"
    category = "latent"
    description = "samples1 + samples2, cell by cell (samples2 resized to samples1's size and batch first)."

    samples1 = Socket(LATENT)
    samples2 = Socket(LATENT, tooltip="cropped to samples1's aspect ratio at the centre and resized if the sizes differ")
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, samples1: Latent, samples2: Latent) -> Latent:
        return _with(samples1, samples1.samples + _shaped_like(samples1, samples2), samples1.noise_mask)


class LatentSubtract(Node):
    type = "LatentSubtract"
    display_name = "Subtract Latents"
    category = "latent"
    description = "samples1 - samples2, cell by cell (samples2 resized to samples1's size and batch first)."

    samples1 = Socket(LATENT)
    samples2 = Socket(LATENT, tooltip="cropped to samples1's aspect ratio at the centre and resized if the sizes differ")
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, samples1: Latent, samples2: Latent) -> Latent:
        return _with(samples1, samples1.samples - _shaped_like(samples1, samples2), samples1.noise_mask)


class LatentMultiply(Node):
    type = "LatentMultiply"
    display_name = "Scale Latent"
    category = "latent"
    description = "The latent times a number: below 1 towards the mean-zero latent, negative flips it."

    samples = Socket(LATENT)
    multiplier = Float(1.0, min=-10.0, max=10.0, step=0.01)
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, samples: Latent, multiplier: float) -> Latent:
        return _with(samples, samples.samples * multiplier, samples.noise_mask)


def _shaped_like(target: Latent, other: Latent, field: str = "samples2") -> Any:
    """``other``'s samples with ``target``'s channels checked, its size (centre crop to the
    aspect ratio, then bilinear) and its batch (cycled)."""
    import torch

    have = _sized_like(target, other, field)
    return have[torch.arange(target.samples.shape[0]) % have.shape[0]]


def _sized_like(target: Latent, other: Latent, field: str) -> Any:
    """``other``'s samples with ``target``'s channels checked (else an error on ``field``)
    and resized to its size: cut at the centre to its aspect ratio, then bilinear."""
    want, have = target.samples, other.samples.to(target.samples)
    if have.shape[1] != want.shape[1]:
        first = "samples1" if field == "samples2" else "the first latent"
        raise NodeError(f"{field} has {have.shape[1]} channels, {first} {want.shape[1]}", field=field)
    return _fitted(have, *want.shape[-2:])


def _fitted(planes: Any, height: int, width: int) -> Any:
    """[B, C, H, W] cut at the centre to height:width's aspect ratio and resized (bilinear)."""
    import torch.nn.functional as F

    from nodes.diffusion.image_ops import center_crop

    if tuple(planes.shape[-2:]) == (height, width):
        return planes
    cropped = center_crop(planes.movedim(1, -1), height, width).movedim(-1, 1)
    return F.interpolate(cropped, size=(height, width), mode="bilinear", align_corners=False)


class LatentComposite(Node):
    type = "LatentComposite"
    display_name = "Paste Latent"
    category = "latent"
    description = (
        "Pastes `source` into `destination` with its top-left corner at (x, y); with "
        "`feather`, the source's inner edges fade into the destination over that many pixels."
    )

    destination = Socket(LATENT)
    source = Socket(LATENT)
    x = Int(0, min=0, max=16384, step=8, tooltip="in pixels")
    y = Int(0, min=0, max=16384, step=8, tooltip="in pixels")
    feather = Int(0, min=0, max=16384, step=8, tooltip="in pixels; 0 is a hard edge")
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, destination: Latent, source: Latent, x: int, y: int, feather: int) -> Latent:
        import torch

        factor = _factor(destination)
        x, y, feather = x // factor, y // factor, feather // factor
        out = destination.samples.clone()
        src = source.samples.to(out)
        if src.shape[1] != out.shape[1]:
            raise NodeError(f"the source has {src.shape[1]} channels, the destination {out.shape[1]}", field="source")
        height, width = out.shape[-2:]
        h, w = min(src.shape[-2], height - y), min(src.shape[-1], width - x)
        if h <= 0 or w <= 0:
            return _with(destination, out, destination.noise_mask)
        src = src[..., :h, :w]
        if src.shape[0] != out.shape[0]:
            src = src[:1].expand(out.shape[0], -1, -1, -1)
        weight = torch.ones((h, w), dtype=out.dtype, device=out.device)
        if feather:
            for i in range(feather):
                edge = (i + 1) / feather
                if y > 0:
                    weight[i, :] = torch.clamp(weight[i, :], max=edge)
                if y + h < height:
                    weight[h - 1 - i, :] = torch.clamp(weight[h - 1 - i, :], max=edge)
                if x > 0:
                    weight[:, i] = torch.clamp(weight[:, i], max=edge)
                if x + w < width:
                    weight[:, w - 1 - i] = torch.clamp(weight[:, w - 1 - i], max=edge)
        region = out[..., y:y + h, x:x + w]
        out[..., y:y + h, x:x + w] = weight * src + (1 - weight) * region
        return _with(destination, out, destination.noise_mask)


class LatentBlend(Node):
    type = "LatentBlend"
    display_name = "Blend Latents"
    category = "latent"
    description = (
        "`blend_factor` of `first` plus the rest of `second`, value by value (1 keeps `first`, "
        "0 gives `second`). A `second` of another size is first resized to `first`'s, cut to its "
        "aspect ratio from the middle, as ComfyUI's Latent Blend does; `first`'s noise mask is kept."
    )

    first = Socket(LATENT)
    second = Socket(LATENT)
    blend_factor = Float(0.5, min=0.0, max=1.0, step=0.01, tooltip="weight of `first`")
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, first: Latent, second: Latent, blend_factor: float) -> Latent:
        a = first.samples
        b = second.samples.to(a)
        if b.shape[1] != a.shape[1]:
            raise NodeError(f"the second latent has {b.shape[1]} channels, the first {a.shape[1]}", field="second")
        if b.shape[-2:] != a.shape[-2:]:
            b = _resize_cut(b, a.shape[-2], a.shape[-1])
        if b.shape[0] != a.shape[0] and 1 not in (a.shape[0], b.shape[0]):
            raise NodeError(f"the batches differ: {a.shape[0]} and {b.shape[0]} latents", field="second")
        return _with(first, a * blend_factor + b * (1 - blend_factor), first.noise_mask)


def _resize_cut(samples: Any, height: int, width: int) -> Any:
    """``samples`` cut from the middle to height:width's aspect ratio, then resized bicubically."""
    import torch.nn.functional as F

    h, w = samples.shape[-2:]
    if w * height > h * width:  # too wide: the same width off each side
        cut = round((w - h * width / height) / 2)
        samples = samples[..., :, cut:w - cut]
    elif w * height < h * width:  # too tall: the same height off top and bottom
        cut = round((h - w * height / width) / 2)
        samples = samples[..., cut:h - cut, :]
    return F.interpolate(samples, size=(height, width), mode="bicubic", align_corners=False)


class LatentCrop(Node):
    type = "LatentCrop"
    display_name = "Crop Latent"
    category = "latent"
    description = "The width x height rectangle (in pixels) at (x, y) of the latents."

    latent = Socket(LATENT)
    width = Int(512, min=8, max=16384, step=8)
    height = Int(512, min=8, max=16384, step=8)
    x = Int(0, min=0, max=16384, step=8)
    y = Int(0, min=0, max=16384, step=8)
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, latent: Latent, width: int, height: int, x: int, y: int) -> Latent:
        factor = _factor(latent)
        samples = latent.samples
        h, w = samples.shape[-2:]
        left, top = min(x // factor, w - 1), min(y // factor, h - 1)
        return _with(latent, samples[..., top:top + height // factor, left:left + width // factor].clone())


class LatentFromBatch(Node):
    type = "LatentFromBatch"
    display_name = "Latents from Batch"
    category = "latent"
    description = "`length` latents of the batch, starting at `batch_index` (0 = the first)."

    latent = Socket(LATENT)
    batch_index = Int(0, min=0, max=63)
    length = Int(1, min=1, max=64)
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, latent: Latent, batch_index: int, length: int) -> Latent:
        samples = latent.samples
        start = min(batch_index, samples.shape[0] - 1)
        mask = latent.noise_mask
        if mask is not None and mask.shape[0] > 1:
            mask = mask[start:start + length]
        # Each latent keeps the noise it had in the batch, so it samples as it did there.
        index = batch_index_of(latent)[start:start + length]
        return Latent(samples[start:start + length].clone(), latent.family, mask, index)


class RepeatLatentBatch(Node):
    type = "RepeatLatentBatch"
    display_name = "Repeat Latent Batch"
    category = "latent"
    description = "The batch repeated `amount` times (e.g. to run several variations of one image-to-image latent)."

    latent = Socket(LATENT)
    amount = Int(1, min=1, max=64)
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, latent: Latent, amount: int) -> Latent:
        mask = latent.noise_mask
        if mask is not None and mask.shape[0] > 1:
            mask = mask.repeat(amount, 1, 1)
        index = latent.batch_index
        if index is not None:  # each copy gets noise of its own, past the numbers before it (as ComfyUI)
            span = max(index) - min(index) + 1
            index = tuple(i + copy * span for copy in range(amount) for i in index)
        return Latent(latent.samples.repeat(amount, 1, 1, 1), latent.family, mask, index)


class SetLatentNoiseMask(Node):
    type = "SetLatentNoiseMask"
    display_name = "Set Latent Noise Mask"
    category = "latent"
    description = (
        "Marks where a Sampler may change the latent: inside the mask (1) it denoises, "
        "outside (0) the latent is kept, re-noised to each step's level so the edges blend."
    )

    latent = Socket(LATENT)
    mask = Socket(MASK)
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, latent: Latent, mask: Any) -> Latent:
        if mask.ndim == 2:
            mask = mask[None]
        return _with(latent, latent.samples, mask.float())


# ---------------------------------------------------------------- batches, interpolation, transforms (issue 11)
class LatentBatch(Node):
    type = "LatentBatch"
    display_name = "Batch Latents"
    category = "latent"
    description = (
        "samples1's batch followed by samples2's, samples2 first cut at the centre to samples1's "
        "aspect ratio and resized (bilinear) if the sizes differ. Each part keeps the starting "
        "noise it would have alone (as ComfyUI: the second part's noise numbers start again at 0)."
    )

    samples1 = Socket(LATENT, tooltip="the first latents; the result has their size")
    samples2 = Socket(LATENT, tooltip="appended after samples1, resized to samples1's size")
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, samples1: Latent, samples2: Latent) -> Latent:
        import torch

        second = _sized_like(samples1, samples2, "samples2")
        mask = None
        if samples1.noise_mask is not None or samples2.noise_mask is not None:
            height, width = samples1.samples.shape[-2:]
            mask = torch.cat([_batch_mask(samples1, height, width, fit=False),
                              _batch_mask(samples2, height, width, fit=True)])
        index = batch_index_of(samples1) + batch_index_of(samples2)
        return Latent(torch.cat([samples1.samples, second]), samples1.family, mask, index)


def _batch_mask(latent: Latent, height: int, width: int, fit: bool) -> Any:
    """``latent``'s noise mask (all ones without one) at height x width latent cells, one per
    latent of its batch; ``fit`` cuts it as the latent was (centre, aspect ratio) first."""
    import torch
    import torch.nn.functional as F

    from nodes.diffusion.masks import mask_like

    batch = latent.samples.shape[0]
    if latent.noise_mask is None:
        return torch.ones((batch, height, width), dtype=torch.float32, device=latent.samples.device)
    mask = latent.noise_mask.float()
    mask = mask if mask.ndim == 3 else mask.reshape(-1, *mask.shape[-2:])
    own_h, own_w = latent.samples.shape[-2:]
    mask = mask_like(mask, own_h, own_w)  # first onto its own latent's cells
    if fit:
        mask = _fitted(mask[:, None], height, width)[:, 0]
    elif (own_h, own_w) != (height, width):
        mask = F.interpolate(mask[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return mask[torch.arange(batch) % mask.shape[0]].to(latent.samples.device)


class LatentInterpolate(Node):
    type = "LatentInterpolate"
    display_name = "Interpolate Latents"
    category = "latent"
    description = (
        "Moves from samples2 (ratio 0) to samples1 (ratio 1) keeping the latent vectors' length: at "
        "each position the vector over the channels is split into its direction and length, the "
        "directions are mixed and made unit length again, and the lengths are mixed by `ratio`. "
        "A plain blend shrinks the vectors where the two disagree, which greys the image."
    )

    samples1 = Socket(LATENT, tooltip="the latent at ratio 1; the result has its size, batch and noise mask")
    samples2 = Socket(LATENT, tooltip="the latent at ratio 0; resized to samples1's size and its batch cycled")
    ratio = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="samples1's share: 1 is samples1, 0 is samples2")
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, samples1: Latent, samples2: Latent, ratio: float) -> Latent:
        a = samples1.samples
        b = _shaped_like(samples1, samples2)
        direction_a, length_a = _polar(a)
        direction_b, length_b = _polar(b)
        direction, _ = _polar(direction_a * ratio + direction_b * (1.0 - ratio))
        mixed = direction * (length_a * ratio + length_b * (1.0 - ratio))
        return _with(samples1, mixed.to(a.dtype), samples1.noise_mask)


def _polar(samples: Any) -> tuple[Any, Any]:
    """[B, C, h, w] as unit vectors over the channels and their lengths [B, 1, h, w]; a zero
    vector has direction zero."""
    import torch

    length = torch.linalg.vector_norm(samples.float(), dim=1, keepdim=True)
    direction = torch.where(length > 0, samples / length.clamp(min=torch.finfo(torch.float32).tiny), 0.0)
    return direction, length


LATENT_FLIPS = ("x-axis: vertically", "y-axis: horizontally")


class LatentFlip(Node):
    type = "LatentFlip"
    display_name = "Flip Latent"
    category = "latent"
    description = (
        "Mirrors the latents (and their noise mask) upside down (about the x axis) or left to "
        "right (about the y axis), as Flip Image does to pixels."
    )

    latent = Socket(LATENT)
    flip_method = Choice(LATENT_FLIPS, default=LATENT_FLIPS[0])
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, latent: Latent, flip_method: str) -> Latent:
        axis = -2 if flip_method == LATENT_FLIPS[0] else -1
        mask = latent.noise_mask.flip(axis) if latent.noise_mask is not None else None
        return _with(latent, latent.samples.flip(axis), mask)


ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")


class LatentRotate(Node):
    type = "LatentRotate"
    display_name = "Rotate Latent"
    category = "latent"
    description = "Turns the latents (and their noise mask) clockwise by a quarter, a half or three quarters."

    latent = Socket(LATENT)
    rotation = Choice(ROTATIONS, default="none", tooltip="clockwise; 90 and 270 swap width and height")
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, latent: Latent, rotation: str) -> Latent:
        turns = ROTATIONS.index(rotation)
        mask = latent.noise_mask
        if mask is not None:
            mask = mask.rot90(turns, dims=(-1, -2)).contiguous()
        return _with(latent, latent.samples.rot90(turns, dims=(-1, -2)).contiguous(), mask)


SEED_BEHAVIORS = ("random", "fixed")


class LatentBatchSeedBehavior(Node):
    type = "LatentBatchSeedBehavior"
    display_name = "Batch Seed Behavior"
    category = "latent"
    description = (
        "How a Sampler's seeded noise is shared over the batch. fixed: every latent starts from "
        "the first one's noise (variations come from the latents themselves, e.g. a blend or "
        "different image-to-image inputs); random: each latent gets its own draw, as usual."
    )

    latent = Socket(LATENT)
    seed_behavior = Choice(SEED_BEHAVIORS, default="fixed",
                           tooltip="fixed: the first latent's noise for all; random: the usual draw per latent")
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, latent: Latent, seed_behavior: str) -> Latent:
        index = None
        if seed_behavior == "fixed":
            index = (batch_index_of(latent)[0],) * latent.samples.shape[0]
        return Latent(latent.samples, latent.family, latent.noise_mask, index)


# ComfyUI also offers t / -t (video frames), which image latents do not have: refused by the choice.
CONCAT_SIDES = ("x", "-x", "y", "-y")


class LatentConcat(Node):
    type = "LatentConcat"
    display_name = "Join Latents Side by Side"
    category = "latent"
    description = (
        "samples2 joined to samples1 along the width (x: on the right, -x: on the left) or the "
        "height (y: below, -y: above), e.g. to paint a wider picture from two halves. samples2's "
        "batch is cycled or cut to samples1's; the other side must be as long. Noise masks are "
        "joined the same way (everywhere free for a part without one)."
    )

    samples1 = Socket(LATENT, tooltip="the result keeps its batch and batch index")
    samples2 = Socket(LATENT, tooltip="as high (x) or as wide (y) as samples1")
    dim = Choice(CONCAT_SIDES, default="x", tooltip="x / -x: beside samples1, right / left; y / -y: below / above")
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, samples1: Latent, samples2: Latent, dim: str) -> Latent:
        import torch

        a = samples1.samples
        b = samples2.samples.to(a)
        b = b[torch.arange(a.shape[0]) % b.shape[0]]
        axis = -1 if "x" in dim else -2
        other = -2 if axis == -1 else -1
        if b.shape[1] != a.shape[1] or b.shape[other] != a.shape[other]:
            side = "height" if axis == -1 else "width"
            raise NodeError(f"samples2 is {tuple(b.shape[1:])} (channels, height, width), samples1 "
                            f"{tuple(a.shape[1:])}: joining along {dim[-1]} needs the same channels and {side}",
                            field="samples2")
        first, second = (b, a) if dim.startswith("-") else (a, b)
        mask = None
        if samples1.noise_mask is not None or samples2.noise_mask is not None:
            masks = [_batch_mask(samples1, *a.shape[-2:], fit=False),
                     _batch_mask(samples2, *samples2.samples.shape[-2:], fit=False)]
            masks[1] = masks[1][torch.arange(a.shape[0]) % masks[1].shape[0]]
            mask = torch.cat(masks[::-1] if dim.startswith("-") else masks, dim=axis)
        return Latent(torch.cat([first, second], dim=axis), samples1.family, mask, samples1.batch_index)


class LatentCut(Node):
    type = "LatentCut"
    display_name = "Cut Latent"
    category = "latent"
    description = (
        "`amount` latent cells of the width (x) or height (y) from `index` on, in latent cells "
        "(8 pixels each for Stable Diffusion), as ComfyUI counts them; a negative index counts "
        "from the end. An index past the end keeps the last cell."
    )

    latent = Socket(LATENT)
    dim = Choice(("x", "y"), default="x", tooltip="x: columns, y: rows")
    index = Int(0, min=-16384, max=16384, tooltip="the first cell kept, in latent cells; negative: from the end")
    amount = Int(1, min=1, max=16384, tooltip="how many cells")
    outputs = (Output("latent", LATENT),)

    def run(self, ctx: RunContext, latent: Latent, dim: str, index: int, amount: int) -> Latent:
        from nodes.diffusion.masks import mask_like

        samples = latent.samples
        axis = -1 if dim == "x" else -2
        size = samples.shape[axis]
        start = min(index, size - 1) if index >= 0 else max(index, -size) % size
        length = min(size - start, amount) if index >= 0 else min(-max(index, -size), amount)
        mask = latent.noise_mask
        if mask is not None:
            mask = mask_like(mask if mask.ndim == 3 else mask.reshape(-1, *mask.shape[-2:]), *samples.shape[-2:])
            mask = mask.narrow(axis, start, length).clone()
        return _with(latent, samples.narrow(axis, start, length).clone(), mask)
