"""Measurements of the bundled model's adapters, through the project's own nodes (the LoRA,
ControlNet and inpainting nodes a user's workflow uses), shared by
benchmarks/bundled_adapters.py and the tests. Images are IMAGE tensors [B, H, W, 3] in [0, 1].
"""

from __future__ import annotations

import math
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nodes.bundled.training.adapters import (CONTROLNET_NAME, HEART, HEART_HELD_OUT_SEED, HIRES_LORA_NAME, LORA_NAME,
                                             UPSCALER_NAME)
from nodes.bundled.training.dataset import (_FULL_TEMPLATES, COLOUR_NAMES, HELD_OUT_SEED, SHAPES, Scene, full_caption,
                                            render, render_mask, split_scenes)
from nodes.bundled.training.metrics import _FOREGROUND_DISTANCE, judge_colours

HIRES_DENOISE = 0.4  # the second pass: 0.4 kept the shapes best of 0.4 / 0.5 / 0.6
_BASE_LINKS = ["ckpt.clip pos.clip", "ckpt.clip neg.clip", "noise.noise sampler.noise", "cfg.guider sampler.guider",
               "ckpt.vae decode.vae", "sampler.latent decode.latent", "decode.image preview.images"]


def _flow(nodes: list[tuple[str, str, dict]], links: list[str]):
    import nodeflow.api

    flow = nodeflow.api.new(device="cpu")
    base = [("Checkpoint", "ckpt", {"checkpoint": "shapes"}), ("TextEncoder", "pos", {"text": ""}),
            ("TextEncoder", "neg", {"text": ""}), ("CFG", "cfg", {"scale": 5.0}), ("Noise", "noise", {"seed": 0}),
            ("Sampler", "sampler", {"sampler": "dpmpp_2m", "steps": 20}), ("VAEDecode", "decode", {}),
            ("PreviewImage", "preview", {})]
    for type_name, node_id, values in base + nodes:
        flow.add(type_name, node_id, **values)
    for link in _BASE_LINKS + links:
        flow.connect(*link.split())
    return flow


def _image(flow, input_dir: Path | None = None) -> torch.Tensor:
    kwargs = {"input_dir": input_dir} if input_dir is not None else {}
    return flow.run(outputs=["preview"], **kwargs).outputs["preview"]["images"].float().clamp(0, 1)


# --- LoRA ----------------------------------------------------------------------------------


def heart_prompts(count: int, seed: int = HEART_HELD_OUT_SEED) -> list[tuple[str, Scene]]:
    """Full-caption prompts for hearts over all 56 colour pairs, in varied word orders."""
    rng = random.Random(seed + 1)
    combos = [(c, b) for c in range(len(COLOUR_NAMES)) for b in range(len(COLOUR_NAMES)) if b != c]
    rng.shuffle(combos)
    out = []
    for i in range(count):
        scene = Scene(combos[i % len(combos)][0], HEART, combos[i % len(combos)][1], 0.0, 0.0, 0.0, (0,) * 6)
        out.append((full_caption(scene, rng.randrange(len(_FULL_TEMPLATES))), scene))
    return out


class LoRAGenerator:
    """txt2img through Checkpoint -> Load LoRA (model only) -> CFG -> Sampler, strength settable."""

    def __init__(self, lora_name: str = LORA_NAME) -> None:
        self.flow = _flow(
            [("LoRAModelOnly", "lora", {"lora_name": lora_name, "strength_model": 1.0}),
             ("EmptyLatent", "empty", {"width": 32, "height": 32, "batch": 1})],
            ["ckpt.model lora.model", "lora.model cfg.model", "pos.conditioning cfg.positive",
             "neg.conditioning cfg.negative", "ckpt.vae empty.vae", "empty.latent sampler.latent"])

    def __call__(self, prompts: Sequence[str], strength: float, seed: int = 0, guidance: float = 5.0,
                 steps: int = 20) -> torch.Tensor:
        self.flow.set("lora.strength_model", strength).set("cfg.scale", guidance).set("sampler.steps", steps)
        images = []
        for i, prompt in enumerate(prompts):
            self.flow.set("pos.text", prompt).set("noise.seed", seed + i)
            images.append(_image(self.flow))
        return torch.cat(images)


@dataclass
class ShapeRate:
    rate: float  # fraction of images the judge calls the shape
    count: int


def shape_rate(images: torch.Tensor, judge, shape: int) -> float:
    return (judge.predict(images)["shape"] == shape).float().mean().item()


def base_adherence(images: torch.Tensor, scenes: Sequence[Scene], judge) -> float:
    """All three attributes right (colours by pixels, shape by ``judge``)."""
    colour, background = judge_colours(images)
    shape = judge.predict(images)["shape"]
    want = torch.tensor([(s.colour, s.shape, s.background) for s in scenes])
    return ((colour == want[:, 0]) & (shape == want[:, 1]) & (background == want[:, 2])).float().mean().item()


# --- ControlNet ----------------------------------------------------------------------------


def control_cases(count: int, seed: int = HELD_OUT_SEED) -> list[tuple[str, Scene, np.ndarray]]:
    """Held-out (prompt, scene, mask uint8 [32, 32]): the mask is where the prompt's shape
    should go (a held-out scene's silhouette), the prompt names that shape and its colours."""
    rng = random.Random(seed + 7)
    scenes = split_scenes(count, seed)
    return [(full_caption(s, rng.randrange(len(_FULL_TEMPLATES))), s, np.asarray(render_mask(s))) for s in scenes]


def foreground(images: torch.Tensor) -> torch.Tensor:
    """[B, H, W] bool: pixels far from the border's median colour (the drawn shape)."""
    out = []
    for image in images.float():
        border = torch.cat([image[:2].reshape(-1, 3), image[-2:].reshape(-1, 3),
                            image[:, :2].reshape(-1, 3), image[:, -2:].reshape(-1, 3)])
        out.append((image - border.median(0).values).norm(dim=-1) > _FOREGROUND_DISTANCE)
    return torch.stack(out)


def iou(images: torch.Tensor, masks: np.ndarray) -> torch.Tensor:
    """Per image: IoU of the drawn shape's pixels with the mask's (> half)."""
    drawn = foreground(images)
    want = torch.from_numpy(np.asarray(masks)) > 127
    inter = (drawn & want).flatten(1).sum(1).float()
    union = (drawn | want).flatten(1).sum(1).float().clamp(min=1)
    return inter / union


class ControlNetGenerator:
    """txt2img with Load ControlNet + Apply ControlNet (positive and negative) on a hint read
    by Load Image from an input folder."""

    def __init__(self, control_net_name: str = CONTROLNET_NAME) -> None:
        self.input_dir = Path(tempfile.mkdtemp(prefix="nodeflow-hints-"))
        self.flow = _flow(
            [("ControlNetLoader", "cn", {"control_net_name": control_net_name}),
             ("LoadImage", "hint", {"image": "hint.png"}),
             ("ControlNetApplyAdvanced", "apply", {"strength": 1.0}),
             ("EmptyLatent", "empty", {"width": 32, "height": 32, "batch": 1})],
            ["ckpt.model cfg.model", "pos.conditioning apply.positive", "neg.conditioning apply.negative",
             "cn.control_net apply.control_net", "hint.image apply.image", "apply.positive cfg.positive",
             "apply.negative cfg.negative", "ckpt.vae empty.vae", "empty.latent sampler.latent"])

    def __call__(self, cases: Sequence[tuple[str, Scene, np.ndarray]], strength: float = 1.0, start: float = 0.0,
                 end: float = 1.0, seed: int = 0, guidance: float = 5.0, steps: int = 20) -> torch.Tensor:
        from PIL import Image

        self.flow.set("apply.strength", strength).set("apply.start_percent", start).set("apply.end_percent", end)
        self.flow.set("cfg.scale", guidance).set("sampler.steps", steps)
        images = []
        for i, (prompt, _, mask) in enumerate(cases):
            name = f"hint_{i}.png"
            Image.fromarray(mask).convert("RGB").save(self.input_dir / name)
            self.flow.set("hint.image", name).set("pos.text", prompt).set("noise.seed", seed + i)
            images.append(_image(self.flow, self.input_dir))
        return torch.cat(images)


# --- inpainting ----------------------------------------------------------------------------


def inpaint_cases(count: int, seed: int = HELD_OUT_SEED) -> list[tuple[np.ndarray, np.ndarray, str, Scene]]:
    """(image uint8 [32, 32, 3], mask uint8 [32, 32], prompt, wanted scene): a held-out image,
    a square mask over its shape (2 px beyond it), and a prompt for another shape in another
    colour on the same background."""
    rng = random.Random(seed + 11)
    out = []
    for scene in split_scenes(count, seed):
        shape = rng.choice([s for s in range(len(SHAPES)) if s != scene.shape])
        colour = rng.choice([c for c in range(len(COLOUR_NAMES)) if c not in (scene.colour, scene.background)])
        want = Scene(colour, shape, scene.background, 0.0, 0.0, 0.0, (0,) * 6)
        mask = np.zeros((32, 32), np.uint8)
        r = scene.radius * 1.1 + 2
        y0, y1 = max(0, math.floor(scene.cy - r)), min(32, math.ceil(scene.cy + r))
        x0, x1 = max(0, math.floor(scene.cx - r)), min(32, math.ceil(scene.cx + r))
        mask[y0:y1, x0:x1] = 255
        out.append((np.asarray(render(scene)), mask, full_caption(want, rng.randrange(len(_FULL_TEMPLATES))), want))
    return out


class InpaintGenerator:
    """Load Image + Load Image as Mask -> VAE Encode -> Set Latent Noise Mask -> Sampler at
    denoise 1 -> VAE Decode -> Paste Image (masked) onto the source through the mask: the
    inpaint workflow. Returns (pasted, decoded): the result, and the decoder's image before the
    paste (outside the mask that one is the VAE round trip of the source, not the source)."""

    def __init__(self) -> None:
        self.input_dir = Path(tempfile.mkdtemp(prefix="nodeflow-inpaint-"))
        self.flow = _flow(
            [("LoadImage", "src", {"image": "image.png"}), ("LoadImageMask", "mask", {"image": "mask.png", "channel": "red"}),
             ("VAEEncode", "encode", {}), ("SetLatentNoiseMask", "noise_mask", {}),
             ("ImageCompositeMasked", "paste", {}), ("PreviewImage", "pasted", {})],
            ["ckpt.model cfg.model", "pos.conditioning cfg.positive", "neg.conditioning cfg.negative",
             "ckpt.vae encode.vae", "src.image encode.image", "encode.latent noise_mask.latent",
             "mask.mask noise_mask.mask", "noise_mask.latent sampler.latent", "src.image paste.destination",
             "decode.image paste.source", "mask.mask paste.mask", "paste.image pasted.images"])

    def __call__(self, cases, seed: int = 0, guidance: float = 5.0, steps: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        self.flow.set("cfg.scale", guidance).set("sampler.steps", steps).set("sampler.denoise", 1.0)
        pasted, decoded = [], []
        for i, (image, mask, prompt, _) in enumerate(cases):
            Image.fromarray(image).save(self.input_dir / f"image_{i}.png")
            Image.fromarray(mask).save(self.input_dir / f"mask_{i}.png")
            self.flow.set("src.image", f"image_{i}.png").set("mask.image", f"mask_{i}.png")
            self.flow.set("pos.text", prompt).set("noise.seed", seed + i)
            outputs = self.flow.run(outputs=["pasted", "preview"], input_dir=self.input_dir).outputs
            pasted.append(outputs["pasted"]["images"].float().clamp(0, 1))
            decoded.append(outputs["preview"]["images"].float().clamp(0, 1))
        return torch.cat(pasted), torch.cat(decoded)


def outside_psnr(images: torch.Tensor, cases) -> torch.Tensor:
    """Per image: PSNR (dB) of the pixels outside the mask against the input image."""
    out = []
    for image, (source, mask, _, _) in zip(images.float(), cases):
        keep = torch.from_numpy(np.array(mask)) == 0
        diff = (image - torch.from_numpy(np.array(source)).float() / 255)[keep]
        out.append(10 * math.log10(1 / max(diff.pow(2).mean().item(), 1e-12)))
    return torch.tensor(out)


def judged_right(images: torch.Tensor, scenes: Sequence[Scene], judge) -> torch.Tensor:
    """Per image: shape colour, shape and background all as ``scenes`` say."""
    colour, background = judge_colours(images)
    shape = judge.predict(images)["shape"]
    want = torch.tensor([(s.colour, s.shape, s.background) for s in scenes])
    return (colour == want[:, 0]) & (shape == want[:, 1]) & (background == want[:, 2])


# --- upscaler ------------------------------------------------------------------------------


class UpscaleGenerator:
    """Load Image -> Upscale Image (using Model) with the shipped upscaler, and beside it
    Resize Image (bicubic) to the same size: uint8 [B, 32, 32, 3] -> (model, bicubic) IMAGEs."""

    def __init__(self, upscaler_name: str = UPSCALER_NAME) -> None:
        import nodeflow.api

        self.input_dir = Path(tempfile.mkdtemp(prefix="nodeflow-upscale-"))
        self.flow = nodeflow.api.new(device="cpu")
        for type_name, node_id, values in [
                ("LoadImage", "src", {"image": "image.png"}), ("UpscaleModelLoader", "up_model", {"model_name": upscaler_name}),
                ("ImageUpscaleWithModel", "upscale", {}), ("ImageScale", "bicubic", {"method": "bicubic"}),
                ("PreviewImage", "model_out", {}), ("PreviewImage", "bicubic_out", {})]:
            self.flow.add(type_name, node_id, **values)
        for link in ["up_model.upscale_model upscale.upscale_model", "src.image upscale.image", "src.image bicubic.image",
                     "upscale.image model_out.images", "bicubic.image bicubic_out.images"]:
            self.flow.connect(*link.split())

    def __call__(self, small: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        model, bicubic = [], []
        for i, image in enumerate(small):
            Image.fromarray(image).save(self.input_dir / f"image_{i}.png")
            side = 2 * image.shape[0]
            self.flow.set("src.image", f"image_{i}.png").set("bicubic.width", side).set("bicubic.height", side)
            outputs = self.flow.run(outputs=["model_out", "bicubic_out"], input_dir=self.input_dir).outputs
            model.append(outputs["model_out"]["images"].float())
            bicubic.append(outputs["bicubic_out"]["images"].float())
        return torch.cat(model), torch.cat(bicubic)


def upscale_psnr(upscale, small: np.ndarray, large: np.ndarray) -> tuple[float, float]:
    """(model PSNR, bicubic PSNR) in dB of 2x upscales of ``small`` against ``large`` (uint8)."""
    from nodes.bundled.training.metrics import psnr

    x = torch.from_numpy(small).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(large).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        model = upscale(x).clamp(0, 1)
    bicubic = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)
    return psnr(y, model), psnr(y, bicubic)


# --- hires fix -----------------------------------------------------------------------------


class HiresFixGenerator:
    """txt2img at 32x32, then the shipped 2x upscaler (Load Upscale Model + Upscale Image using
    Model), VAE Encode and a second Sampler pass at ``denoise`` over the 64x64 latent: the
    hires-fix workflow. With ``lora_name`` the second pass's model goes through Load LoRA
    (model only) first, as in the shipped workflow, which uses the hi-res LoRA. Returns
    (32x32 first pass, 64x64 result)."""

    def __init__(self, upscaler_name: str = UPSCALER_NAME, denoise: float = HIRES_DENOISE,
                 lora_name: str | None = HIRES_LORA_NAME) -> None:
        nodes = [("EmptyLatent", "empty", {"width": 32, "height": 32, "batch": 1}),
                 ("UpscaleModelLoader", "up_model", {"model_name": upscaler_name}),
                 ("ImageUpscaleWithModel", "upscale", {}), ("VAEEncode", "encode", {}),
                 ("CFG", "cfg_hires", {"scale": 5.0}),
                 ("Sampler", "hires", {"sampler": "dpmpp_2m", "steps": 20, "denoise": denoise}),
                 ("VAEDecode", "decode64", {}), ("PreviewImage", "preview64", {})]
        links = ["ckpt.model cfg.model", "pos.conditioning cfg.positive", "neg.conditioning cfg.negative",
                 "ckpt.vae empty.vae", "empty.latent sampler.latent", "up_model.upscale_model upscale.upscale_model",
                 "decode.image upscale.image", "upscale.image encode.image", "ckpt.vae encode.vae",
                 "pos.conditioning cfg_hires.positive", "neg.conditioning cfg_hires.negative",
                 "encode.latent hires.latent", "noise.noise hires.noise", "cfg_hires.guider hires.guider",
                 "hires.latent decode64.latent", "ckpt.vae decode64.vae", "decode64.image preview64.images"]
        if lora_name:
            nodes.append(("LoRAModelOnly", "hires_lora", {"lora_name": lora_name, "strength_model": 1.0}))
            links += ["ckpt.model hires_lora.model", "hires_lora.model cfg_hires.model"]
        else:
            links.append("ckpt.model cfg_hires.model")
        self.flow = _flow(nodes, links)
        self.has_lora = bool(lora_name)

    def __call__(self, prompts: Sequence[str], seed: int = 0, guidance: float = 5.0, steps: int = 20,
                 hires_guidance: float | None = None, hires_steps: int | None = None,
                 strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        self.flow.set("cfg.scale", guidance).set("sampler.steps", steps)
        self.flow.set("cfg_hires.scale", guidance if hires_guidance is None else hires_guidance)
        self.flow.set("hires.steps", steps if hires_steps is None else hires_steps)
        if self.has_lora:
            self.flow.set("hires_lora.strength_model", strength)
        small, large = [], []
        for i, prompt in enumerate(prompts):
            self.flow.set("pos.text", prompt).set("noise.seed", seed + i)
            outputs = self.flow.run(outputs=["preview", "preview64"]).outputs
            small.append(outputs["preview"]["images"].float().clamp(0, 1))
            large.append(outputs["preview64"]["images"].float().clamp(0, 1))
        return torch.cat(small), torch.cat(large)


def to_judge_size(images: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, 3] at a multiple of 32 -> 32x32 by area averaging (what the judge reads)."""
    factor = images.shape[1] // 32
    if factor <= 1:
        return images
    return torch.nn.functional.avg_pool2d(images.movedim(-1, 1), factor).movedim(1, -1).contiguous()
