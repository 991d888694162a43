"""The values that travel on the diffusion pack's links, and their data types.

Each record is followed by the :class:`~nodeflow.DataType` that carries it, the one
object node declarations name (``Socket(LATENT)``). Plain records; the behaviour lives
in the nodes and their helpers. Tensors live on the run's device and are never modified
in place by a consumer (the executor caches them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nodeflow import DataType

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelFamily:
    """What a checkpoint is: decides latent channels, tokenizer padding, pooled outputs."""

    name: str  # "sd1", "sd2", "sdxl", "bundled", ...
    latent_channels: int = 4
    vae_scale_factor: int = 8
    uses_pooled: bool = False  # SDXL: pooled text embeds + time ids


@dataclass(frozen=True)
class LatentFormat:
    """A model whose own latent space is not its autoencoder's (Playground v2.5): per
    channel, model = (raw - ``mean``) * ``scale`` / ``std``, where raw is the autoencoder's
    latent and nodeflow's latents are raw times ``outside_scale`` (the family's usual VAE
    scaling). The Sampler converts in and out; every other node sees nodeflow's latents."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float
    outside_scale: float


@dataclass(frozen=True)
class ModelPatch:
    """A change to how a UNet predicts, made by a patch node (FreeU, Rescale CFG, ...).
    The UNet object is shared with the model the patch node was given, so a patch is
    only a record on the new model: it takes effect while that model samples
    (impl/patches.py) and the cached input model runs as it was."""


@dataclass(frozen=True)
class RescaledGuidance(ModelPatch):
    """Classifier-free guidance rescaled in v space (Lin et al. 2023, section 3.4), as
    ComfyUI's RescaleCFG: the guided v's spread matched to the prompt's, by ``multiplier``."""

    multiplier: float


@dataclass(frozen=True)
class FreeUScaling(ModelPatch):
    """FreeU (Si et al. 2023): in the decoder, the backbone features of the two deepest
    widths are scaled by ``b1`` / ``b2`` and the low frequencies of their skip features by
    ``s1`` / ``s2``; ``adaptive`` (FreeU v2) scales each position by its mean activation."""

    b1: float
    b2: float
    s1: float
    s2: float
    adaptive: bool = True


@dataclass(frozen=True)
class PerturbedAttention(ModelPatch):
    """Perturbed-Attention Guidance (Ahn et al. 2024): one more pass with the prompt whose
    middle-block self-attention is the identity, and the result moved away from it by ``scale``."""

    scale: float


@dataclass(frozen=True)
class SelfAttentionGuided(ModelPatch):
    """Self-Attention Guidance (Hong et al. 2023): the negative pass's clean estimate is
    blurred (Gaussian, ``blur_sigma``) where the middle block's self-attention looks most,
    noised back, predicted again, and the result moved away from that prediction by ``scale``."""

    scale: float
    blur_sigma: float = 2.0


@dataclass(frozen=True, eq=False)  # holds tensors: compared by identity
class PerpendicularNegative(ModelPatch):
    """Perp-Neg (Armandpour et al. 2023): guidance away from only the part of the negative
    prompt's direction that is perpendicular to the positive's (both taken from the
    ``empty`` prompt's prediction), times ``neg_scale``, so a negative that overlaps the
    positive does not cancel it."""

    empty: "Conditioning"
    neg_scale: float = 1.0


@dataclass(frozen=True, eq=False)  # holds tensors: compared by identity
class DualGuidance(ModelPatch):
    """Guidance over three conditionings (ComfyUI's DualCFGGuider): the guider's positive,
    this ``middle`` one and the negative. regular: CFG from the negative to the middle at the
    guider's scale, plus ``middle_scale`` times the positive's difference from the middle;
    nested: CFG from the middle to the positive at ``middle_scale``, then from the negative
    to that at the guider's scale."""

    middle: "Conditioning"
    middle_scale: float = 8.0
    nested: bool = False


@dataclass(frozen=True)
class DeepShrink(ModelPatch):
    """Kohya's Deep Shrink (ComfyUI's PatchModelAddDownscale): while the run is between
    ``start`` and ``end`` (fractions of the schedule), the features after the original
    UNet's input block ``block`` are shrunk by ``factor`` and grown back in the decoder,
    so a size the model was not trained for keeps the composition of one it was."""

    block: int = 3
    factor: float = 2.0
    start: float = 0.0
    end: float = 0.35
    after_skip: bool = True
    downscale_method: str = "bicubic"
    upscale_method: str = "bicubic"


@dataclass(frozen=True)
class AttentionScaling(ModelPatch):
    """The UNet's self-attention (``attn1``) or cross-attention (``attn2``) projections'
    outputs multiplied: queries ``q``, keys ``k``, values ``v`` and the output ``out``
    (ComfyUI's UNetSelfAttentionMultiply / UNetCrossAttentionMultiply)."""

    attention: str  # "attn1" or "attn2"
    q: float = 1.0
    k: float = 1.0
    v: float = 1.0
    out: float = 1.0


@dataclass(frozen=True)
class EpsilonScaling(ModelPatch):
    """Epsilon scaling (Ning et al. 2024, exposure bias): each step's noise prediction is
    divided by ``factor`` (slightly above 1), which pulls the estimate towards the data."""

    factor: float = 1.005


@dataclass(frozen=True)
class DifferentialMask(ModelPatch):
    """Differential Diffusion (Levin and Fried 2023): a soft noise mask read as "how much
    may change": a position is free to change from the step whose progress reaches its
    mask value, so greyer areas change less. ``strength`` below 1 mixes in the soft mask."""

    strength: float = 1.0


@dataclass
class DiffusionModel:
    unet: Any  # diffusers UNet2DConditionModel
    family: ModelFamily
    scheduler_config: dict[str, Any]  # the checkpoint's scheduler config (betas, prediction type, ...)
    dtype: "torch.dtype | None" = None
    source: str = ""
    latent_rgb: "torch.Tensor | None" = None  # the checkpoint's own preview map, when it has one
    # LoRA adapters (PEFT adapter name, strength) switched on when this model runs; the UNet
    # object is shared with the base model, which runs with none (impl/lora.py).
    adapters: tuple[tuple[str, float], ...] = ()
    # How it samples beyond its scheduler config: "" as usual; "lcm" a latent-consistency-
    # distilled UNet (ModelSampling lcm), which only the lcm sampler runs as distilled (its
    # 50-step grid and boundary condition); "edm" continuous EDM sampling (ModelSamplingEDM,
    # impl/edm.py), its config then an EDM scheduler's.
    sampling: str = ""
    # unCLIP models: the image normaliser's (mean, std), each [1, D], when the model ships one
    # (diffusers folders); None is the identity, as for published single files (impl/unclip.py).
    image_stats: "tuple[torch.Tensor, torch.Tensor] | None" = None
    # Patch nodes' changes to how it predicts, in the order they were applied (ModelPatch).
    patches: tuple[ModelPatch, ...] = ()
    # Its own latent space, when it is not its autoencoder's (Playground v2.5); None: the same.
    latent_format: LatentFormat | None = None

    def with_patch(self, patch: ModelPatch) -> "DiffusionModel":
        """A new record of this model, on the same UNet, with ``patch`` applied after the others."""
        from dataclasses import replace

        return replace(self, patches=self.patches + (patch,))

    def patches_of(self, kind: type) -> list[Any]:
        """This model's patches of one kind, in the order they were applied."""
        return [patch for patch in self.patches if isinstance(patch, kind)]


MODEL = DataType("MODEL", (180, 130, 230), "A denoising UNet with its noise-schedule configuration", DiffusionModel)


@dataclass
class TextEncoders:
    tokenizers: list[Any]  # one per encoder (SDXL has two)
    encoders: list[Any]  # transformers CLIPTextModel / CLIPTextModelWithProjection
    family: ModelFamily
    pad_token_ids: list[int] = field(default_factory=list)
    vision: Any = None  # CLIPVisionModelWithProjection when the model carries one (bundled model)
    source: str = ""
    adapters: tuple[tuple[str, float], ...] = ()  # LoRA adapters on when encoding, as DiffusionModel's


CLIP = DataType("CLIP", (240, 210, 80), "Tokenizer(s) and text encoder(s)", TextEncoders)


@dataclass
class Autoencoder:
    vae: Any  # diffusers AutoencoderKL
    family: ModelFamily
    scaling_factor: float = 0.18215
    shift_factor: float = 0.0
    latent_rgb: "torch.Tensor | None" = None  # [C+1, 3] cheap latent -> RGB preview map (last row: bias)
    source: str = ""


VAE = DataType("VAE", (240, 100, 100), "Autoencoder between pixels and latents", Autoencoder)


@dataclass
class Conditioning:
    embeds: "torch.Tensor"  # [B, tokens, dim] hidden states for cross-attention
    pooled: "torch.Tensor | None" = None  # [B, dim] for families that use it (SDXL)
    extras: dict[str, Any] = field(default_factory=dict)
    # Where and when it applies (ConditioningSetArea / ConditioningSetTimestepRange):
    area: tuple[int, int, int, int] | None = None  # (width, height, x, y) in pixels; None = everywhere
    # (width, height, x, y) as fractions of the image (ConditioningSetAreaPercentage); set
    # instead of ``area``, resolved against the latent's size when sampling.
    area_fraction: tuple[float, float, float, float] | None = None
    strength: float = 1.0  # its weight where areas overlap
    # ConditioningSetMask: a MASK [B or 1, H, W] (any size, resized to the latent) that
    # weights this part's prediction per cell, times ``mask_strength``; ``mask_bounds``
    # predicts only the mask's bounding box (instead of ``area``, or the whole latent).
    mask: "torch.Tensor | None" = None
    mask_strength: float = 1.0
    mask_bounds: bool = False
    timestep_range: tuple[float, float] | None = None  # (start, end) as fractions of the schedule
    # Further conditionings predicted separately and averaged with this one, weighted by
    # strength over their areas (ConditioningStack, ComfyUI's ConditioningCombine).
    others: tuple["Conditioning", ...] = ()

    def parts(self) -> list["Conditioning"]:
        """This conditioning and its others, each on its own."""
        from dataclasses import replace

        return [replace(self, others=()), *self.others]

    @property
    def regional(self) -> bool:
        return (self.area is not None or self.area_fraction is not None or self.mask is not None
                or self.timestep_range is not None or bool(self.others))


CONDITIONING = DataType("CONDITIONING", (240, 160, 60), "Text embeddings the UNet cross-attends to", Conditioning)


@dataclass
class Latent:
    samples: "torch.Tensor"  # [B, C, h, w], unscaled-by-VAE convention: already multiplied by scaling_factor
    family: ModelFamily | None = None
    # [B or 1, H, W] in [0, 1]: where a Sampler may change the latent (1) and where it keeps
    # it (0); any size, resized to the latent's. None: everywhere (SetLatentNoiseMask).
    noise_mask: "torch.Tensor | None" = None
    # Which starting noise of a seeded batch draw each latent gets (ComfyUI's batch_index):
    # latent i gets draw number batch_index[i]. None is the usual draw, latent i the i-th.
    # LatentFromBatch keeps the numbers a latent had in its batch, so one image taken from
    # a batch samples as it did there; LatentBatchSeedBehavior "fixed" gives all the first's.
    batch_index: tuple[int, ...] | None = None


LATENT = DataType("LATENT", (240, 130, 200), "A batch of latent images", Latent)


@dataclass(frozen=True)
class NoiseSource:
    """Starting noise drawn from a CPU generator seeded with ``seed`` (same image on every
    device). ``seed is None`` means no noise (zeros), for ComfyUI's DisableNoise."""

    seed: int | None


NOISE = DataType("NOISE", (200, 200, 200), "A seeded source of starting noise", NoiseSource)


@dataclass
class ControlModel:
    """A ControlNet (diffusers ControlNetModel), a ControlNet Union (ControlNetUnionModel,
    one network for several hint kinds) or a T2I-Adapter (diffusers T2IAdapter)."""

    model: Any
    kind: str  # "controlnet", "controlnet_union" or "t2i_adapter"
    source: str = ""
    # A union's control type: the index of the hint kind in the model's task embeddings;
    # None is "auto" (no type: the hint is encoded as a plain ControlNet's, as in ComfyUI).
    union_type: int | None = None


CONTROL_NET = DataType("CONTROL_NET", (0, 170, 120), "A ControlNet or T2I-Adapter that steers the UNet with a hint image", ControlModel)


@dataclass(eq=False)  # compared by identity: the GLIGEN UNet built from it is cached per record
class GroundingModel:
    """GLIGEN's grounding weights (issue 11): a gated self-attention "fuser" per transformer
    block and the position net that turns (phrase, box) pairs into grounding tokens, kept
    under the names of the published files (``input_blocks.1.1.transformer_blocks.0.fuser.*``,
    ``position_net.*``); they are renamed to the UNet they join when it samples (impl/gligen.py)."""

    weights: dict[str, Any]  # tensors, the published layout's names
    phrase_dim: int  # the text encoder width its phrase embeddings have (768 for SD 1.x)
    source: str = ""


GLIGEN = DataType("GLIGEN", (230, 190, 120), "GLIGEN grounding weights: phrases placed in boxes", GroundingModel)


@dataclass
class UpscaleModel:
    """An image-to-image network spandrel recognised from its weights (ESRGAN, Real-ESRGAN
    compact, SwinIR, DAT, HAT, ...), ready to run on RGB images."""

    descriptor: Any  # spandrel ImageModelDescriptor (the network, its scale and size needs)
    architecture: str  # spandrel's name for it, e.g. "ESRGAN"
    scale: int  # output side / input side
    features: int = 64  # channels of its first layer, for the working-memory estimate
    tiling: str = "supported"  # spandrel's advice: "supported", "discouraged", "internal" (tiles itself)
    source: str = ""


UPSCALE_MODEL = DataType("UPSCALE_MODEL", (150, 110, 240), "An image upscaling network (ESRGAN, SwinIR, ...)", UpscaleModel)


@dataclass(frozen=True)
class Sigmas:
    """An explicit noise schedule: k-diffusion sigmas from the noisiest step down to the
    last (usually 0), one more than the steps. ``start`` / ``stop`` are the window of
    steps that run (SplitSigmas, a denoise below 1): steps [start, stop) of the whole
    list, so a sampler knows where in the schedule it is; a window that stops early
    hands on a still-noisy latent."""

    values: tuple[float, ...]
    start: int = 0
    end: int | None = None  # None: the last step

    @property
    def steps(self) -> int:
        return len(self.values) - 1

    @property
    def stop(self) -> int:
        return self.steps if self.end is None else min(self.end, self.steps)


SIGMAS = DataType("SIGMAS", (120, 220, 220), "An explicit noise schedule: the sigma of each step", Sigmas)


# IMAGE values are torch tensors [B, H, W, 3], float32 in [0, 1], on the CPU (the class is
# not named here: importing torch would make every start-up pay for it).
IMAGE = DataType("IMAGE", (100, 160, 240), "A batch of RGB images, values in [0, 1]")

# MASK values are torch tensors [B, H, W], float32 in [0, 1], on the CPU: 1 marks the
# masked area (what inpainting repaints), as in ComfyUI.
MASK = DataType("MASK", (120, 200, 120), "A batch of masks, one value in [0, 1] per pixel (1 = masked)")

# GUIDER values are nodes.diffusion.impl.guidance.Guider objects (which import torch).
GUIDER = DataType("GUIDER", (100, 200, 160), "How the model is steered by conditioning (e.g. CFG)")

@dataclass
class VisionModel:
    """A CLIP image encoder (transformers CLIPVisionModelWithProjection) and the pixels it
    was trained on: square images of ``image_size``, normalised with ``mean``/``std``."""

    model: Any
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str = ""


CLIP_VISION = DataType("CLIP_VISION", (160, 200, 255), "A CLIP image encoder", VisionModel)


@dataclass
class VisionOutput:
    """What a CLIP image encoder says about a batch of images."""

    image_embeds: "torch.Tensor"  # [B, projection_dim]: the projected embedding (unCLIP's input)
    penultimate_hidden_states: "torch.Tensor"  # [B, tokens, hidden]: the second-to-last layer's output
    last_hidden_state: "torch.Tensor"  # [B, tokens, hidden]


CLIP_VISION_OUTPUT = DataType("CLIP_VISION_OUTPUT", (120, 170, 230), "CLIP image embeddings of a batch of images",
                              VisionOutput)

DATA_TYPES = (MODEL, CLIP, VAE, CONDITIONING, LATENT, IMAGE, NOISE, GUIDER, CONTROL_NET, MASK, UPSCALE_MODEL,
              CLIP_VISION, CLIP_VISION_OUTPUT, SIGMAS, GLIGEN)
