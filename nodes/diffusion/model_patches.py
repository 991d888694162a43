"""Model patches: nodes that change how a model predicts while it samples.

Each returns a new model record with one more patch (types.ModelPatch) on the same UNet;
the input model, which the executor caches and other branches may share, samples as it
did. What each patch does is in impl/patches.py and the guider (impl/guidance.py).
"""

from __future__ import annotations

from nodeflow import Bool, Choice, Float, Int, Node, NodeError, Output, RunContext, Socket

from nodes.diffusion.types import (
    CONDITIONING, MODEL, AttentionScaling, Conditioning, DeepShrink as DeepShrinkPatch, DifferentialMask,
    DiffusionModel, EpsilonScaling, FreeUScaling, PerpendicularNegative, PerturbedAttention,
    RescaledGuidance, SelfAttentionGuided,
)


class RescaleCFG(Node):
    type = "RescaleCFG"
    display_name = "Rescale CFG"
    category = "model_patches"
    description = (
        "Guidance as in 'Common Diffusion Noise Schedules and Sample Steps are Flawed' (Lin et "
        "al. 2023): the guided prediction, taken as v, gets the spread of the prompt's own v, "
        "which keeps high guidance scales from over-exposing; meant for v-prediction and "
        "zero-SNR models. The CFG node's scale still sets the guidance."
    )

    model = Socket(MODEL)
    multiplier = Float(0.7, min=0.0, max=1.0, step=0.01,
                       tooltip="how much of the rescaled prediction to use: 0 is plain CFG, 1 fully rescaled")
    outputs = (Output("model", MODEL),)

    def run(self, ctx: RunContext, model: DiffusionModel, multiplier: float) -> DiffusionModel:
        return model.with_patch(RescaledGuidance(multiplier))


class FreeU(Node):
    type = "FreeU"
    display_name = "FreeU"
    category = "model_patches"
    description = (
        "FreeU (Si et al. 2023): in the UNet's decoder, strengthens the backbone features (b1, "
        "b2 for the deepest and the next width) and damps the low frequencies of the skip "
        "connections (s1, s2), for more detail and structure at no cost in steps. v2 scales "
        "each position by its mean activation instead of uniformly."
    )

    model = Socket(MODEL)
    variant = Choice(("v2", "v1"), default="v2", tooltip="v2: backbone scaled by each position's mean activation; "
                     "v1: scaled uniformly (the paper's first version)")
    b1 = Float(1.3, min=0.0, max=10.0, step=0.01, tooltip="backbone factor at the deepest decoder width (v1 paper: 1.1)")
    b2 = Float(1.4, min=0.0, max=10.0, step=0.01, tooltip="backbone factor at the next width (v1 paper: 1.2)")
    s1 = Float(0.9, min=0.0, max=10.0, step=0.01, tooltip="skip connections' low-frequency factor at the deepest width")
    s2 = Float(0.2, min=0.0, max=10.0, step=0.01, tooltip="skip connections' low-frequency factor at the next width")
    outputs = (Output("model", MODEL),)

    def run(self, ctx: RunContext, model: DiffusionModel, variant: str, b1: float, b2: float, s1: float,
            s2: float) -> DiffusionModel:
        return model.with_patch(FreeUScaling(b1, b2, s1, s2, adaptive=variant == "v2"))


class PerturbedAttentionGuidance(Node):
    type = "PerturbedAttentionGuidance"
    display_name = "Perturbed-Attention Guidance"
    category = "model_patches"
    description = (
        "Perturbed-Attention Guidance (Ahn et al. 2024): each step predicts once more with the "
        "prompt but with the middle block's self-attention made the identity (every position "
        "sees only itself, which loses the structure), and moves the result away from that "
        "prediction by `scale`. One more UNet pass per step."
    )

    model = Socket(MODEL)
    scale = Float(3.0, min=0.0, max=100.0, step=0.01, tooltip="how far to move away from the perturbed prediction; 0 is off")
    outputs = (Output("model", MODEL),)

    def run(self, ctx: RunContext, model: DiffusionModel, scale: float) -> DiffusionModel:
        return model.with_patch(PerturbedAttention(scale))


class SelfAttentionGuidance(Node):
    type = "SelfAttentionGuidance"
    display_name = "Self-Attention Guidance"
    category = "model_patches"
    description = (
        "Self-Attention Guidance (Hong et al. 2023): where the middle block's self-attention "
        "of the negative prompt's pass looks most, its estimate of the clean image is blurred, "
        "noised back and predicted again; the result moves away from that prediction by "
        "`scale`, which sharpens what the model attends to. Needs the CFG guider (the negative "
        "pass runs even at scale 1); one more UNet pass per step."
    )

    model = Socket(MODEL)
    scale = Float(0.5, min=-2.0, max=5.0, step=0.01, tooltip="how far to move away from the blurred prediction; 0 is off")
    blur_sigma = Float(2.0, min=0.0, max=10.0, step=0.1, tooltip="the Gaussian blur's sigma in latent cells (9x9 kernel); 0 does not blur")
    outputs = (Output("model", MODEL),)

    def run(self, ctx: RunContext, model: DiffusionModel, scale: float, blur_sigma: float) -> DiffusionModel:
        return model.with_patch(SelfAttentionGuided(scale, blur_sigma))


class PerpNeg(Node):
    type = "PerpNeg"
    display_name = "Perp-Neg (model)"
    category = "model_patches"
    description = (
        "Perp-Neg as a model patch (ComfyUI's older form of the Perp-Neg Guider): the CFG guider "
        "this model goes to pushes away from only the part of the negative prompt's direction "
        "perpendicular to the positive's, both taken from the empty conditioning's prediction."
    )

    model = Socket(MODEL)
    empty_conditioning = Socket(CONDITIONING, tooltip="an empty prompt's conditioning")
    neg_scale = Float(1.0, min=0.0, max=100.0, step=0.01, tooltip="how strongly the perpendicular negative is pushed away from")
    outputs = (Output("model", MODEL),)

    def run(self, ctx: RunContext, model: DiffusionModel, empty_conditioning: Conditioning,
            neg_scale: float) -> DiffusionModel:
        return model.with_patch(PerpendicularNegative(empty_conditioning, neg_scale))


def _factor(what: str) -> Float:
    return Float(1.0, min=0.0, max=10.0, step=0.01, tooltip=f"multiplies the {what} projection's output; 1 leaves it")


class _AttentionMultiply(Node):
    """The two attention-scaling nodes: the same fields, on attn1 or attn2 (``attention``)."""

    attention = ""
    model = Socket(MODEL)
    q, k, v, out = _factor("query"), _factor("key"), _factor("value"), _factor("attention output")
    outputs = (Output("model", MODEL),)

    def run(self, ctx: RunContext, model: DiffusionModel, q: float, k: float, v: float, out: float) -> DiffusionModel:
        return model.with_patch(AttentionScaling(self.attention, q, k, v, out))


class UNetSelfAttentionMultiply(_AttentionMultiply):
    type = "UNetSelfAttentionMultiply"
    display_name = "Scale UNet Self-Attention"
    category = "model_patches"
    description = (
        "Multiplies the outputs of the UNet's self-attention projections (queries, keys, "
        "values, output) while sampling: sharper or softer attention between image regions. "
        "An experiment, as in ComfyUI."
    )
    attention = "attn1"


class UNetCrossAttentionMultiply(_AttentionMultiply):
    type = "UNetCrossAttentionMultiply"
    display_name = "Scale UNet Cross-Attention"
    category = "model_patches"
    description = (
        "Multiplies the outputs of the UNet's cross-attention projections (queries from the "
        "image, keys and values from the prompt, output) while sampling: how strongly the "
        "prompt's tokens are attended to. An experiment, as in ComfyUI."
    )
    attention = "attn2"


class EpsilonScale(Node):
    type = "EpsilonScale"
    display_name = "Epsilon Scaling"
    category = "model_patches"
    description = (
        "Divides each step's noise prediction by `scaling_factor` (Ning et al. 2024): samplers "
        "see slightly less noise than the model predicts, which counters the exposure bias "
        "between training and sampling; 1.005 is the paper's range."
    )

    model = Socket(MODEL)
    scaling_factor = Float(1.005, min=0.5, max=1.5, step=0.001, tooltip="the divisor; 1 leaves the prediction as it is")
    outputs = (Output("model", MODEL),)

    def run(self, ctx: RunContext, model: DiffusionModel, scaling_factor: float) -> DiffusionModel:
        return model.with_patch(EpsilonScaling(scaling_factor))


_RESAMPLING = ("bicubic", "nearest", "bilinear", "area", "bislerp")


class DeepShrink(Node):
    type = "DeepShrink"
    display_name = "Deep Shrink (Kohya)"
    category = "model_patches"
    description = (
        "Kohya's Deep Shrink, for images larger than the model was trained on: during the "
        "first, composition-setting part of the run the UNet works on its features shrunk "
        "after one of its input blocks, and grows them back in the decoder, so the layout "
        "is the one the model knows at its own size (no doubled heads); the later steps "
        "add the detail at full size."
    )

    model = Socket(MODEL)
    block_number = Int(3, min=0, max=32, tooltip="shrink after this input block of the original UNet (0 is the first "
                       "convolution; 3 is the end of the first level in SD 1.x and SDXL)")
    downscale_factor = Float(2.0, min=0.1, max=9.0, step=0.001, tooltip="how much smaller the features become")
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001, tooltip="from this fraction of the run")
    end_percent = Float(0.35, min=0.0, max=1.0, step=0.001, tooltip="until this fraction of the run")
    downscale_after_skip = Bool(True, tooltip="shrink after the block's skip connection is kept (full size to the "
                                "decoder); off shrinks the skip connection too")
    downscale_method = Choice(_RESAMPLING, default="bicubic", tooltip="how the features are shrunk")
    upscale_method = Choice(_RESAMPLING, default="bicubic", tooltip="how they are grown back in the decoder")
    outputs = (Output("model", MODEL),)

    @classmethod
    def check_values(cls, values: dict) -> dict[str, str]:
        if values.get("start_percent", 0.0) > values.get("end_percent", 0.35):
            return {"end_percent": f"end_percent {values['end_percent']} is before start_percent {values['start_percent']}"}
        return {}

    def run(self, ctx: RunContext, model: DiffusionModel, block_number: int, downscale_factor: float,
            start_percent: float, end_percent: float, downscale_after_skip: bool, downscale_method: str,
            upscale_method: str) -> DiffusionModel:
        from nodes.diffusion.impl.patches import input_block_count

        count = input_block_count(model.unet)
        if block_number >= count:
            raise NodeError(f"this UNet has input blocks 0-{count - 1}", field="block_number")
        return model.with_patch(DeepShrinkPatch(block_number, downscale_factor, start_percent, end_percent,
                                               downscale_after_skip, downscale_method, upscale_method))


class DifferentialDiffusion(Node):
    type = "DifferentialDiffusion"
    display_name = "Differential Diffusion"
    category = "model_patches"
    description = (
        "Differential Diffusion (Levin and Fried 2023): reads a latent's soft noise mask as how "
        "much each area may change. Fully masked areas change from the first step, an area of "
        "mask 0.3 only in the last 30% of the run, unmasked areas not at all; so a grey-level "
        "mask blends the inpainted area into its surroundings."
    )

    model = Socket(MODEL)
    strength = Float(1.0, min=0.0, max=1.0, step=0.01,
                     tooltip="1: the thresholded mask; lower mixes in the soft mask as it is")
    outputs = (Output("model", MODEL),)

    def run(self, ctx: RunContext, model: DiffusionModel, strength: float) -> DiffusionModel:
        return model.with_patch(DifferentialMask(strength))
