"""The diffusion nodes' memory estimates before a run (``Node.estimate_memory``), without torch.

What travels between the estimates (the ``facts`` of a :class:`nodeflow.MemoryEstimate`):

- a model (Checkpoint's outputs, passed on by CFG/BasicGuider): ``weights`` (bytes at the
  chosen precision, from the file's safetensors header or its size; ``unet_weights`` and
  ``vae_weights`` the parts a sampler and a decode use on the device), ``itemsize`` and
  ``vae_itemsize`` (bytes per value), ``unet`` (channels and transformers per level, layers
  per block: :func:`nodes.diffusion.impl.memory.unet_shape`) and ``vae_channels`` (the VAE's
  first block width), from a folder's configs, SD 1.x's for a single file, ``latent_channels``,
  ``vae_factor`` and, for a guider, ``copies`` (2 with a negative prompt);
- a latent (EmptyLatent's, passed on by the Sampler): ``latent_shape`` and ``sized_at``
  (node id, field) naming where its size was set, so a sampler whose activations cannot
  fit is refused on the EmptyLatent's ``batch`` or ``width``.

The working-memory figures are the same functions the nodes' run-time checks use
(:mod:`nodes.diffusion.impl.memory`), so the estimate and the check cannot disagree.
"""

from __future__ import annotations

import functools
import json
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from nodeflow import MemoryEstimate, MemoryNeed, NodeError, RunContext, Upstream

from nodes.diffusion.impl.memory import SD_UNET, sampler_bytes, tiled_decode_bytes, unet_shape, vae_bytes

MAX_HEADER = 100 * 2**20  # safetensors refuses larger headers too
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
VAE_KEYS = ("first_stage_model.",)
UNET_KEYS = ("model.diffusion_model.",)
FLOATS = ("F64", "F32", "F16", "BF16")
SD = {"unet": SD_UNET, "vae_channels": 128, "latent_channels": 4, "vae_factor": 8}


def _itemsize(dtype: str, device: str) -> int:
    """As nodes.diffusion.impl.loading.resolve_dtype, in bytes: auto is 2 on a GPU, 4 on the CPU."""
    if dtype == "auto":
        return 4 if str(device).startswith("cpu") else 2
    return 4 if dtype == "fp32" else 2


def checkpoint(cls: Any, values: Mapping[str, Any], inputs: Mapping[str, Upstream], ctx: RunContext) -> MemoryEstimate | None:
    """A checkpoint holds its weights at the chosen precision (the VAE in fp32 when it is upcast)."""
    from nodes.diffusion.impl.paths import resolve_model_path

    if "checkpoint" not in values:
        return None
    try:
        path = resolve_model_path(values["checkpoint"], "checkpoints", ctx.settings)
    except (NodeError, OSError):
        return None  # validation reports it
    itemsize = _itemsize(values.get("dtype", "auto"), ctx.device)
    vae_dtype = values.get("vae_dtype", "auto")
    vae_itemsize = 2 if vae_dtype in ("fp16", "bf16") or (vae_dtype == "auto" and values.get("dtype") == "bf16") else 4
    facts = dict(SD, itemsize=itemsize, vae_itemsize=vae_itemsize)
    if path.is_dir():
        parts = _folder_weights(path, itemsize, vae_itemsize)
        facts.update(_folder_shapes(path))
    else:
        parts = _file_weights(path, itemsize, vae_itemsize)
    weights = sum(parts.values())
    facts.update(weights=weights, unet_weights=parts.get("unet", weights), vae_weights=parts.get("vae", 0))
    field = "dtype" if itemsize == 4 else "checkpoint"
    return MemoryEstimate(holds=weights, holds_field=field, facts=facts)


def guider(copies: int):
    def estimate(cls: Any, values: Mapping[str, Any], inputs: Mapping[str, Upstream], ctx: RunContext) -> MemoryEstimate | None:
        model = inputs.get("model")
        facts = dict(model.facts) if model is not None else dict(SD)
        facts["copies"] = copies
        return MemoryEstimate(facts=facts)
    return estimate


def empty_latent(cls: Any, values: Mapping[str, Any], inputs: Mapping[str, Upstream], ctx: RunContext) -> MemoryEstimate | None:
    width, height, batch = (values.get(k) for k in ("width", "height", "batch"))
    if not all(isinstance(v, int) for v in (width, height, batch)):
        return None
    source = inputs.get("vae") or inputs.get("model")
    model = source.facts if source is not None else SD
    factor, channels = int(model.get("vae_factor", 8)), int(model.get("latent_channels", 4))
    field = "batch" if batch > 1 else ("width" if width >= height else "height")
    shape = (batch, channels, height // factor, width // factor)
    return MemoryEstimate(facts={"latent_shape": shape, "sized_at": (ctx.node_id, field), "vae_factor": factor})


def _latent_and_model(inputs: Mapping[str, Upstream], model_input: str) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """The facts of the latent input (None when its shape is not known) and of the model input."""
    latent = inputs.get("latent")
    if latent is None or latent.facts.get("latent_shape") is None:
        return None
    return latent.facts, inputs[model_input].facts if model_input in inputs else SD


def sampler(cls: Any, values: Mapping[str, Any], inputs: Mapping[str, Upstream], ctx: RunContext) -> MemoryEstimate | None:
    found = _latent_and_model(inputs, "guider")
    if found is None:
        return None
    latent, model = found
    batch, _, h, w = latent["latent_shape"]
    need = sampler_bytes(batch, int(model.get("copies", 2)), h, w, tuple(model.get("unet", SD_UNET)),
                         int(model.get("itemsize", 4)))
    node_id, field = latent.get("sized_at", (None, "latent"))
    what = f"sampling a {batch} x {w}x{h} latent"
    uses = model.get("unet_weights")
    return MemoryEstimate(need=MemoryNeed(need, field, what, "make the image or the batch smaller", node_id),
                          uses=int(uses) if uses is not None else None, facts=dict(latent))


def vae_decode(cls: Any, values: Mapping[str, Any], inputs: Mapping[str, Upstream], ctx: RunContext) -> MemoryEstimate | None:
    from nodes.diffusion.vae import AUTO_TILE_PIXELS

    found = _latent_and_model(inputs, "vae")
    if found is None:
        return None
    latent, vae = found
    shape = latent["latent_shape"]
    factor = int(vae.get("vae_factor", latent.get("vae_factor", 8)))
    batch, height, width = shape[0], shape[2] * factor, shape[3] * factor
    channels, itemsize = int(vae.get("vae_channels", 128)), int(vae.get("vae_itemsize", 4))
    tiling, tile = values.get("tiling", "auto"), int(values.get("tile_size", 512))
    if tiling == "on" or (tiling == "auto" and height * width > AUTO_TILE_PIXELS):
        node_id, field = latent.get("sized_at", (None, "tile_size"))
        need = MemoryNeed(tiled_decode_bytes(batch, height, width, tile, channels, itemsize), field,
                          f"decoding {batch} x {width}x{height} in tiles of {tile}", "make the image or the batch smaller",
                          node_id)
    else:
        need = MemoryNeed(vae_bytes(batch, height, width, channels, itemsize), "tiling",
                          f"decoding {batch} x {width}x{height} without tiles", "set tiling to on or auto")
    uses = vae.get("vae_weights")
    image = {"image_shape": (batch, height, width), "sized_at": latent.get("sized_at", (ctx.node_id, "latent"))}
    return MemoryEstimate(need=need, uses=int(uses) if uses is not None else None, facts=image)


# -- weights from files ------------------------------------------------------------------


def _file_weights(path: Path, itemsize: int, vae_itemsize: int) -> dict[str, int]:
    """Bytes of a weights file's tensors at the chosen precision, per part ("unet", "vae",
    "text"): floating tensors at ``itemsize`` (the VAE's at ``vae_itemsize``), others as
    stored; the file's size as "unet" when it is not a readable .safetensors (a .ckpt:
    its pickled tensors are not counted apart)."""
    header = safetensors_header(path) if path.suffix.lower() == ".safetensors" else None
    if header is None:
        try:
            return {"unet": path.stat().st_size}
        except OSError:
            return {}
    parts: dict[str, int] = {}
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        count = 1
        for side in entry.get("shape", ()):
            count *= int(side)
        dtype = str(entry.get("dtype"))
        part = "vae" if name.startswith(VAE_KEYS) else "unet" if name.startswith(UNET_KEYS) else "text"
        size = (vae_itemsize if part == "vae" else itemsize) if dtype in FLOATS else ITEMSIZE.get(dtype, 4)
        parts[part] = parts.get(part, 0) + count * size
    return parts


def safetensors_header(path: Path) -> dict[str, Any] | None:
    """The file's header (tensor names, dtypes, shapes), read once per file version: an
    SD 1.5 file's is about 100 kB of JSON, and every run of a workflow estimates again."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _header(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _header(path: str, size: int, mtime_ns: int) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if not 0 < length <= MAX_HEADER:
                return None
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error):
        return None
    return header if isinstance(header, dict) else None


def _folder_weights(folder: Path, itemsize: int, vae_itemsize: int) -> dict[str, int]:
    parts: dict[str, int] = {}
    for component in ("unet", "vae", "text_encoder", "text_encoder_2", "image_encoder"):
        where = folder / component
        files = sorted(where.glob("*.safetensors")) if where.is_dir() else []
        if not files and where.is_dir():
            files = sorted(p for p in where.iterdir() if p.suffix in (".bin", ".ckpt", ".pt"))
        plain = [p for p in files if ".fp16." not in p.name] or files  # a folder with both: the loader reads one
        part = component if component in ("unet", "vae") else "text"
        for file in plain:
            size = vae_itemsize if part == "vae" else itemsize
            parts[part] = parts.get(part, 0) + sum(_file_weights(file, size, size).values())
    return parts


def _folder_shapes(folder: Path) -> dict[str, int]:
    shapes = {}
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
        shapes["unet"] = unet_shape(unet)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass
    try:
        vae = json.loads((folder / "vae" / "config.json").read_text())
        shapes["vae_channels"] = int(vae["block_out_channels"][0])
        shapes["latent_channels"] = int(vae.get("latent_channels", 4))
        shapes["vae_factor"] = 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass
    return shapes


# -- nodes that change sizes or add weights ------------------------------------------------
#
# An image travels as ``image_shape`` (batch, height, width) with ``sized_at`` (node id,
# field) as a latent does, so a VAE encode or an upscale too big for the budget is refused
# on the LoadImage or the node that set its size before the run reads a pixel.


def load_image(cls: Any, values: Mapping[str, Any], inputs: Mapping[str, Upstream], ctx: RunContext) -> MemoryEstimate | None:
    """The image's size from its header (PIL opens lazily: no pixels are decoded); the run
    holds it as float32 RGB plus a mask, and decodes it as 8-bit RGBA first."""
    from PIL import Image

    from nodes.diffusion.images import _inside

    try:
        with Image.open(_inside(Path(ctx.input_dir), values.get("image", ""), ctx.settings)) as image:
            width, height = image.size
    except (NodeError, OSError, ValueError, Image.DecompressionBombError):
        return None  # check_host or the run reports it
    pixels = width * height
    need = MemoryNeed(pixels * (4 + 3 * 4 + 4), "image", f"reading a {width}x{height} image", "use a smaller image")
    return MemoryEstimate(need=need, facts={"image_shape": (1, height, width), "sized_at": (ctx.node_id, "image")})


def vae_encode(cls: Any, values: Mapping[str, Any], inputs: Mapping[str, Upstream], ctx: RunContext) -> MemoryEstimate | None:
    image = inputs.get("image")
    if image is None or image.facts.get("image_shape") is None:
        return None
    vae = inputs["vae"].facts if "vae" in inputs else SD
    batch, height, width = image.facts["image_shape"]
    factor, channels = int(vae.get("vae_factor", 8)), int(vae.get("vae_channels", 128))
    node_id, field = image.facts.get("sized_at", (None, "image"))
    need = MemoryNeed(vae_bytes(batch, height, width, channels, int(vae.get("vae_itemsize", 4))), field,
                      f"encoding {batch} x {width}x{height}", "use a smaller image (e.g. scale it down first)", node_id)
    shape = (batch, int(vae.get("latent_channels", 4)), height // factor, width // factor)
    uses = vae.get("vae_weights")
    return MemoryEstimate(need=need, uses=int(uses) if uses is not None else None,
                          facts={"latent_shape": shape, "sized_at": (node_id, field), "vae_factor": factor})


def latent_upscale(cls: Any, values: Mapping[str, Any], inputs: Mapping[str, Upstream], ctx: RunContext) -> MemoryEstimate | None:
    """The resized latent's shape, as LatentUpscale.run computes it; the size is now this node's."""
    latent = inputs.get("latent")
    if latent is None or latent.facts.get("latent_shape") is None:
        return None
    batch, channels, h, w = latent.facts["latent_shape"]
    factor = int(latent.facts.get("vae_factor", 8))
    width, height, scale = int(values.get("width", 0)), int(values.get("height", 0)), float(values.get("scale_by", 1.5))
    if width == 0 and height == 0:
        size, field = (max(1, round(h * scale)), max(1, round(w * scale))), "scale_by"
    else:
        new_w, new_h = (width // factor or None), (height // factor or None)
        new_w = new_w or max(1, round(w * new_h / h))
        new_h = new_h or max(1, round(h * new_w / w))
        size, field = (new_h, new_w), "width" if width else "height"
    return MemoryEstimate(facts={**latent.facts, "latent_shape": (batch, channels, *size), "sized_at": (ctx.node_id, field)})


def weights_loader(kind: str, name_field: str):
    """A loader of one weights file (a ControlNet, an upscale model): its tensors at the
    chosen precision, from the header; an upscale model's scale and width too."""
    def estimate(cls: Any, values: Mapping[str, Any], inputs: Mapping[str, Upstream], ctx: RunContext) -> MemoryEstimate | None:
        from nodes.diffusion.impl.paths import lone_model_layout, resolve_model_path

        try:
            path = resolve_model_path(values.get(name_field, ""), kind, ctx.settings)
        except (NodeError, OSError):
            return None
        itemsize = _itemsize(values.get("dtype", "auto"), ctx.device)
        if path.is_dir():
            layout = lone_model_layout(path, kind)
            stem = layout[1] if layout else ""
            ours = [p for p in sorted(path.glob("*.safetensors"))  # the layout's weights (or shards), not a neighbour's
                    if stem and (p.name.split(".")[0] == stem or p.name.startswith(stem + "-"))]
            files = ours or sorted(path.glob("*.safetensors")) or sorted(p for p in path.iterdir() if p.suffix in (".bin", ".pth"))
            weights = sum(sum(_file_weights(file, itemsize, itemsize).values()) for file in files)
        else:
            weights = sum(_file_weights(path, itemsize, itemsize).values())
        facts: dict[str, Any] = {"weights": weights, "itemsize": itemsize}
        if kind == "upscale_models" and not path.is_dir():
            facts.update(_upscaler_shape(path))
        return MemoryEstimate(holds=weights, holds_field="dtype" if itemsize == 4 else name_field, facts=facts)
    return estimate


def _upscaler_shape(path: Path) -> dict[str, int]:
    """``scale``: a name's "4x" prefix, else a pixel-shuffle layer's 3 x scale² outputs,
    else 4 (the common upper side); ``features``: the widest layer reading the 3 input
    channels (what UpscaleModel.features is after loading)."""
    import re

    shapes = [entry.get("shape") for name, entry in (safetensors_header(path) or {}).items()
              if name != "__metadata__" and isinstance(entry, dict) and len(entry.get("shape", ())) == 4]
    features = max((int(s[0]) for s in shapes if int(s[1]) == 3), default=64)
    named = re.match(r"(\d+)x", path.name.lower())
    shuffled = [s for s in (2, 3, 4, 8) if any(int(shape[0]) == 3 * s * s for shape in shapes)]
    scale = int(named.group(1)) if named else (max(shuffled) if shuffled else 4)
    return {"scale": max(1, scale), "features": features}


def image_upscale(cls: Any, values: Mapping[str, Any], inputs: Mapping[str, Upstream], ctx: RunContext) -> MemoryEstimate | None:
    """Upscaling by the model's scale, whole or in tiles as the run would choose; the
    output's size is the input's times the scale."""
    from types import SimpleNamespace

    from nodes.diffusion.impl.memory import upscale_need
    from nodes.diffusion.upscale import _tile

    image, model = inputs.get("image"), inputs.get("upscale_model")
    if image is None or image.facts.get("image_shape") is None:
        return None
    facts = model.facts if model is not None else {}
    net = SimpleNamespace(scale=int(facts.get("scale", 4)), features=int(facts.get("features", 64)), tiling="supported")
    batch, height, width = image.facts["image_shape"]
    tile = _tile(net, batch, height, width, values.get("tiling", "auto"), int(values.get("tile_size", 512)), ctx.settings)
    need = upscale_need(net, batch, height, width, tile)
    uses = facts.get("weights")
    return MemoryEstimate(need=replace(need, node_id=ctx.node_id), uses=int(uses) if uses is not None else None,
                          facts={"image_shape": (batch, height * net.scale, width * net.scale),
                                 "sized_at": image.facts.get("sized_at", (ctx.node_id, "image"))})


def lora(cls: Any, values: Mapping[str, Any], inputs: Mapping[str, Upstream], ctx: RunContext) -> MemoryEstimate | None:
    """A LoRA adds its low-rank weights to the models it patches (held beside them as
    adapters, at the model's precision); what it patches passes on, a little larger."""
    from nodes.diffusion.impl.paths import resolve_model_path

    model = inputs.get("model")
    facts = dict(model.facts) if model is not None else dict(SD)
    try:
        path = resolve_model_path(values.get("lora_name", ""), "loras", ctx.settings)
    except (NodeError, OSError):
        return MemoryEstimate(facts=facts)
    itemsize = int(facts.get("itemsize", 4))
    added = sum(_file_weights(path, itemsize, itemsize).values())
    facts.update(weights=int(facts.get("weights", 0)) + added, unet_weights=int(facts.get("unet_weights", 0)) + added)
    return MemoryEstimate(holds=added, holds_field="lora_name", facts=facts)


# -- a model's parts from their own files (UNet, text encoders) --------------------------


def unet_file(cls: Any, values: Mapping[str, Any], inputs: Mapping[str, Upstream], ctx: RunContext) -> MemoryEstimate | None:
    """A UNet file (or a whole checkpoint in the UNet folder, of which only the UNet is
    kept, or a diffusers folder) holds its UNet's weights at the chosen precision; the
    model's facts are a checkpoint's without the VAE and text encoders."""
    from nodes.diffusion.impl.paths import resolve_model_path

    try:
        path = resolve_model_path(values.get("unet", ""), "unet", ctx.settings)
    except (NodeError, OSError):
        return None  # validation reports it
    itemsize = _itemsize(values.get("dtype", "auto"), ctx.device)
    facts = dict(SD, itemsize=itemsize, vae_itemsize=4)
    if path.is_dir():
        folder = path / "unet" if (path / "unet").is_dir() else path
        files = sorted(folder.glob("*.safetensors"))
        plain = [p for p in files if ".fp16." not in p.name] or files
        weights = sum(sum(_file_weights(file, itemsize, itemsize).values()) for file in plain)
        try:
            facts["unet"] = unet_shape(json.loads((folder / "config.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            pass
    else:
        parts = _file_weights(path, itemsize, itemsize)
        # A whole checkpoint's UNet part, or all of a UNet-only file (named without the prefix).
        weights = parts["unet"] if "unet" in parts and ("vae" in parts or "text" in parts) else sum(parts.values())
    facts.update(weights=weights, unet_weights=weights, vae_weights=0)
    return MemoryEstimate(holds=weights, holds_field="dtype" if itemsize == 4 else "unet", facts=facts)


def text_encoder_files(cls: Any, values: Mapping[str, Any], inputs: Mapping[str, Upstream], ctx: RunContext) -> MemoryEstimate | None:
    """Text encoder files hold their weights at the chosen precision (from the headers)."""
    from nodeflow import FileChoice

    from nodes.diffusion.impl.paths import resolve_model_path

    itemsize = _itemsize(values.get("dtype", "auto"), ctx.device)
    weights, last = 0, None
    for name, declared in cls.inputs.items():
        if isinstance(declared, FileChoice) and name in values:
            try:
                path = resolve_model_path(values[name], declared.folder, ctx.settings)
            except (NodeError, OSError):
                return None
            if path.is_file():
                weights += sum(_file_weights(path, itemsize, itemsize).values())
            last = name
    if last is None:
        return None
    return MemoryEstimate(holds=weights, holds_field="dtype" if itemsize == 4 else last,
                          facts={"weights": weights, "itemsize": itemsize})
