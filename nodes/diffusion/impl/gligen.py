"""GLIGEN: phrases grounded to boxes, from the published weight files onto a loaded UNet.

A GLIGEN file (e.g. ``gligen_sd14_textbox_pruned.safetensors``) holds no UNet: only a
gated self-attention "fuser" for every transformer block of SD 1.x's UNet, named after the
original (LDM) UNet's blocks (``input_blocks.1.1.transformer_blocks.0.fuser.attn.to_q.weight``),
and the position net (``position_net.linears.0.weight``, ...) that turns each phrase's
pooled CLIP embedding and its box into a grounding token. diffusers runs the same parts
(``GatedSelfAttentionDense`` as ``BasicTransformerBlock.fuser``,
``GLIGENTextBoundingboxProjection`` as ``UNet2DConditionModel.position_net``) when the UNet
is called with ``cross_attention_kwargs={"gligen": ...}``; inside the fusers the names are
the same, so converting is renaming the block prefix (impl/unet_blocks.py counts blocks).

The loaded UNet is a cached value other nodes share, so it is never changed: a GLIGEN
UNet is a structural copy of it whose parameters *are* the base's (no weight is copied)
with the fusers and the position net added, built once per (UNet, GLIGEN file) pair and
kept while both live. Called without grounding it computes exactly what the base does.

Which steps are grounded follows diffusers' StableDiffusionGLIGENPipeline: the fusers run
for the first ``int(fraction x steps)`` steps (its ``gligen_scheduled_sampling_beta``),
and a negative without its own boxes gets the null grounding (every box masked) while they
run. ComfyUI grounds every step and gives the negative the positive's boxes; the ComfyUI
importer sets those two choices (docs/comfyui.md).
"""

from __future__ import annotations

import copy
import itertools
import re
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from nodes.diffusion.impl.ldm import CheckpointError
from nodes.diffusion.types import GroundingModel

MAX_BOXES = 30  # the position net's token count (the published models' max_objs)
NEGATIVE_MODES = ("null boxes", "same boxes")  # diffusers' pipeline, ComfyUI
_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
_POSITION_KEYS = ("null_positive_feature", "null_position_feature", *(f"linears.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")))
_FUSER_KEYS = (
    "linear.weight", "linear.bias", "attn.to_q.weight", "attn.to_k.weight", "attn.to_v.weight",
    "attn.to_out.0.weight", "attn.to_out.0.bias", "ff.net.0.proj.weight", "ff.net.0.proj.bias", "ff.net.2.weight",
    "ff.net.2.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "alpha_attn", "alpha_dense",
)
_BLOCK = re.compile(r"^((?:input_blocks|output_blocks)\.\d+\.\d+|middle_block\.\d+)\.transformer_blocks\.(\d+)$")
_DIFFUSERS_BLOCK = re.compile(r"^(down_blocks\.\d+|mid_block|up_blocks\.\d+)\.attentions\.\d+\.transformer_blocks\.(\d+)$")


class GroundingError(ValueError):
    """GLIGEN weights that do not fit, or boxes that cannot be grounded; the message is for the user."""


@dataclass(frozen=True)
class GroundedPhrase:
    embedding: torch.Tensor  # [phrase_dim]: the phrase's pooled CLIP embedding
    box: tuple[int, int, int, int]  # (width, height, x, y) in pixels


@dataclass(frozen=True)
class Grounding:
    """What a conditioning's ``extras["gligen"]`` holds: the model, its phrases in boxes, and
    how they apply (the last GLIGEN Text Box node of a chain decides the last two)."""

    model: GroundingModel
    phrases: tuple[GroundedPhrase, ...]
    fraction: float = 0.3  # grounded share of the steps
    negative: str = "null boxes"  # what a negative without boxes gets: NEGATIVE_MODES


# -- reading the published files -----------------------------------------------------------


def read_grounding(state: dict[str, torch.Tensor], source: str = "") -> GroundingModel:
    """The GLIGEN weights of a published file's tensors, checked for the text-box layout:
    every fuser complete and of one width to the position net's tokens."""
    state = {_unprefixed(k): v for k, v in state.items()}
    if any(k.startswith(("position_net.linears_text.", "position_net.linears_image.")) for k in state):
        raise CheckpointError("a text-and-image GLIGEN model; only the text-box ones (gligen_*_textbox_*) are supported")
    missing = [f"position_net.{k}" for k in _POSITION_KEYS if f"position_net.{k}" not in state]
    if missing:
        raise CheckpointError(f"not a GLIGEN text-box model: no {', '.join(missing[:3])}")
    position = {k: state[f"position_net.{k}"] for k in _POSITION_KEYS}
    phrase_dim = int(position["null_positive_feature"].shape[0])
    token_dim = int(position["linears.4.weight"].shape[0])
    fusers: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if ".fuser." in key:
            block, rest = key.split(".fuser.", 1)
            if not _BLOCK.match(block):
                raise CheckpointError(f"a fuser at {block!r}, which is not a transformer block of the SD UNet")
            fusers.setdefault(block, {})[rest] = value
    if not fusers:
        raise CheckpointError("not a GLIGEN model: no fuser weights (*.fuser.*)")
    for block, weights in fusers.items():
        lacking = [k for k in _FUSER_KEYS if k not in weights]
        if lacking:
            raise CheckpointError(f"the fuser of {block} is incomplete: no {', '.join(lacking[:3])}")
        if weights["linear.weight"].ndim != 2 or weights["linear.weight"].shape[1] != token_dim:
            raise CheckpointError(f"the fuser of {block} takes {tuple(weights['linear.weight'].shape)[1:]} wide tokens; "
                                  f"the position net makes {token_dim} wide ones")
    weights = {f"{block}.fuser.{k}": v for block, parts in fusers.items() for k, v in parts.items()}
    weights.update({f"position_net.{k}": v for k, v in position.items()})
    return GroundingModel(weights, phrase_dim, source)


def _unprefixed(key: str) -> str:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


# -- the converter -----------------------------------------------------------------------


def diffusers_weights(model: GroundingModel, unet: Any) -> dict[str, torch.Tensor]:
    """``model``'s weights under diffusers' names for ``unet``: ``<transformer block>.fuser.*``
    for each of its transformer blocks and ``position_net.*``. Every block must get a fuser
    and every fuser a block."""
    from nodes.diffusion.impl.unet_blocks import ldm_block

    config = unet.config
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name in _transformer_blocks(unet):
        match = _DIFFUSERS_BLOCK.match(name)
        assert match is not None
        ldm = ldm_block(name + ".", config)
        # The attention is part 1 of its LDM block (after the resnet); the middle block's is block 1 itself.
        block = f"{ldm}.transformer_blocks.{match[2]}" if ldm.startswith("middle_block") else f"{ldm}.1.transformer_blocks.{match[2]}"
        prefix = block + ".fuser."
        found = {k[len(prefix):]: v for k, v in model.weights.items() if k.startswith(prefix)}
        if not found:
            raise GroundingError(f"the GLIGEN model has no fuser for {block} ({name}): it was made for another UNet")
        out.update({f"{name}.fuser.{k}": v for k, v in found.items()})
        used.add(block)
    extra = sorted({k.split(".fuser.")[0] for k in model.weights if ".fuser." in k} - used)
    if extra:
        raise GroundingError(f"the GLIGEN model has fusers for blocks this UNet does not have ({', '.join(extra[:3])}): "
                             "it was made for another UNet")
    out.update({k: v for k, v in model.weights.items() if k.startswith("position_net.")})
    return out


def _transformer_blocks(unet: Any) -> list[str]:
    return [name for name, _ in unet.named_modules() if _DIFFUSERS_BLOCK.match(name)]


# -- the GLIGEN UNet -------------------------------------------------------------------------

_LOCK = threading.Lock()
_GATED: "weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[GroundingModel, Any]]" = weakref.WeakKeyDictionary()


def gated_unet(unet: Any, model: GroundingModel, adapters: tuple[tuple[str, float], ...] = ()) -> Any:
    """``unet`` with ``model``'s fusers and position net: a copy of its modules sharing its
    parameters (the base model is not changed), built once per pair, on the base's device,
    with the LoRA ``adapters`` the run wants switched on as in the base (impl/lora.py)."""
    from nodes.diffusion.impl import lora

    loaded = frozenset(lora.adapter_names(unet))
    with _LOCK:
        built = _GATED.setdefault(unet, weakref.WeakKeyDictionary()).get(model)
        if built is None or built[0] != loaded:  # a LoRA loaded into the base since: its layers are new
            built = (loaded, _build(unet, model))
            _GATED[unet][model] = built
        gated = built[1]
        added = [gated.position_net, *(gated.get_submodule(n).fuser for n in _transformer_blocks(gated))]
        if gated.position_net.null_position_feature.device != unet.device:  # the base was moved
            for module in added:
                module.to(device=unet.device)
    if loaded:
        lora.switch(gated, adapters)
    return gated


def _build(unet: Any, model: GroundingModel) -> Any:
    from diffusers.models.attention import GatedSelfAttentionDense
    from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

    weights = diffusers_weights(model, unet)
    token_dim = int(weights["position_net.linears.4.weight"].shape[0])
    cross = unet.config.cross_attention_dim
    cross = cross[0] if isinstance(cross, (list, tuple)) else cross
    if model.phrase_dim != cross or token_dim != cross:
        raise GroundingError(f"the GLIGEN model takes {model.phrase_dim}-wide phrase embeddings; this UNet's text "
                             f"embeddings are {cross} wide: it was made for another model family")
    shared = {id(t): t for t in itertools.chain(unet.parameters(), unet.buffers())}
    gated = copy.deepcopy(unet, shared)  # new modules, the same parameter objects
    device, dtype = unet.device, unet.dtype
    for name in _transformer_blocks(gated):
        block = gated.get_submodule(name)
        attention = block.attn1
        fuser = GatedSelfAttentionDense(attention.query_dim, cross, attention.heads, attention.inner_dim // attention.heads)
        _load(fuser, weights, f"{name}.fuser.")
        block.fuser = fuser.to(device=device, dtype=dtype).eval()
    position = GLIGENTextBoundingboxProjection(positive_len=cross, out_dim=cross, feature_type="text-only")
    _load(position, weights, "position_net.")
    gated.position_net = position.to(device=device, dtype=dtype).eval()
    return gated


def _load(module: torch.nn.Module, weights: dict[str, torch.Tensor], prefix: str) -> None:
    part = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(part, strict=True)
    except RuntimeError as error:  # shapes that do not fit this UNet's blocks
        first = str(error).strip().splitlines()[-1].strip()
        raise GroundingError(f"the GLIGEN weights of {prefix.rstrip('.')} do not fit this UNet: {first}") from None


# -- at sampling time ------------------------------------------------------------------------


def of(cond: Any) -> Grounding | None:
    """The grounding a conditioning (or any of its stacked parts) carries, if any."""
    return None if cond is None else cond.extras.get("gligen")


def grounded_steps(grounding: Grounding, timesteps: Sequence[float] | None) -> float | None:
    """The lowest timestep still grounded (the fusers run for the first
    ``int(fraction x steps)`` steps, as diffusers' pipeline); None when no step is, and
    -inf (every step) when the sampler's timesteps are not known."""
    if timesteps is None:
        return float("-inf")
    count = int(grounding.fraction * len(timesteps))
    return None if count == 0 else float(timesteps[count - 1])


def unet_kwargs(grounding: Grounding, batch: int, pixel_size: tuple[int, int], null: bool,
                device: Any, dtype: Any) -> dict[str, torch.Tensor]:
    """The position net's inputs for ``batch`` images of ``pixel_size`` (height, width):
    boxes normalised to [x0, y0, x1, y1] of the image, phrase embeddings, masks (all 0 for
    the null grounding), padded to :data:`MAX_BOXES`."""
    height, width = pixel_size
    count = len(grounding.phrases)
    boxes = torch.zeros(MAX_BOXES, 4)
    embeds = torch.zeros(MAX_BOXES, grounding.model.phrase_dim)
    masks = torch.zeros(MAX_BOXES)
    for index, phrase in enumerate(grounding.phrases):
        w, h, x, y = phrase.box
        boxes[index] = torch.tensor([x / width, y / height, (x + w) / width, (y + h) / height])
        embeds[index] = phrase.embedding.float().reshape(-1)
    if not null:
        masks[:count] = 1.0

    def batched(t: torch.Tensor) -> torch.Tensor:
        return t.unsqueeze(0).expand(batch, *t.shape).to(device=device, dtype=dtype)

    return {"boxes": batched(boxes), "positive_embeddings": batched(embeds), "masks": batched(masks)}


class Grounder:
    """A guider's grounding for one run: the GLIGEN UNet, and the extra UNet inputs of its
    positive and negative passes at each timestep ({} where a pass is not grounded)."""

    def __init__(self, positive: Grounding | None, negative: Grounding | None, uses_uncond: bool, unet: Any,
                 batch: int, pixel_size: tuple[int, int], timesteps: Sequence[float] | None,
                 adapters: tuple[tuple[str, float], ...] = ()):
        lead = positive or negative
        assert lead is not None
        if positive is not None and negative is not None and positive.model is not negative.model:
            raise GroundingError("the positive and negative conditionings are grounded by two different GLIGEN models")
        self.unet = gated_unet(unet, lead.model, adapters)
        self.lowest = grounded_steps(positive or negative, timesteps)
        device, dtype = unet.device, unet.dtype
        self.pos = None if positive is None else unet_kwargs(positive, batch, pixel_size, False, device, dtype)
        self.neg = None
        if uses_uncond and negative is not None:
            self.neg = unet_kwargs(negative, batch, pixel_size, False, device, dtype)
        elif uses_uncond and positive is not None:
            self.neg = unet_kwargs(positive, batch, pixel_size, positive.negative == "null boxes", device, dtype)
        self.joint = None
        if self.pos is not None and self.neg is not None:
            self.joint = {k: torch.cat([self.neg[k], self.pos[k]]) for k in self.pos}

    @property
    def shares_batch(self) -> bool:
        """Whether both passes can be one batched call (both grounded, or neither)."""
        return (self.pos is None) == (self.neg is None)

    def active(self, t: torch.Tensor) -> bool:
        if self.lowest is None:
            return False
        return float(t.reshape(-1)[0]) >= self.lowest - 1e-6 * max(1.0, abs(self.lowest))

    def positive(self, t: torch.Tensor) -> dict[str, Any]:
        return self._kwargs(self.pos, t)

    def negative(self, t: torch.Tensor) -> dict[str, Any]:
        return self._kwargs(self.neg, t)

    def both(self, t: torch.Tensor) -> dict[str, Any]:
        """The batched call's inputs, uncond first (as the guider batches them)."""
        return self._kwargs(self.joint, t)

    def _kwargs(self, inputs: dict[str, torch.Tensor] | None, t: torch.Tensor) -> dict[str, Any]:
        if inputs is None or not self.active(t):
            return {}
        return {"cross_attention_kwargs": {"gligen": dict(inputs)}}
