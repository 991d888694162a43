"""What the model-patch records (types.ModelPatch) do while a model samples.

The UNet object is shared by every model record made from one checkpoint, so nothing
here changes it for good: FreeU's hooks and PAG's attention swap are installed for the
duration of a call (context managers) and removed after, whatever happens.

- FreeU: before each decoder resnet, its input (the upsampled backbone features ``h``
  concatenated with the skip features) is split again; ``h``'s first half of channels is
  scaled, the skip features' lowest frequencies are scaled in Fourier space. Which
  factors apply is decided by ``h``'s width, as in the FreeU paper's code: four times the
  first block's width gets (b1, s1), twice it (b2, s2).
- Perturbed-Attention Guidance: every self-attention of the middle block returns its
  values (the identity attention map) during one extra pass with the prompt.
- Self-Attention Guidance: the negative pass records the middle block's first
  self-attention map; the negative's clean estimate is blurred where that map looks most,
  noised back with the negative's own noise estimate, and predicted once more.
- Rescaled guidance: the predictions are converted to v (whatever the model predicts),
  mixed, rescaled and converted back.
- Differential Diffusion: the noise mask thresholded by the step's progress.
- Deep Shrink: the features after one input block shrunk during a window of the run,
  and grown back to each skip connection's size in the decoder.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from nodes.diffusion.impl.resample import resize
from nodes.diffusion.types import FreeUScaling

if TYPE_CHECKING:
    import torch


# ------------------------------------------------------------------------------ FreeU
def _low_frequencies_scaled(features: "torch.Tensor", scale: float, radius: int = 1) -> "torch.Tensor":
    """``features`` with the centred ``2*radius`` square of its 2-D spectrum times ``scale``."""
    import torch

    spectrum = torch.fft.fftshift(torch.fft.fftn(features.float(), dim=(-2, -1)), dim=(-2, -1))
    height, width = spectrum.shape[-2:]
    row, col = height // 2, width // 2
    weight = torch.ones(spectrum.shape[-2:], device=features.device)
    weight[max(row - radius, 0):row + radius, max(col - radius, 0):col + radius] = scale
    spectrum = torch.fft.ifftshift(spectrum * weight, dim=(-2, -1))
    return torch.fft.ifftn(spectrum, dim=(-2, -1)).real.to(features.dtype)


def _freeu_backbone(h: "torch.Tensor", factor: float, adaptive: bool) -> "torch.Tensor":
    """``h`` with its first half of channels scaled by ``factor`` (v2: by 1 + (factor - 1)
    times each position's mean activation, min-max normalised per image)."""
    import torch

    half = h.shape[1] // 2
    if adaptive:
        mean = h.mean(dim=1, keepdim=True)
        flat = mean.flatten(1)
        low = flat.min(dim=1).values.view(-1, 1, 1, 1)
        high = flat.max(dim=1).values.view(-1, 1, 1, 1)
        weight = (factor - 1.0) * (mean - low) / (high - low).clamp(min=torch.finfo(h.dtype).tiny) + 1.0
    else:
        weight = factor
    return torch.cat([h[:, :half] * weight, h[:, half:]], dim=1)


def _freeu_split_points(unet: Any) -> list[tuple[Any, int]]:
    """(decoder resnet, channels of its backbone input ``h``) for every resnet of the UNet's
    up blocks; the rest of its input channels are the skip features."""
    points = []
    previous = unet.config.block_out_channels[-1]  # the middle block's output
    for block in unet.up_blocks:
        width = block.resnets[0].out_channels
        for index, resnet in enumerate(block.resnets):
            points.append((resnet, previous if index == 0 else width))
        previous = width
    return points


@contextmanager
def freeu(unet: Any, patches: Sequence[FreeUScaling]) -> Iterator[None]:
    """FreeU ``patches`` (in order) on ``unet``'s decoder while the block runs."""
    if not patches:
        yield
        return
    base = unet.config.block_out_channels[0]
    handles = []

    def hook_for(backbone: int) -> Any:
        def scale_inputs(module: Any, args: tuple, kwargs: dict) -> Any:
            import torch

            joined = args[0] if args else kwargs["input_tensor"]
            h, skip = joined[:, :backbone], joined[:, backbone:]
            for patch in patches:
                factors = {base * 4: (patch.b1, patch.s1), base * 2: (patch.b2, patch.s2)}.get(backbone)
                if factors is None:
                    continue
                h = _freeu_backbone(h, factors[0], patch.adaptive)
                skip = _low_frequencies_scaled(skip, factors[1])
            joined = torch.cat([h, skip], dim=1)
            if args:
                return (joined, *args[1:]), kwargs
            return args, {**kwargs, "input_tensor": joined}

        return scale_inputs

    try:
        for resnet, backbone in _freeu_split_points(unet):
            if backbone in (base * 4, base * 2):
                handles.append(resnet.register_forward_pre_hook(hook_for(backbone), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


# ------------------------------------------------------------------------------ PAG
class _IdentityAttention:
    """An attention processor whose attention map is the identity: each token gets its own
    value back (then the output projection), which is what PAG perturbs the model with."""

    def __call__(self, attn: Any, hidden_states: "torch.Tensor", encoder_hidden_states: Any = None,
                 attention_mask: Any = None, temb: Any = None, *args: Any, **kwargs: Any) -> "torch.Tensor":
        out = attn.to_out[1](attn.to_out[0](attn.to_v(hidden_states)))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


@contextmanager
def identity_self_attention(unet: Any) -> Iterator[None]:
    """The middle block's self-attentions (``attn1`` of each transformer block) replaced by
    :class:`_IdentityAttention` for the duration of the block."""
    attentions = [block.attn1 for transformer in getattr(unet.mid_block, "attentions", ())
                  for block in getattr(transformer, "transformer_blocks", ())]
    saved = [attention.processor for attention in attentions]
    identity = _IdentityAttention()
    try:
        for attention in attentions:
            attention.processor = identity
        yield
    finally:
        for attention, processor in zip(attentions, saved):
            attention.processor = processor


def has_middle_self_attention(unet: Any) -> bool:
    return any(getattr(t, "transformer_blocks", ()) for t in getattr(unet.mid_block, "attentions", ()))


# ------------------------------------------------------------------------------ SAG
class _RecordingAttention:
    """Self-attention computed with explicit probabilities (the default kernels do not give
    them), keeping those of the first call: the pass that has the negative prompt first."""

    def __init__(self) -> None:
        self.probabilities: "torch.Tensor | None" = None

    def __call__(self, attn: Any, hidden_states: "torch.Tensor", encoder_hidden_states: Any = None,
                 attention_mask: Any = None, temb: Any = None, *args: Any, **kwargs: Any) -> "torch.Tensor":
        import torch

        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        mask = attn.prepare_attention_mask(attention_mask, context.shape[1], hidden_states.shape[0])
        probabilities = attn.get_attention_scores(query, key, mask)
        if self.probabilities is None:
            self.probabilities = probabilities
        out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(torch.bmm(probabilities, value))))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


class AttentionRecord:
    """What :func:`recorded_self_attention` saw: the first pass's attention probabilities
    [batch * heads, tokens, tokens] and the spatial size of those tokens."""

    def __init__(self, heads: int) -> None:
        self.heads = heads
        self.processor = _RecordingAttention()
        self.size: tuple[int, int] | None = None

    @property
    def probabilities(self) -> "torch.Tensor | None":
        return self.processor.probabilities


@contextmanager
def recorded_self_attention(unet: Any) -> Iterator[AttentionRecord]:
    """The first self-attention of the middle block (its first transformer block's
    ``attn1``) recording its attention map, for the duration of the block."""
    transformer = unet.mid_block.attentions[0]
    attention = transformer.transformer_blocks[0].attn1
    record = AttentionRecord(attention.heads)

    def size_of(module: Any, args: tuple) -> None:
        if record.size is None:
            record.size = tuple(args[0].shape[-2:])

    saved = attention.processor
    handle = transformer.register_forward_pre_hook(size_of)
    attention.processor = record.processor
    try:
        yield record
    finally:
        attention.processor = saved
        handle.remove()


def _gaussian_blur(latent: "torch.Tensor", sigma: float, size: int = 9) -> "torch.Tensor":
    """Each channel blurred by a ``size`` x ``size`` Gaussian, edges reflected."""
    import torch
    import torch.nn.functional as F

    offsets = torch.linspace(-(size - 1) / 2, (size - 1) / 2, size, dtype=torch.float32)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = (weights / weights.sum()).to(device=latent.device, dtype=latent.dtype)
    kernel = (weights[:, None] @ weights[None, :]).expand(latent.shape[1], 1, size, size)
    padded = F.pad(latent, [size // 2] * 4, mode="reflect")
    return F.conv2d(padded, kernel, groups=latent.shape[1])


def attention_blurred(x0: "torch.Tensor", record: AttentionRecord, blur_sigma: float) -> "torch.Tensor":
    """``x0`` [B, C, h, w] blurred where the recorded attention map puts more than one
    query's worth of attention (summed over queries, averaged over heads), kept elsewhere."""
    import torch.nn.functional as F

    batch, _, height, width = x0.shape
    probabilities = record.probabilities[: batch * record.heads]
    tokens = probabilities.shape[-1]
    attended = probabilities.reshape(batch, record.heads, tokens, tokens).mean(dim=1).sum(dim=1) > 1.0
    rows, cols = record.size
    mask = attended.reshape(batch, 1, rows, cols).to(x0.dtype)
    mask = F.interpolate(mask, (height, width))
    blurred = _gaussian_blur(x0, blur_sigma) if blur_sigma > 0 else x0
    return blurred * mask + x0 * (1 - mask)


def to_eps(prediction: "torch.Tensor", x: "torch.Tensor", sigma: float, kind: str) -> "torch.Tensor":
    """The noise a prediction of ``kind`` implies for the variance-preserving input ``x``."""
    a = (1.0 + sigma * sigma) ** -0.5
    s = sigma * a
    if kind == "epsilon":
        return prediction
    if kind == "v_prediction":
        return s * x + a * prediction
    return (x - a * prediction) / s


def to_x0(prediction: "torch.Tensor", x: "torch.Tensor", sigma: float, kind: str) -> "torch.Tensor":
    """The clean latent a prediction of ``kind`` implies for ``x``."""
    a = (1.0 + sigma * sigma) ** -0.5
    s = sigma * a
    if kind == "epsilon":
        return (x - s * prediction) / a
    if kind == "v_prediction":
        return a * x - s * prediction
    return prediction


def from_eps(eps: "torch.Tensor", x: "torch.Tensor", sigma: float, kind: str) -> "torch.Tensor":
    """The prediction of ``kind`` that implies the noise ``eps`` for ``x``."""
    return eps if kind == "epsilon" else from_v(to_v(eps, x, sigma, "epsilon"), x, sigma, kind)


# ------------------------------------------------------------------------------ rescaled CFG
def to_v(prediction: "torch.Tensor", x: "torch.Tensor", sigma: float, kind: str) -> "torch.Tensor":
    """The model's ``prediction`` of ``kind`` (epsilon, v_prediction, sample) as v, for the
    variance-preserving input ``x`` = a x0 + s eps at noise level ``sigma`` (a = 1/sqrt(1+sigma^2),
    s = sigma a): v = a eps - s x0."""
    a = (1.0 + sigma * sigma) ** -0.5
    s = sigma * a
    if kind == "v_prediction":
        return prediction
    if kind == "sample":
        return (a * x - prediction) / s
    return (prediction - s * x) / a


def from_v(v: "torch.Tensor", x: "torch.Tensor", sigma: float, kind: str) -> "torch.Tensor":
    """The inverse of :func:`to_v`."""
    a = (1.0 + sigma * sigma) ** -0.5
    s = sigma * a
    if kind == "v_prediction":
        return v
    if kind == "sample":
        return a * x - s * v
    return a * v + s * x


def rescaled_guidance(uncond: "torch.Tensor", cond: "torch.Tensor", scale: float, multiplier: float,
                      x: "torch.Tensor", sigma: float, kind: str) -> "torch.Tensor":
    """Classifier-free guidance in v space with the guided v's per-image spread matched to
    the prompt's, mixed with the plain guided v by ``multiplier``; returned in ``kind``."""
    x = x[:, :cond.shape[1]].to(cond.dtype)  # an inpainting UNet's input carries mask channels after
    v_uncond, v_cond = to_v(uncond, x, sigma, kind), to_v(cond, x, sigma, kind)
    guided = v_uncond + scale * (v_cond - v_uncond)
    dims = tuple(range(1, guided.ndim))
    matched = guided * (v_cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return from_v(multiplier * matched + (1.0 - multiplier) * guided, x, sigma, kind)


# ------------------------------------------------------------------------------ Perp-Neg
def perpendicular_guidance(empty: "torch.Tensor", cond: "torch.Tensor", uncond: "torch.Tensor", scale: float,
                           neg_scale: float) -> "torch.Tensor":
    """Perp-Neg's guided prediction: from the empty prompt's, ``scale`` times the positive
    direction minus ``neg_scale`` times the part of the negative direction perpendicular
    to it (per image)."""
    import torch

    positive, negative = cond - empty, uncond - empty
    dims = tuple(range(1, cond.ndim))
    length = (positive * positive).sum(dim=dims, keepdim=True).clamp(min=torch.finfo(positive.dtype).tiny)
    perpendicular = negative - (negative * positive).sum(dim=dims, keepdim=True) / length * positive
    return empty + scale * (positive - neg_scale * perpendicular)


def dual_guidance(cond: "torch.Tensor", middle: "torch.Tensor", uncond: "torch.Tensor", middle_scale: float,
                  scale: float, nested: bool) -> "torch.Tensor":
    """ComfyUI's dual CFG: regular, CFG from the negative to the middle at ``scale`` plus
    ``middle_scale`` times (positive - middle); nested, CFG from the middle to the positive at
    ``middle_scale``, then from the negative to that at ``scale``."""
    if nested:
        text = middle + middle_scale * (cond - middle)
        return uncond + scale * (text - uncond)
    return uncond + scale * (middle - uncond) + middle_scale * (cond - middle)


# ------------------------------------------------------------------------------ differential diffusion
def differential_mask(mask: "torch.Tensor", timestep: float, first: float, last: float,
                      strength: float) -> "torch.Tensor":
    """The noise mask at ``timestep`` of a run from ``first`` down to ``last``: 1 where the
    mask reaches the run's remaining share ((t - last) / (first - last)), else 0; with
    ``strength`` below 1, that mixed with the soft mask."""
    span = first - last
    threshold = 0.0 if span == 0 else (timestep - last) / span
    binary = (mask >= threshold).to(mask.dtype)
    if strength >= 1.0:
        return binary
    return strength * binary + (1.0 - strength) * mask


# ------------------------------------------------------------------------------ Deep Shrink
def _input_blocks(unet: Any) -> dict[int, tuple[Any, Any]]:
    """The original UNet's input block number -> (the diffusers module that makes its
    output, the module that takes that output next)."""
    levels = list(unet.down_blocks)
    blocks: dict[int, tuple[Any, Any]] = {0: (unet.conv_in, levels[0])}
    number = 1
    for index, level in enumerate(levels):
        following = levels[index + 1] if index + 1 < len(levels) else unet.mid_block
        attentions = getattr(level, "attentions", None)
        layers = [attentions[j] if attentions is not None else resnet for j, resnet in enumerate(level.resnets)]
        downsampler = level.downsamplers[0] if level.downsamplers else None
        takers = [*level.resnets[1:], downsampler or following]
        for layer, taker in zip(layers, takers):
            blocks[number] = (layer, taker)
            number += 1
        if downsampler is not None:
            blocks[number] = (downsampler, following)
            number += 1
    return blocks


def input_block_count(unet: Any) -> int:
    """How many input blocks the original layout of ``unet`` has (conv_in, the down
    levels' layers and their downsamplers)."""
    return len(_input_blocks(unet))


def _first_tensor(output: Any) -> "torch.Tensor":
    return output[0] if isinstance(output, tuple) else output


def _with_first(output: Any, tensor: "torch.Tensor") -> Any:
    return (tensor, *output[1:]) if isinstance(output, tuple) else tensor


@contextmanager
def deep_shrink(unet: Any, patch: Any, train_steps: int) -> Iterator[None]:
    """Deep Shrink ``patch`` on ``unet`` while the block runs: the features after input
    block ``patch.block`` shrunk while the call's timestep is in the patch's window, and,
    in the decoder, the features grown to each skip connection's size before they are
    joined (the upsamplers sized to the next skip, as the original UNet sizes them)."""
    blocks = _input_blocks(unet)
    if patch.block not in blocks:
        raise ValueError(f"the UNet has input blocks 0-{max(blocks)}, not {patch.block}")
    last = train_steps - 1
    latest = (1.0 - patch.start) * last if patch.start > 0 else float("inf")
    earliest = (1.0 - patch.end) * last if patch.end < 1 else float("-inf")
    state: dict[str, Any] = {"active": False, "skips": []}
    handles = []

    def begin(module: Any, args: tuple, kwargs: dict) -> None:
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        level = float(timestep.reshape(-1)[0]) if hasattr(timestep, "reshape") else float(timestep)
        state["active"] = earliest - 1e-6 <= level <= latest + 1e-6
        state["skips"] = []

    def shrunk(features: "torch.Tensor") -> "torch.Tensor":
        if not state["active"]:
            return features
        height, width = features.shape[-2:]
        size = (max(1, round(height / patch.factor)), max(1, round(width / patch.factor)))
        return resize(features, size, patch.downscale_method)

    def shrink_output(module: Any, args: tuple, output: Any) -> Any:
        return _with_first(output, shrunk(_first_tensor(output)))

    def shrink_input(module: Any, args: tuple, kwargs: dict) -> Any:
        if args:
            return (shrunk(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": shrunk(kwargs["hidden_states"])}

    def saved_skip(module: Any, args: tuple, output: Any) -> None:
        state["skips"].append(tuple(output.shape[-2:]))

    def saved_skips(module: Any, args: tuple, output: Any) -> None:
        state["skips"].extend(tuple(skip.shape[-2:]) for skip in output[1])

    def enter_up(module: Any, args: tuple, kwargs: dict) -> Any:
        count = len(module.resnets)
        mine, state["skips"] = state["skips"][-count:], state["skips"][:-count]
        state["joins"] = list(reversed(mine))  # the order the block joins them
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = resize(kwargs["hidden_states"], state["joins"][0], patch.upscale_method)
        if getattr(module, "upsamplers", None) and state["skips"]:
            kwargs["upsample_size"] = state["skips"][-1]
        return args, kwargs

    def grown(index: int) -> Any:
        def grow(module: Any, args: tuple, output: Any) -> Any:
            joins = state["joins"]
            if index + 1 >= len(joins):
                return output
            return _with_first(output, resize(_first_tensor(output), joins[index + 1], patch.upscale_method))

        return grow

    try:
        handles.append(unet.register_forward_pre_hook(begin, with_kwargs=True))
        producer, taker = blocks[patch.block]
        if patch.after_skip:
            handles.append(taker.register_forward_pre_hook(shrink_input, with_kwargs=True))
        else:
            handles.append(producer.register_forward_hook(shrink_output))
        handles.append(unet.conv_in.register_forward_hook(saved_skip))
        handles.extend(level.register_forward_hook(saved_skips) for level in unet.down_blocks)
        for level in unet.up_blocks:
            handles.append(level.register_forward_pre_hook(enter_up, with_kwargs=True))
            attentions = getattr(level, "attentions", None)
            for j, resnet in enumerate(level.resnets):
                layer = attentions[j] if attentions is not None else resnet
                handles.append(layer.register_forward_hook(grown(j)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def attention_scaled(unet: Any, patch: Any) -> Iterator[None]:
    """Every ``patch.attention`` (attn1 / attn2) of ``unet``'s transformer blocks with its
    projections' outputs multiplied by the patch's factors, while the block runs."""
    factors = {"to_q": patch.q, "to_k": patch.k, "to_v": patch.v}
    handles = []

    def times(factor: float) -> Any:
        return lambda module, args, output: output * factor

    try:
        for name, module in unet.named_modules():
            if not name.endswith("." + patch.attention):
                continue
            for part, factor in factors.items():
                if factor != 1.0:
                    handles.append(getattr(module, part).register_forward_hook(times(factor)))
            if patch.out != 1.0:
                handles.append(module.to_out[0].register_forward_hook(times(patch.out)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def unet_patches(unet: Any, model: Any) -> Iterator[None]:
    """Every patch of ``model`` that changes the UNet's own forward pass (FreeU, Deep
    Shrink, attention scaling), on ``unet`` while the block runs."""
    from contextlib import ExitStack

    from nodes.diffusion.types import AttentionScaling, DeepShrink

    train_steps = int(model.scheduler_config.get("num_train_timesteps", 1000))
    with ExitStack() as stack:
        stack.enter_context(freeu(unet, model.patches_of(FreeUScaling)))
        for patch in model.patches_of(DeepShrink):
            stack.enter_context(deep_shrink(unet, patch, train_steps))
        for patch in model.patches_of(AttentionScaling):
            stack.enter_context(attention_scaled(unet, patch))
        yield
