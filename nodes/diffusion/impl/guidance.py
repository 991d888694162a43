"""Guiders: how the UNet's prediction is steered by conditioning (the GUIDER value).

Classifier-free guidance mixes two predictions of the same noisy latent: one with the
prompt (cond) and one with the negative prompt (uncond), as
``uncond + scale * (cond - uncond)``. Both go through the UNet in one batched call
(about 20% faster than two calls on CPU); scale 1 needs no uncond pass at all. When the
two conditionings have different token lengths (e.g. a long combined prompt) they
cannot share a batch, and two calls are made instead.

A :class:`Guider` is an immutable, cacheable record; :meth:`Guider.bind` prepares the
per-run tensors once (conditioning broadcast to the latent batch, moved to the UNet's
device and dtype) and returns the function the sampler calls every step. Given a ``tap``,
that function also hands it the two predictions before they are mixed, ``tap(uncond,
cond)`` (uncond None without a negative pass), for views of what guidance amplifies;
without one it does nothing more.

A conditioning with GLIGEN boxes is run through the model's GLIGEN copy (impl/gligen.py),
the position net's inputs passed per call as ``cross_attention_kwargs`` while grounded.

The model's guidance patches (types.ModelPatch) act here: RescaledGuidance replaces the
mix (in v space), PerturbedAttention adds a pass with the prompt (impl/patches.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from nodes.diffusion.types import Conditioning, DiffusionModel

if TYPE_CHECKING:
    import torch

Denoiser = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
Tap = Callable[["torch.Tensor | None", "torch.Tensor"], None]


class GuidanceError(ValueError):
    """Conditioning that does not fit the latent or the model; the message is for the user."""


@dataclass(frozen=True, eq=False)
class Guider:  # GUIDER
    model: DiffusionModel
    positive: Conditioning
    negative: Conditioning | None = None
    scale: float = 1.0
    rescale: float = 0.0  # guidance rescale φ of Lin et al. 2023 (diffusers' guidance_rescale)

    @property
    def uses_uncond(self) -> bool:
        """Whether each step predicts with the negative too: when guidance mixes it in, or
        Self-Attention Guidance needs its pass (at any scale, as ComfyUI)."""
        from nodes.diffusion.types import DualGuidance, PerpendicularNegative, SelfAttentionGuided

        needed = [p for p in self.model.patches if isinstance(p, (SelfAttentionGuided, PerpendicularNegative, DualGuidance))]
        return self.negative is not None and (self.scale != 1.0 or bool(needed))

    def bind(self, latent: "torch.Tensor", tap: Tap | None = None, seed: int | None = None,
             timesteps: "Sequence[float] | None" = None, sigma_of: "Callable[[Any], float] | None" = None) -> Denoiser:
        """The per-step model call for latents shaped like ``latent`` [B, C, h, w];
        ``tap(uncond, cond)`` sees each step's unmixed predictions (see the module doc);
        ``seed`` (the sampler's) seeds what conditioning draws, e.g. unCLIP's noise augmentation;
        ``timesteps``, the steps the sampler will run, place GLIGEN's grounded steps (impl/gligen.py);
        ``sigma_of(t)``, the noise level of a timestep, is what guidance rescaled in v space
        (a RescaledGuidance patch) needs."""
        import torch

        unet = self.model.unet
        batch = latent.shape[0]
        if self.positive.regional or (self.uses_uncond and self.negative.regional):
            _refuse_regional_grounding(self)
            from nodes.diffusion.types import DualGuidance, PerpendicularNegative

            if self.model.patches_of(PerpendicularNegative) or self.model.patches_of(DualGuidance):
                raise GuidanceError("Perp-Neg and dual guidance with areas, step ranges or stacked conditionings are "
                                    "not supported yet")
            positive_regions = _Regions(self.positive, self.model, latent, "positive", seed)
            if not self.uses_uncond:
                return _tapped(self._finished(unet, positive_regions.predict, None, sigma_of=sigma_of), tap, False)
            negative_regions = _Regions(self.negative, self.model, latent, "negative", seed)

            def regional(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return negative_regions.predict(x, t), positive_regions.predict(x, t)

            return self._finished(unet, positive_regions.predict, regional, tap, sigma_of,
                                  negative_regions.predict if not self.negative.regional else None)
        pixel_size = (latent.shape[2] * self.model.family.vae_scale_factor, latent.shape[3] * self.model.family.vae_scale_factor)
        ground = _grounder(self, batch, pixel_size, timesteps)
        if ground is not None:
            unet = ground.unet
        positive = _unet_inputs(self.positive, self.model, batch, pixel_size, "positive", seed)
        control_pos = _control(self.positive, positive, self.model, latent, seed)

        def predict_positive(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            extra = dict(control_pos(x, t)) if control_pos else {}
            if ground is not None:
                extra.update(ground.positive(t))
            return unet(x, t, encoder_hidden_states=positive[0], added_cond_kwargs=positive[1], return_dict=False, **extra)[0]

        if not self.uses_uncond:
            return _tapped(self._finished(unet, predict_positive, None, sigma_of=sigma_of), tap, False)

        negative = _unet_inputs(self.negative, self.model, batch, pixel_size, "negative", seed)
        control_neg = _control(self.negative, negative, self.model, latent, seed)

        def predict_negative(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            extra = dict(control_neg(x, t)) if control_neg else {}
            if ground is not None:
                extra.update(ground.negative(t))
            return unet(x, t, encoder_hidden_states=negative[0], added_cond_kwargs=negative[1], return_dict=False, **extra)[0]

        predict_empty = self._extra_pass(unet, batch, pixel_size, seed)

        # Token lengths that differ, or grounding of one pass only: no shared batch.
        if positive[0].shape[1] != negative[0].shape[1] or (ground is not None and not ground.shares_batch):

            def twice(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return predict_negative(x, t), predict_positive(x, t)

            return self._finished(unet, predict_positive, twice, tap, sigma_of, predict_negative, predict_empty)

        # One batch, uncond first (the order diffusers' pipelines use).
        embeds = torch.cat([negative[0], positive[0]])
        added = None
        if positive[1] is not None:
            added = {key: torch.cat([negative[1][key], positive[1][key]]) for key in positive[1]}

        def batched(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            extra = {}
            if control_neg or control_pos:
                from nodes.diffusion.impl.controlnet import combine

                extra = combine(control_neg(x, t) if control_neg else {}, control_pos(x, t) if control_pos else {})
            if ground is not None:
                extra.update(ground.both(t))
            both = unet(torch.cat([x, x]), t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False, **extra)[0]
            uncond, cond = both.chunk(2)
            return uncond, cond

        return self._finished(unet, predict_positive, batched, tap, sigma_of, predict_negative, predict_empty)

    def _extra_pass(self, unet: Any, batch: int, pixel_size: tuple[int, int], seed: int | None) -> Denoiser | None:
        """The model call with the third conditioning of a PerpendicularNegative patch (its
        empty prompt) or a DualGuidance patch (its middle one); None without either."""
        from nodes.diffusion.types import DualGuidance, PerpendicularNegative

        third = [p for p in self.model.patches if isinstance(p, (PerpendicularNegative, DualGuidance))][-1:]
        if not third:
            return None
        cond, which = (third[0].empty, "empty") if isinstance(third[0], PerpendicularNegative) else (third[0].middle, "middle")
        if cond.regional:
            raise GuidanceError(f"the {which} conditioning has areas, step ranges or stacked parts; it must be a "
                                "plain prompt")
        embeds, added = _unet_inputs(cond, self.model, batch, pixel_size, which, seed)

        def predict_empty(x: "torch.Tensor", t: "torch.Tensor") -> "torch.Tensor":
            return unet(x, t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False)[0]

        return predict_empty

    def _finished(self, unet: Any, predict_positive: Denoiser,
                  predictions: "Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None",
                  tap: Tap | None = None, sigma_of: "Callable[[Any], float] | None" = None,
                  predict_negative: Denoiser | None = None, predict_empty: Denoiser | None = None) -> Denoiser:
        """The step's guided prediction: ``predictions(x, t)`` (uncond, cond) mixed by the
        guidance scale (in v space with a RescaledGuidance patch, then the CFG node's own
        rescale), or the prompt's prediction alone without ``predictions``; then, in the
        order they were applied, each PerturbedAttention patch's move away from the prompt's
        pass with the identity self-attention in the middle block of ``unet`` (the one the
        passes run), and each SelfAttentionGuided patch's away from ``predict_negative`` of
        the negative's estimate blurred where that block's attention looks. A
        PerpendicularNegative patch replaces the mix by Perp-Neg's, around ``predict_empty`` (its
        empty prompt's pass); a DualGuidance patch by the three-way mix with its middle pass."""
        from contextlib import nullcontext

        from nodes.diffusion.impl import patches
        from nodes.diffusion.types import (
            DualGuidance, EpsilonScaling, PerpendicularNegative, PerturbedAttention, RescaledGuidance, SelfAttentionGuided,
        )

        model = self.model
        scale, rescale = self.scale, self.rescale
        rescaled = model.patches_of(RescaledGuidance)[-1:]  # a later one replaces an earlier one
        third = [p for p in model.patches if isinstance(p, (PerpendicularNegative, DualGuidance))][-1:]
        kind = model.scheduler_config.get("prediction_type", "epsilon")
        # After the mix, in the order the patches were applied (as ComfyUI's post-CFG functions).
        after = [p for p in model.patches if (isinstance(p, (PerturbedAttention, SelfAttentionGuided)) and p.scale != 0)
                 or (isinstance(p, EpsilonScaling) and p.factor != 1.0)]
        attended = [p for p in after if isinstance(p, SelfAttentionGuided)]
        shrunk = [p for p in after if isinstance(p, EpsilonScaling)]
        if (rescaled or attended or (shrunk and kind != "epsilon")) and sigma_of is None:
            raise GuidanceError("Rescale CFG, Self-Attention Guidance and epsilon scaling need the sampler's noise levels")
        if (len(after) > len(shrunk)) and not patches.has_middle_self_attention(unet):
            raise GuidanceError("Perturbed-Attention and Self-Attention Guidance need self-attention in the UNet's "
                                "middle block, which this model has none of")
        if third and (predictions is None or predict_empty is None):
            raise GuidanceError("Perp-Neg and dual guidance need the CFG guider with a negative prompt")
        if attended and (predictions is None or predict_negative is None):
            raise GuidanceError("Self-Attention Guidance works on the negative prompt's pass: it needs the CFG guider "
                                "with a negative prompt that has no areas, step ranges or stacked parts")

        def guided(x: "torch.Tensor", t: "torch.Tensor") -> "torch.Tensor":
            record = None
            if predictions is None:
                cond = predict_positive(x, t)
                result = cond
            else:
                with patches.recorded_self_attention(unet) if attended else nullcontext() as record:
                    uncond, cond = predictions(x, t)
                if tap is not None:
                    tap(uncond, cond)
                if third and isinstance(third[0], PerpendicularNegative):
                    result = patches.perpendicular_guidance(predict_empty(x, t), cond, uncond, scale, third[0].neg_scale)
                elif third:
                    result = patches.dual_guidance(cond, predict_empty(x, t), uncond, third[0].middle_scale, scale,
                                                   third[0].nested)
                elif rescaled:
                    result = patches.rescaled_guidance(uncond, cond, scale, rescaled[0].multiplier, x,
                                                       sigma_of(t), kind)
                else:
                    result = uncond + scale * (cond - uncond)
                if rescale > 0:
                    result = _rescale(result, cond, rescale)
            for patch in after:
                if isinstance(patch, PerturbedAttention):
                    with patches.identity_self_attention(unet):
                        perturbed = predict_positive(x, t)
                    result = result + patch.scale * (cond - perturbed)
                elif isinstance(patch, EpsilonScaling):  # the noise the prediction implies, divided
                    if kind == "epsilon":
                        result = result / patch.factor
                    else:
                        latent, sigma = x[:, :result.shape[1]], sigma_of(t)
                        noise = patches.to_eps(result, latent, sigma, kind) / patch.factor
                        result = patches.from_eps(noise, latent, sigma, kind)
                elif min(x.shape[-2:]) > 4:  # the blur's reflected edges need more (ComfyUI skips too)
                    result = self._self_attention_guided(patch, result, uncond, x, t, sigma_of(t), kind, record,
                                                         predict_negative)
            return result

        return guided


    @staticmethod
    def _self_attention_guided(patch: Any, result: "torch.Tensor", uncond: "torch.Tensor", x: "torch.Tensor",
                               t: "torch.Tensor", sigma: float, kind: str, record: Any,
                               predict_negative: Denoiser) -> "torch.Tensor":
        """``result`` moved by ``patch.scale`` times the negative's noise minus its noise for
        its own clean estimate, blurred where the attention looks and noised back."""
        import torch

        from nodes.diffusion.impl import patches

        latent = x[:, :uncond.shape[1]]  # an inpainting UNet's input carries mask channels after
        noise = patches.to_eps(uncond, latent, sigma, kind)
        degraded = patches.attention_blurred(patches.to_x0(uncond, latent, sigma, kind), record, patch.blur_sigma)
        alpha = (1.0 + sigma * sigma) ** -0.5
        noised = alpha * degraded + sigma * alpha * noise
        again = predict_negative(torch.cat([noised, x[:, uncond.shape[1]:]], dim=1), t)
        moved = patches.to_eps(result, latent, sigma, kind) + patch.scale * (noise - patches.to_eps(again, noised, sigma, kind))
        return patches.from_eps(moved, latent, sigma, kind)


def _grounder(guider: Guider, batch: int, pixel_size: tuple[int, int], timesteps: "Sequence[float] | None") -> Any:
    """The run's GLIGEN grounding (impl/gligen.py) when a conditioning has boxes, else None."""
    from nodes.diffusion.impl import gligen

    positive = gligen.of(guider.positive)
    negative = gligen.of(guider.negative) if guider.uses_uncond else None
    if positive is None and negative is None:
        return None
    try:
        return gligen.Grounder(positive, negative, guider.uses_uncond, guider.model.unet, batch, pixel_size, timesteps,
                               guider.model.adapters)
    except gligen.GroundingError as error:
        raise GuidanceError(str(error)) from None


def _refuse_regional_grounding(guider: Guider) -> None:
    for which, cond in (("positive", guider.positive), ("negative", guider.negative)):
        if cond is not None and any("gligen" in part.extras for part in cond.parts()):
            raise GuidanceError(f"the {which} conditioning has GLIGEN boxes and areas, step ranges or stacked parts; "
                                "nodeflow does not ground regional conditioning yet")


def _tapped(denoise: Denoiser, tap: Tap | None, taps_itself: bool) -> Denoiser:
    """``denoise`` that shows a ``tap`` its prediction as the cond one (no negative pass);
    unchanged without a tap, or when it calls the tap itself (``taps_itself``)."""
    if tap is None or taps_itself:
        return denoise

    def tapped(x: "torch.Tensor", t: "torch.Tensor") -> "torch.Tensor":
        prediction = denoise(x, t)
        tap(None, prediction)
        return prediction

    return tapped


class _Regions:
    """The parts of one conditioning, ready to predict on their regions (impl/regions.py),
    each with its own ControlNet hints, which see only that part's crop (as in ComfyUI,
    the hint image is resized to the crop)."""

    def __init__(self, cond: Conditioning, model: DiffusionModel, latent: "torch.Tensor", which: str,
                 seed: int | None = None):
        from nodes.diffusion.impl.regions import RegionError, region

        factor = model.family.vae_scale_factor
        height, width = latent.shape[2], latent.shape[3]
        self.model = model
        self.train_steps = int(model.scheduler_config.get("num_train_timesteps", 1000))
        self.parts = []
        for part in cond.parts():
            try:
                where = region(part, latent.shape[0], (height, width), factor)
            except RegionError as error:
                raise GuidanceError(f"the {which} conditioning: {error}") from None
            top, bottom, left, right = where.box
            pixels = ((bottom - top) * factor, (right - left) * factor)
            inputs = _unet_inputs(part, model, latent.shape[0], pixels, which, seed)
            crop = latent[:, :, top:bottom, left:right]
            weight = None if where.weight is None else where.weight.to(device=latent.device, dtype=latent.dtype)
            self.parts.append((part, where.box, weight, inputs, _control(part, inputs, model, crop, seed)))

    def active(self, part: Conditioning, t: "torch.Tensor") -> bool:
        if part.timestep_range is None:
            return True
        start, end = part.timestep_range
        last = self.train_steps - 1
        level = float(t.reshape(-1)[0])
        return (1.0 - end) * last - 1e-6 <= level <= (1.0 - start) * last + 1e-6

    def predict(self, x: "torch.Tensor", t: "torch.Tensor") -> "torch.Tensor":
        import torch

        unet = self.model.unet
        # An inpainting UNet's x carries mask + masked-image channels; it predicts the latent's.
        out = x.new_zeros((x.shape[0], unet.config.out_channels, *x.shape[2:]))
        weight = torch.zeros_like(x[:, :1])
        for part, (top, bottom, left, right), mask, (embeds, added), control in self.parts:
            if not self.active(part, t) or part.strength == 0:
                continue
            crop = x[:, :, top:bottom, left:right]
            extra = control(crop, t) if control else {}
            prediction = unet(crop, t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False, **extra)[0]
            share = part.strength if mask is None else mask * part.strength
            out[:, :, top:bottom, left:right] += prediction * share
            weight[:, :, top:bottom, left:right] += share
        return torch.where(weight > 0, out / weight.clamp(min=1e-12), out)


def _control(
    cond: Conditioning, inputs: tuple["torch.Tensor", dict[str, "torch.Tensor"] | None], model: DiffusionModel,
    latent: "torch.Tensor", seed: int | None = None,
) -> Callable[["torch.Tensor", "torch.Tensor"], dict[str, "torch.Tensor"]] | None:
    """The extra UNet inputs of ``cond`` per step: its control hints' ControlNet/T2I-Adapter
    residuals, and an unCLIP model's class labels (None when there are neither)."""
    labels = _class_labels(cond, model, latent.shape[0], seed)
    hints = cond.extras.get("control", ())
    if not hints:
        return (lambda x, t: labels) if labels else None
    from nodes.diffusion.impl.controlnet import residual_function

    try:
        residuals = residual_function(
            tuple(hints), inputs[0], inputs[1], tuple(latent.shape), int(model.scheduler_config.get("num_train_timesteps", 1000))
        )
    except ValueError as error:
        raise GuidanceError(str(error)) from None
    return (lambda x, t: {**residuals(x, t), **labels}) if labels else residuals


def _class_labels(cond: Conditioning, model: DiffusionModel, batch: int, seed: int | None) -> dict[str, "torch.Tensor"]:
    """``{"class_labels": ...}`` for an unCLIP UNet (its image embeddings, impl/unclip.py), else nothing."""
    from nodes.diffusion.impl import unclip

    if not unclip.takes_images(model):
        return {}
    try:
        labels = unclip.class_labels(cond, model, seed)
    except ValueError as error:
        raise GuidanceError(str(error)) from None
    unet = model.unet
    return {"class_labels": labels.expand(batch, -1).to(device=unet.device, dtype=unet.dtype)}


def _unet_inputs(
    cond: Conditioning, model: DiffusionModel, batch: int, pixel_size: tuple[int, int], which: str,
    seed: int | None = None,
) -> tuple["torch.Tensor", dict[str, "torch.Tensor"] | None]:
    """Hidden states and SDXL's added conditions for ``cond``, broadcast to ``batch`` (the
    pooled embedding replaced by an image's where ``cond`` carries one, impl/unclip.py)."""
    import torch

    unet = model.unet
    embeds = _broadcast(cond.embeds, batch, which).to(device=unet.device, dtype=unet.dtype)
    if not model.family.uses_pooled:
        return embeds, None
    if cond.pooled is None:
        raise GuidanceError(f"the {which} conditioning has no pooled text embedding, which {model.family.name} models need")
    pooled = _image_pooled(cond, cond.pooled, seed)
    pooled = _broadcast(pooled, batch, which).to(device=unet.device, dtype=unet.dtype)
    time_ids = cond.extras.get("time_ids")
    if time_ids is None:  # original size, crop top-left, target size: the plain full-image case
        height, width = pixel_size
        if model.family.name == "sdxl_refiner":  # original size, crop, aesthetic score (as diffusers' defaults)
            time_ids = torch.tensor([[height, width, 0, 0, 6.0 if which == "positive" else 2.5]], dtype=torch.float32)
        else:
            time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)
    time_ids = torch.as_tensor(time_ids, dtype=torch.float32)
    time_ids = time_ids.reshape(-1, time_ids.shape[-1])  # 6 values per image; 5 for the SDXL refiner
    time_ids = _broadcast(time_ids, batch, which).to(device=unet.device, dtype=unet.dtype)
    return embeds, {"text_embeds": pooled, "time_ids": time_ids}


def _image_pooled(cond: Conditioning, pooled: "torch.Tensor", seed: int | None) -> "torch.Tensor":
    from nodes.diffusion.impl import unclip

    try:
        image = unclip.pooled_embeds(cond, pooled.shape[-1], seed)
    except ValueError as error:
        raise GuidanceError(str(error)) from None
    return pooled if image is None else image


def _broadcast(tensor: "torch.Tensor", batch: int, which: str) -> "torch.Tensor":
    """``tensor`` with its batch repeated to ``batch`` (each entry kept together, like
    diffusers' num_images_per_prompt)."""
    have = tensor.shape[0]
    if have == batch:
        return tensor
    if have == 0 or batch % have:
        raise GuidanceError(f"the {which} conditioning has a batch of {have}, which does not divide the latent batch of {batch}")
    return tensor.repeat_interleave(batch // have, dim=0)


def _rescale(guided: "torch.Tensor", cond: "torch.Tensor", amount: float) -> "torch.Tensor":
    """Match the guided prediction's spread to the cond prediction's, by ``amount``
    (section 3.4 of "Common Diffusion Noise Schedules and Sample Steps are Flawed")."""
    dims = list(range(1, guided.ndim))
    matched = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return amount * matched + (1.0 - amount) * guided
