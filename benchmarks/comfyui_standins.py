"""Do the ComfyUI workflows that import and validate also run, with stand-in models of the right kind?

    python -m benchmarks.comfyui_standins DIR [--files] [--max-side 128] [--max-steps 4] [--timeout 300]

Issue 11's criterion: every SD-family workflow that validates runs. For every ``.json``,
``.png`` and ``.webp`` under DIR that imports and validates (as ``benchmarks.comfyui_acceptance``
counts it), this builds a models tree in ComfyUI's layout (what ``nodeflow run --models DIR``
reads) holding a tiny real model under every file name the graph references, of the kind
the node wants: an SD 1.x checkpoint, or an SDXL one when the graph uses SDXL prompt nodes or
its names or sizes look like SDXL, an SD 2.x one for SD 2.x names; an unCLIP checkpoint for unCLIPCheckpointLoader;
a 9-channel inpainting checkpoint where the name says inpainting or the model is sampled
with InpaintModelConditioning's conditioning; an SDXL refiner where the name says refiner or
its CLIP feeds the refiner's prompt node; UNet files (diffusion_models) and text encoder files
(text_encoders: CLIP-L, SD 2.x's OpenCLIP-H, SDXL's CLIP-L + OpenCLIP-G) for the split loaders; kohya
LoRAs, ControlNets, ESRGAN upscalers, VAE files, GLIGEN files, CLIP vision encoders and
textual-inversion embeddings for that model; small PNGs for the input images. Sizes
(``width``/``height`` fields, and ``megapixels`` targets) are capped at ``--max-side`` and steps at ``--max-steps``
through the graph, after import; then the graph runs on the CPU through the executor
``nodeflow run`` uses. Prints per file (with ``--files``) ran / failed and the first
error (node, field, message), then the totals. The tiny models are built once into a
cache folder (``--cache``, default a temporary one).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the builders live in tests/support
    sys.path.insert(0, str(ROOT))

SDXL_TYPES = {"TextEncoderSDXL", "TextEncoderSDXLRefiner", "ModelMergeSDXL", "DualTextEncoderLoader"}
SD2_NAME = re.compile(r"v2-1|v2-0|sd2|sd_2|768-v|512-base-ema", re.I)
SDXL_NAME = re.compile(r"xl|pony|illustrious|juggernaut|noob|animagine", re.I)
SD1_NAME = re.compile(r"sd_?15|sd1\.5|sd-?v1|v1-5|sd1x", re.I)  # a model that says it is SD 1.x
UNION_NAME = re.compile(r"union|promax", re.I)
INPAINT_NAME = re.compile(r"inpaint", re.I)
REFINER_NAME = re.compile(r"refiner", re.I)
CLIP_G_NAME = re.compile(r"clip_?g\b|clip_?g[._-]|bigg|open_?clip", re.I)
CLIP_L_NAME = re.compile(r"clip_?l\b|clip_?l[._-]", re.I)
EMBEDDING = re.compile(r"embedding:([^\s,()\[\]{}:|<>]+)", re.I)
# folder kind (a FileChoice's folder) -> its folder in a ComfyUI models tree
TREE = {"checkpoints": "checkpoints", "vae": "vae", "unet": "diffusion_models", "clip": "text_encoders", "loras": "loras",
        "embeddings": "embeddings", "controlnet": "controlnet", "upscale_models": "upscale_models",
        "clip_vision": "clip_vision", "gligen": "gligen"}
SIZE_FIELDS = ("width", "height")
BATCH_FIELDS = ("batch", "batch_size", "amount")
PICKLED = (".pt", ".pth", ".ckpt", ".bin")  # published as torch pickles (plain tensors: read weights-only)
WEIGHT_FILES = (".safetensors", ".sft", *PICKLED)


class StandIns:
    """The tiny model files, built on first use into ``cache`` and copied where a graph wants them."""

    def __init__(self, cache: Path):
        self.cache = cache
        self.cache.mkdir(parents=True, exist_ok=True)
        self._built: dict[tuple[str, str], Path] = {}

    def model_dir(self, family: str) -> Path:
        """The tiny model of ``family`` as a diffusers folder: sd1, sd2, sdxl, unclip, the
        SDXL refiner (sdxl_refiner) or an inpainting twin (sd1_inpaint, sdxl_inpaint, ...)."""
        from tests.support.standins import inpainting_twin, tiny_refiner
        from tests.support.tiny_models import build_tiny_sd, build_tiny_sdxl
        from tests.support.tiny_unclip import build_tiny_unclip

        if family.endswith("_inpaint"):
            return inpainting_twin(self.model_dir(family.removesuffix("_inpaint")), self.cache / f"tiny-{family}")
        builders = {"sd1": lambda p: build_tiny_sd(p), "sd2": lambda p: build_tiny_sd(p, version=2), "sdxl": build_tiny_sdxl,
                    "unclip": build_tiny_unclip, "sdxl_refiner": lambda p: tiny_refiner(self.model_dir("sdxl"), p)}
        return builders[family](self.cache / f"tiny-{family}")

    def file(self, kind: str, family: str) -> Path | None:
        """A stand-in file for a ``kind`` folder's model made for ``family``; None for a kind we have none of."""
        key = (kind, family)
        if key not in self._built:
            builder = getattr(self, f"_build_{kind}", None)
            if builder is None:
                return None
            out = self.cache / f"{kind}-{family}.safetensors"
            if not out.is_file():
                builder(out, family)
            self._built[key] = out
        return self._built[key]

    def pickled(self, source: Path, kind: str) -> Path:
        """The same weights as a torch pickle, as .ckpt/.pth files hold them (BasicSR's
        ``params_ema`` for upscalers, ``state_dict`` for checkpoints)."""
        import torch
        from safetensors.torch import load_file

        out = source.with_suffix(".pth")
        if not out.is_file():
            state = load_file(source)
            wrapped = {"params_ema": state} if kind == "upscale_models" else {"state_dict": state} if kind == "checkpoints" else state
            torch.save(wrapped, out)
        return out

    def folder(self, kind: str, family: str) -> Path:
        """A ControlNet stand-in as a diffusers folder (``save_pretrained``)."""
        out = self.cache / f"{kind}-{family}"
        if not (out / "config.json").is_file():
            self._controlnet(kind, family).save_pretrained(out)
        return out

    def _controlnet(self, kind: str, family: str) -> Any:
        from tests.support.standins import tiny_controlnet, tiny_union_controlnet

        # The tiny VAE halves the size, so the hint encoder has one 2x downscale (published ones: 8x).
        if kind == "controlnet_union":
            return tiny_union_controlnet(self.model_dir("sdxl"), 8)
        return tiny_controlnet(self.model_dir(_base(family)), (16, 32))

    def _build_controlnet_union(self, out: Path, family: str) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self._controlnet("controlnet_union", family).state_dict().items()}, out)

    def _build_checkpoints(self, out: Path, family: str) -> None:
        from tests.support.standins import save_refiner_single_file
        from tests.support.tiny_models import save_single_file
        from tests.support.tiny_unclip import save_unclip_single_file

        save = {"unclip": save_unclip_single_file, "sdxl_refiner": save_refiner_single_file}.get(family, save_single_file)
        save(self.model_dir(family), out)

    def _build_unet(self, out: Path, family: str) -> None:
        """A UNet file as ComfyUI's diffusion_models hold them: SD 1.x/2.x in the original names
        (bare), SDXL in diffusers names, neither with a config."""
        from safetensors.torch import save_file

        from tests.support.standins import unet_file_state

        save_file(unet_file_state(self.model_dir(family), "diffusers" if _base(family) == "sdxl" else "original"), out)

    def _build_clip(self, out: Path, family: str) -> None:
        """A text encoder file: ``sd1`` CLIP-L, ``sd2`` OpenCLIP-H (OpenCLIP layout), ``sdxl``
        SDXL's CLIP-L and ``sdxl_g`` its OpenCLIP-G (transformers layout, as clip_l / clip_g ship)."""
        from safetensors.torch import save_file

        from tests.support.standins import text_encoder_file_states

        states = text_encoder_file_states(self.model_dir(_base(family.removesuffix("_g"))))
        save_file(states[1] if family.endswith("_g") else states[0], out)

    def _build_vae(self, out: Path, family: str) -> None:
        from safetensors.torch import save_file

        from tests.support.standins import vae_original_state

        save_file(vae_original_state(self.model_dir(_base(family))), out)

    def _build_loras(self, out: Path, family: str) -> None:
        from tests.support.standins import build_kohya_lora

        build_kohya_lora(self.model_dir(_base(family)), out, sdxl=_base(family) == "sdxl")

    def _build_controlnet(self, out: Path, family: str) -> None:
        from safetensors.torch import save_file

        from tests.support.standins import controlnet_original_layout, tiny_controlnet

        # A single file in the original layout has the standard hint encoder (8x, as every published one)
        net = tiny_controlnet(self.model_dir(_base(family)), (16, 32, 96, 256))
        if _base(family) == "sdxl":  # SDXL ControlNets are published under diffusers' names
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out)
        else:
            save_file(controlnet_original_layout(net), out)

    def _build_upscale_models(self, out: Path, family: str) -> None:
        from safetensors.torch import save_file

        from tests.support.standins import network_state, tiny_esrgan

        save_file(network_state(tiny_esrgan()), out)

    def _build_clip_vision(self, out: Path, family: str) -> None:
        from safetensors.torch import save_file

        from tests.support.tiny_models import TEXT2_HIDDEN
        from tests.support.tiny_unclip import build_tiny_vision, tiny_vision_model

        if family == "sdxl":  # Revision: the image embedding stands in for the 64-wide pooled prompt
            state = tiny_vision_model(projection_dim=TEXT2_HIDDEN).state_dict()
            out.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in state.items()}, out)
        else:
            build_tiny_vision(out)

    def _build_gligen(self, out: Path, family: str) -> None:
        from safetensors.torch import save_file

        from tests.support.standins import gated_unet, gligen_published_layout

        save_file(gligen_published_layout(gated_unet(self.model_dir(_base(family)))), out)

    def _build_embeddings(self, out: Path, family: str) -> None:
        from safetensors.torch import save_file

        from tests.support.standins import embedding_state

        base = _base(family)
        save_file(embedding_state(self.model_dir(base), sdxl=base == "sdxl"), out)


def _base(family: str) -> str:
    family = family.removesuffix("_inpaint")
    return "sd1" if family == "unclip" else "sdxl" if family == "sdxl_refiner" else family


def _reaches(graph, node_id: str, output: str, found, hops: int = 8) -> bool:
    """Whether ``node_id.output`` reaches, through nodes passing on a value of its kind (a
    LoRA's model and clip, a patch's model), a node for which ``found(graph, link)`` holds."""
    frontier, seen = [(node_id, output)], set()
    for _ in range(hops):
        following = []
        for source, name in frontier:
            for link in graph.links_from(source):
                if link.output != name or (link.target, link.input) in seen:
                    continue
                seen.add((link.target, link.input))
                if found(graph, link):
                    return True
                following.append((link.target, link.input))  # passed on under the same name (model, clip)
        frontier = following
    return False


def checkpoint_family(graph, node_id: str, node, value: str, family: str) -> str:
    """Which tiny checkpoint stands in for this loader: unCLIP's, the SDXL refiner where its
    name says refiner or its CLIP feeds the refiner's prompt node, a 9-channel inpainting twin
    where its name says inpainting or its model samples InpaintModelConditioning's conditioning."""
    if node.type == "UnCLIPCheckpoint":
        return "unclip"
    refiner_prompt = lambda g, link: g.nodes[link.target].type == "TextEncoderSDXLRefiner"  # noqa: E731

    def inpainting(g, link) -> bool:
        source = g.link_into(link.target, "positive")
        return source is not None and g.nodes[source.source].type == "InpaintModelConditioning"

    if REFINER_NAME.search(value) or _reaches(graph, node_id, "clip", refiner_prompt):
        return "sdxl_refiner"
    if INPAINT_NAME.search(value) or _reaches(graph, node_id, "model", inpainting):
        return f"{family}_inpaint"
    return family


def clip_family(node, name: str, value: str, family: str) -> str:
    """Which text encoder file stands in: SDXL's pair by the names (clip_g / clip_l), else
    clip_name1 CLIP-L and clip_name2 OpenCLIP-G; a single file the family's first encoder."""
    if node.type != "DualTextEncoderLoader":
        return "sd2" if family == "sd2" else "sd1"
    if CLIP_G_NAME.search(value):
        return "sdxl_g"
    if CLIP_L_NAME.search(value):
        return "sdxl"
    return "sdxl_g" if name == "clip_name2" else "sdxl"


def family_of(graph) -> str:
    """sdxl when the graph uses SDXL prompt nodes, names an SDXL-looking model or asks for
    SDXL-sized latents, unless a model it names says it is SD 1.x (an SD1.5 ControlNet in a
    two-pass workflow at 1024 pixels); sd2 when it names an SD 2.x checkpoint; else sd1."""
    from nodeflow.model.fields import FileChoice

    sd2 = sd1 = large = False
    for node in graph.nodes.values():
        if node.type in SDXL_TYPES:
            return "sdxl"
        cls = graph.registry.get(node.type)
        if cls is None:
            continue
        for name, spec in cls.inputs.items():
            value = node.values.get(name)
            if isinstance(spec, FileChoice) and spec.folder in ("checkpoints", "unet", "loras", "vae", "controlnet") \
                    and isinstance(value, str) and SDXL_NAME.search(value):
                return "sdxl"
            if isinstance(spec, FileChoice) and spec.folder in ("checkpoints", "unet", "clip") and isinstance(value, str) \
                    and SD2_NAME.search(value):
                sd2 = True
            if isinstance(spec, FileChoice) and spec.folder in ("checkpoints", "loras", "controlnet") \
                    and isinstance(value, str) and SD1_NAME.search(value):
                sd1 = True
        width, height = node.values.get("width"), node.values.get("height")
        if node.type == "EmptyLatent" and isinstance(width, int) and isinstance(height, int) and width * height >= 900_000:
            large = True
    return "sd2" if sd2 else "sdxl" if large and not sd1 else "sd1"


@dataclass
class Placed:
    models: Path
    inputs: Path
    missing: list[str] = field(default_factory=list)  # "node.field: name" we had no stand-in for


def place_standins(graph, standins: StandIns, root: Path, family: str, max_side: int) -> Placed:
    """Put a stand-in under every model file name the graph references (in a ComfyUI models
    tree at ``root/models``) and a small PNG for every input image (``root/input``)."""
    from PIL import Image

    from nodeflow.model.fields import FileChoice

    placed = Placed(root / "models", root / "input")
    for folder in TREE.values():
        (placed.models / folder).mkdir(parents=True, exist_ok=True)
    placed.inputs.mkdir(parents=True, exist_ok=True)
    for node_id, node in graph.nodes.items():
        cls = graph.registry.get(node.type)
        if cls is None:
            continue
        for name, spec in cls.inputs.items():
            value = node.values.get(name)
            if isinstance(value, str):
                for embedding in EMBEDDING.findall(value):
                    target = placed.models / "embeddings" / embedding
                    if not target.suffix:
                        target = target.with_name(target.name + ".safetensors")
                    _copy(standins.file("embeddings", family), target)
            if not isinstance(spec, FileChoice) or not isinstance(value, str) or not value.strip():
                continue
            if spec.folder == "input":
                target = placed.inputs / value
                target.parent.mkdir(parents=True, exist_ok=True)
                side = max(8, min(64, max_side))
                picture = Image.new("RGBA" if node.type == "LoadImageMask" else "RGB", (side, side), (90, 140, 200, 255))
                picture.save(target, format="PNG") if target.suffix.lower() in ("", ".png") else picture.convert("RGB").save(target)
                continue
            kind_family = family
            if spec.folder == "checkpoints":
                kind_family = checkpoint_family(graph, node_id, node, value, family)
            elif spec.folder == "unet" and INPAINT_NAME.search(value):
                kind_family = f"{family}_inpaint"
            elif spec.folder == "clip":
                kind_family = clip_family(node, name, value, family)
            kind = spec.folder
            if kind == "controlnet" and (UNION_NAME.search(value) or any(n.type == "SetUnionControlNetType" for n in graph.nodes.values())):
                kind, kind_family = "controlnet_union", "sdxl"
            source = standins.file(kind, kind_family) if spec.folder in TREE else None
            if source is None:
                placed.missing.append(f"{node_id} ({node.type}).{name}: {value}")
                continue
            target = placed.models / TREE[spec.folder] / value.replace("\\", "/")
            if target.suffix.lower() in PICKLED:
                source = standins.pickled(source, spec.folder)
            elif target.suffix.lower() not in WEIGHT_FILES and spec.folder in ("checkpoints", "controlnet"):
                # a name without a file type: a diffusers folder
                folder = standins.model_dir(kind_family) if kind == "checkpoints" else standins.folder(kind, kind_family)
                _copy_tree(folder, target)
                continue
            _copy(source, target)
    return placed


def _copy_tree(source: Path, target: Path) -> None:
    if not target.exists():
        shutil.copytree(source, target, copy_function=lambda s, t: _copy(Path(s), Path(t)))


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)


def cap_costs(graph, max_side: int, max_steps: int) -> None:
    """Cheap runs: sizes at most ``max_side`` (multiples of 8), steps at most ``max_steps``
    (a step range scaled with them), batches of one, a ``megapixels`` target at most
    ``max_side`` squared; set through the graph, as a user would."""
    from nodeflow.model.fields import Float, Int

    top_megapixels = max(0.01, round(max_side * max_side / (1024 * 1024), 2))

    for node_id, node in graph.nodes.items():
        cls = graph.registry.get(node.type)
        if cls is None:
            continue
        fields = {name for name, spec in cls.inputs.items() if isinstance(spec, Int)}
        for name in SIZE_FIELDS:
            value = node.values.get(name)
            if name in fields and isinstance(value, int) and value > max_side:
                graph.set_value(node_id, name, max(8, max_side // 8 * 8))
        megapixels = node.values.get("megapixels")
        if isinstance(cls.inputs.get("megapixels"), Float) and isinstance(megapixels, (int, float)) \
                and megapixels > top_megapixels:
            graph.set_value(node_id, "megapixels", top_megapixels)
        for name in BATCH_FIELDS:
            value = node.values.get(name)
            if name in fields and isinstance(value, int) and value > 1:
                graph.set_value(node_id, name, 1)
        steps = node.values.get("steps")
        if "steps" in fields and isinstance(steps, int) and steps > max_steps:
            graph.set_value(node_id, "steps", max_steps)
            for name in ("start_step", "end_step"):
                value = node.values.get(name)
                if name in fields and isinstance(value, int) and 0 < value < steps:
                    scaled = round(value * max_steps / steps)
                    # a range that started before the end still leaves a step (a refiner's last steps)
                    scaled = max(1, scaled) if name == "end_step" else min(max_steps - 1, scaled)
                    graph.set_value(node_id, name, scaled)


@dataclass
class Row:
    path: Path
    valid: bool = False
    ran: bool = False
    reason: str = ""
    seconds: float = 0.0
    family: str = ""


def run_one(path: Path, registry, standins: StandIns, work: Path, max_side: int = 128, max_steps: int = 4,
            timeout: float = 300.0) -> Row:
    """Open, validate, stand in, cap and run one workflow file."""
    from benchmarks.comfyui_acceptance import open_and_validate
    from nodeflow.engine.events import RunStatus
    from nodeflow.engine.executor import Executor
    from nodeflow.host.settings import build_run_settings

    row = Row(path)
    workflow, problems = open_and_validate(path, registry)
    if workflow is None or problems:
        row.reason = problems[0] if problems else "does not import"
        return row
    row.valid = True
    graph = workflow.graph
    row.family = family_of(graph)
    started = time.perf_counter()
    try:
        placed = place_standins(graph, standins, work, row.family, max_side)
        cap_costs(graph, max_side, max_steps)
    except Exception as error:  # a stand-in we could not build is reported, not a crash
        row.reason = f"stand-in: {type(error).__name__}: {error}"
        return row
    settings = build_run_settings(registry, [placed.models], environ={"NODEFLOW_CONFIG_DIR": str(work / "no-config")},
                                  workflow=workflow.to_dict(), previews=False)
    executor = Executor(registry, device="cpu")
    future = executor.submit(graph, output_dir=work / "output", input_dir=placed.inputs, settings=settings,
                             extra_problems=workflow.problems)
    try:
        result = future.result(timeout=timeout)
    except TimeoutError:
        executor.interrupt()
        future.result()
        row.reason = f"timed out after {timeout:.0f} s"
        return row
    finally:
        row.seconds = time.perf_counter() - started
    if result.status == RunStatus.OK:
        row.ran = True
    elif result.status == RunStatus.INVALID:
        first = result.problems[0]
        row.reason = f"invalid: {first.node_id} ({first.node_type}).{first.field}: {first.message}"
    else:
        node = result.failed_node
        kind = graph.nodes[node].type if node in graph.nodes else "?"
        row.reason = f"{node} ({kind}).{result.failed_field or '-'}: {(result.error or '').splitlines()[0][:300] if result.error else ''}"
    if placed.missing and not row.ran:
        row.reason += f" [no stand-in for {', '.join(placed.missing)}]"
    return row


def measure(folder: Path, cache: Path | None = None, on_row=None, **options: Any) -> list[Row]:
    """Run every workflow file under ``folder`` with stand-ins; ``on_row(row)`` is told each as it ends."""
    import nodes.diffusion.impl  # noqa: F401  (before diffusers: see docs/architecture.md)
    from nodeflow.model.registry import default_registry

    registry = default_registry()
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".json", ".png", ".webp") and p.is_file())
    rows = []
    with tempfile.TemporaryDirectory(prefix="nodeflow-standins-") as scratch:
        standins = StandIns(cache or Path(scratch) / "cache")
        for index, path in enumerate(files):
            work = Path(scratch) / f"run-{index}"
            rows.append(run_one(path, registry, standins, work, **options))
            shutil.rmtree(work, ignore_errors=True)
            if on_row:
                on_row(rows[-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--files", action="store_true", help="print one line per file")
    parser.add_argument("--max-side", type=int, default=128, help="cap on width/height fields (pixels)")
    parser.add_argument("--max-steps", type=int, default=4, help="cap on sampler steps")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one run may take")
    parser.add_argument("--cache", type=Path, help="keep the built tiny models here between invocations")
    args = parser.parse_args()

    def show(row: Row) -> None:
        if args.files:
            state = "ran" if row.ran else "FAILED" if row.valid else "not valid"
            print(f"{state:9} {row.family or '-':5} {row.seconds:6.1f}s  {row.path.relative_to(args.folder)}"
                  + (f": {row.reason}" if row.reason else ""), flush=True)

    rows = measure(args.folder, args.cache, show, max_side=args.max_side, max_steps=args.max_steps, timeout=args.timeout)
    valid = [r for r in rows if r.valid]
    ran = sum(r.ran for r in valid)
    print(f"{args.folder}: {len(rows)} files, {len(valid)} import and validate, {ran} of them run with stand-ins"
          + (f" ({100 * ran / len(valid):.0f}%)" if valid else ""))
    failed = [r for r in valid if not r.ran]
    for r in failed:
        print(f"  failed: {r.path.relative_to(args.folder)}: {r.reason}")


if __name__ == "__main__":
    main()
