"""Measurements of the bundled model, shared by benchmarks/bundled_metrics.py and the tests.

Colours are judged from pixels (border median = background; the pixels that differ from it
= the shape), shapes by the separately trained classifier, so no figure depends on the model
being measured. Images are IMAGE-layout tensors: [B, H, W, 3] float in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from nodes.bundled.training.dataset import COLOUR_NAMES, COLOURS, SHAPES, Scene

_PALETTE = torch.tensor([COLOURS[name] for name in COLOUR_NAMES], dtype=torch.float32) / 255
_FOREGROUND_DISTANCE = 0.25  # RGB distance from the background that counts as "shape"
_MIN_SHAPE_PIXELS = 6

# generate(prompts, negative_prompts, seeds, guidance_scale, steps) -> IMAGE [B, H, W, 3]
Generate = Callable[[Sequence[str], Sequence[str], Sequence[int], float, int], torch.Tensor]


def nearest_colour(rgb: torch.Tensor) -> torch.Tensor:
    """[..., 3] in [0, 1] -> index of the nearest palette colour."""
    return torch.cdist(rgb.reshape(-1, 3), _PALETTE).argmin(-1).reshape(rgb.shape[:-1])


def judge_colours(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(shape colour, background colour) palette indices per image; -1 when no shape is seen."""
    shape_colours, backgrounds = [], []
    for image in images.float():
        border = torch.cat([image[:2].reshape(-1, 3), image[-2:].reshape(-1, 3),
                            image[:, :2].reshape(-1, 3), image[:, -2:].reshape(-1, 3)])
        background = border.median(0).values
        pixels = image.reshape(-1, 3)
        foreground = pixels[(pixels - background).norm(dim=-1) > _FOREGROUND_DISTANCE]
        backgrounds.append(int(nearest_colour(background)))
        shape_colours.append(int(nearest_colour(foreground.median(0).values))
                             if len(foreground) >= _MIN_SHAPE_PIXELS else -1)
    return torch.tensor(shape_colours), torch.tensor(backgrounds)


def psnr(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    mse = (reference.float() - test.float()).pow(2).mean().item()
    return 10 * math.log10(1 / max(mse, 1e-12))


def to_image(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> IMAGE float [0, 1]."""
    return torch.from_numpy(images).float() / 255


@torch.no_grad()
def vae_psnr(vae, images: np.ndarray, batch: int = 250) -> float:
    """Reconstruction PSNR through the posterior mean, over all of ``images``."""
    total_mse = 0.0
    for i in range(0, len(images), batch):
        x = to_image(images[i:i + batch])
        recon = vae.decode(vae.encode(x.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mean).sample
        recon = ((recon + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
        total_mse += (recon - x).pow(2).mean().item() * len(x)
    return 10 * math.log10(1 / max(total_mse / len(images), 1e-12))


def all_full_captions() -> tuple[list[str], list[tuple[int, int, int]]]:
    """Every (colour, shape, background) combination, captioned in the canonical order."""
    from nodes.bundled.training.dataset import full_caption

    combos = [(c, s, b) for c in range(len(COLOUR_NAMES)) for s in range(len(SHAPES))
              for b in range(len(COLOUR_NAMES)) if b != c]
    return [full_caption(Scene(*combo, 0.0, 0.0, 0.0, (0,) * 6)) for combo in combos], combos


@torch.no_grad()
def text_embeddings(tokenizer, text_encoder, texts: Sequence[str]) -> torch.Tensor:
    """Unit CLIP text embeddings (the bundled model's text projection is the identity)."""
    ids = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return torch.nn.functional.normalize(text_encoder(input_ids=ids).pooler_output, dim=-1)


@torch.no_grad()
def image_embeddings(vision, images: torch.Tensor) -> torch.Tensor:
    """Unit CLIP image embeddings of IMAGE tensors."""
    from nodes.bundled.training.trainer import clip_pixels

    pixels = clip_pixels(images.permute(0, 3, 1, 2) * 2 - 1)
    return torch.nn.functional.normalize(vision(pixel_values=pixels).image_embeds, dim=-1)


def clip_zero_shot(tokenizer, text_encoder, vision, images: np.ndarray,
                   labels: dict[str, np.ndarray]) -> dict[str, float]:
    """Zero-shot classification by the best-matching caption among all 280 combinations;
    accuracy per attribute."""
    texts, combos = all_full_captions()
    text = text_embeddings(tokenizer, text_encoder, texts)
    best = torch.cat([(image_embeddings(vision, to_image(images[i:i + 250])) @ text.T).argmax(-1)
                      for i in range(0, len(images), 250)])
    predicted = torch.tensor(combos)[best]
    return {name: float((predicted[:, k].numpy() == labels[name]).mean())
            for k, name in enumerate(["colour", "shape", "background"])}


@dataclass
class Adherence:
    colour: float  # shape drawn in the prompt's colour
    background: float
    shape: float
    all: float  # all three right in the same image
    count: int

    def __str__(self) -> str:
        return (f"colour {self.colour:.1%}, background {self.background:.1%}, shape {self.shape:.1%}, "
                f"all three {self.all:.1%} (n={self.count})")


def judge(images: torch.Tensor, scenes: Sequence[Scene], classifier) -> Adherence:
    colour, background = judge_colours(images)
    shape = classifier.predict(images)["shape"]
    want = torch.tensor([(s.colour, s.shape, s.background) for s in scenes])
    ok_colour, ok_shape, ok_background = colour == want[:, 0], shape == want[:, 1], background == want[:, 2]
    return Adherence(ok_colour.float().mean().item(), ok_background.float().mean().item(),
                     ok_shape.float().mean().item(), (ok_colour & ok_shape & ok_background).float().mean().item(),
                     len(scenes))


def adherence(generate: Generate, prompts: Sequence[tuple[str, Scene]], classifier, guidance: float,
              steps: int = 20, negative: str = "", seed: int = 0, batch: int = 50) -> Adherence:
    """Generate one image per held-out prompt (seed ``seed + i``) and judge it."""
    images = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        images.append(generate([p for p, _ in chunk], [negative] * len(chunk),
                               [seed + start + i for i in range(len(chunk))], guidance, steps))
    return judge(torch.cat(images), [s for _, s in prompts], classifier)


def colour_rate(generate: Generate, prompt: str, negative: str, colour: str, count: int,
                guidance: float = 5.0, steps: int = 20, seed: int = 0) -> float:
    """Fraction of ``count`` seeds whose shape comes out in ``colour``."""
    images = generate([prompt] * count, [negative] * count, list(range(seed, seed + count)), guidance, steps)
    shape_colour, _ = judge_colours(images)
    return (shape_colour == COLOUR_NAMES.index(colour)).float().mean().item()


def pipeline_generator(model_dir, threads: int | None = None) -> Generate:
    """A ``Generate`` over diffusers' stock StableDiffusionPipeline with DPM++ 2M, for
    measuring the folder independently of the project's nodes."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    if threads:
        torch.set_num_threads(threads)
    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), local_files_only=True)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def generate(prompts, negatives, seeds, guidance, steps):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        out = pipe(list(prompts), negative_prompt=list(negatives), generator=generators,
                   guidance_scale=guidance, num_inference_steps=steps, output_type="pt").images
        return out.permute(0, 2, 3, 1).clamp(0, 1)

    return generate


def nodes_generator(checkpoint: str = "shapes", sampler: str = "dpmpp_2m") -> Generate:
    """A ``Generate`` through the project's own nodes: Checkpoint -> TextEncoder x2 -> CFG ->
    Sampler -> VAEDecode -> PreviewImage, one executor (so the model loads once). Consecutive
    identical prompts are drawn as one batch, as a user asking for several images would."""
    import nodeflow.api

    flow = nodeflow.api.new(device="cpu")
    flow.add("Checkpoint", "ckpt", checkpoint=checkpoint)
    flow.add("TextEncoder", "pos", text="")
    flow.add("TextEncoder", "neg", text="")
    flow.add("CFG", "cfg", scale=5.0)
    flow.add("Noise", "noise", seed=0)
    flow.add("EmptyLatent", "empty", width=32, height=32, batch=1)
    flow.add("Sampler", "sampler", sampler=sampler, steps=20)
    flow.add("VAEDecode", "decode")
    flow.add("PreviewImage", "preview")
    for link in ["ckpt.clip pos.clip", "ckpt.clip neg.clip", "ckpt.model cfg.model", "pos.conditioning cfg.positive",
                 "neg.conditioning cfg.negative", "ckpt.vae empty.vae", "noise.noise sampler.noise",
                 "cfg.guider sampler.guider", "empty.latent sampler.latent", "ckpt.vae decode.vae",
                 "sampler.latent decode.latent", "decode.image preview.images"]:
        flow.connect(*link.split())

    def generate(prompts, negatives, seeds, guidance, steps):
        # Runs of the same prompt go through as one batch (seeded by the run's first seed).
        images, start = [], 0
        while start < len(prompts):
            end = start + 1
            while end < len(prompts) and (prompts[end], negatives[end]) == (prompts[start], negatives[start]):
                end += 1
            flow.set("pos.text", prompts[start]).set("neg.text", negatives[start]).set("noise.seed", seeds[start])
            flow.set("cfg.scale", guidance).set("sampler.steps", steps).set("empty.batch", end - start)
            images.append(flow.run(outputs=["preview"]).outputs["preview"]["images"])
            start = end
        return torch.cat(images).float().clamp(0, 1)

    return generate
