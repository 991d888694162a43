"""Reproducible training of the bundled model: ``nodeflow train-demo`` (or
``python -m nodes.bundled.training.trainer``).

Stages run in order, each for a fixed number of steps, with progress bars and resumable
checkpoints in a work folder (default ``build/train-demo``): rerunning the command skips
finished stages and continues an interrupted one from its last checkpoint. Every step draws
its randomness from ``(seed, stage, step)``, so the same seed, step budgets, torch version and
thread count give the same weights, whether or not the run was interrupted and resumed.
``--minutes STAGE=MIN`` caps a stage's training time; a run stopped by such a cap depends on
the machine's speed and is no longer reproducible.

    dataset     render the training and held-out splits
    vae         AutoencoderKL, pixels <-> 16x16x4 latents
    clip        text and vision towers, contrastive on captions (+ attribute heads)
    classifier  the judge used by the metrics (not part of the model)
    unet        UNet2DConditionModel, epsilon objective on VAE latents, text tower frozen
    latent_rgb  least-squares latent -> RGB preview map
    export      assemble the diffusers folder

then the model's adapters (a LoRA, a ControlNet, a 2x upscaler, the hires fix's LoRA; see adapters.py):

    adapter_data, judge, lora, controlnet, upscaler, hires_lora, export_adapters
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from nodes.diffusion.clip_similarity import CLIP_MEAN, CLIP_STD

from nodes.bundled import ADAPTER_JUDGE_PATH, ADAPTERS_DIR, CLASSIFIER_PATH, MODEL_DIR
from nodes.bundled.training import adapters as _adapters
from nodes.bundled.training.classifier import ShapeClassifier, save_classifier
from nodes.bundled.training.dataset import (COLOUR_NAMES, HELD_OUT_SEED, SHAPES, TRAIN_SEED, WORDS, Scene, caption,
                       make_split, mentioned, scene_of)
from nodes.bundled.training.models import (LATENT_CHANNELS, SCHEDULER_CONFIG, VAE_FACTOR, build_unet, build_vae,
                      text_config, vision_config)
from nodes.bundled.training.tokenizer import load_tokenizer, save_tokenizer

MODEL_STAGES = ["dataset", "vae", "clip", "classifier", "unet", "latent_rgb", "export"]
STAGES = MODEL_STAGES + _adapters.STAGES
_ON_THE_MODEL = ["lora", "controlnet", "hires_lora", "export_adapters"]  # adapters trained on the UNet
# Finishing a stage again invalidates these later ones.
_DEPENDENTS = {
    "dataset": STAGES[1:],
    "vae": ["unet", "latent_rgb", "export", *_ON_THE_MODEL],
    "clip": ["unet", "export", *_ON_THE_MODEL],
    "classifier": [],
    "unet": ["export", *_ON_THE_MODEL],
    "latent_rgb": ["export"],
    "export": [],
    **_adapters.DEPENDENTS,
}
TRAINED_STAGES = ["vae", "clip", "classifier", "unet", *_adapters.DEFAULT_STEPS]
# Step budgets, not time budgets, so the result does not depend on the machine's speed:
# 1 h 20 min on this 2-core machine, idle (see docs/bundled-model.md), plus the adapters.
MODEL_STEPS = {"vae": 1200, "clip": 1500, "classifier": 300, "unet": 7000}  # the model's stages (training.json)
DEFAULT_STEPS = {**MODEL_STEPS, **_adapters.DEFAULT_STEPS}
DEFAULT_BATCH = {"vae": 32, "clip": 128, "classifier": 128, "unet": 32, **_adapters.DEFAULT_BATCH}
CLIP_TEXT_LENGTH = 16  # training length; the pooled (EOS) output does not depend on padding
CAPTION_DROPOUT = 0.1  # empty prompts, so classifier-free guidance has an unconditional model


@dataclass
class Settings:
    work: Path = Path("build/train-demo")
    export_to: Path = MODEL_DIR
    classifier_to: Path = CLASSIFIER_PATH
    adapters_to: Path = ADAPTERS_DIR
    judge_to: Path = ADAPTER_JUDGE_PATH
    seed: int = 0
    train_images: int = 30000
    held_out_images: int = 1000
    steps: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_STEPS))
    minutes: dict[str, float] = field(default_factory=dict)  # optional time caps
    batch: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_BATCH))
    max_steps: int | None = None  # cap per stage, for quick runs and tests
    threads: int = 2
    quiet: bool = False


# --- checkpointed training loop ------------------------------------------------------------


class Loop:
    """Runs ``step(i) -> dict of figures`` for the stage's step budget (or until a time cap or
    ``max_steps`` stops it), saving ``state`` (modules, optimiser, step, elapsed) every
    ``save_every`` seconds and at the end."""

    def __init__(self, settings: Settings, stage: str, state: dict[str, Any], save_every: float = 120.0):
        self.settings, self.stage, self.state = settings, stage, state
        self.path = settings.work / stage / "checkpoint.pt"
        self.save_every = save_every
        self.step, self.elapsed = 0, 0.0
        if self.path.exists():
            saved = torch.load(self.path, weights_only=False)
            for name, obj in state.items():
                obj.load_state_dict(saved[name])
            self.step, self.elapsed = saved["step"], saved["elapsed"]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {name: obj.state_dict() for name, obj in self.state.items()}
        data.update(step=self.step, elapsed=self.elapsed)
        tmp = self.path.with_suffix(".tmp")
        torch.save(data, tmp)
        tmp.replace(self.path)  # atomic: an interrupted save never corrupts the checkpoint

    @property
    def total(self) -> int:
        """Steps this run aims for; learning-rate schedules decay over it."""
        steps = self.settings.steps.get(self.stage, 1)
        return steps if self.settings.max_steps is None else min(steps, self.settings.max_steps)

    def run(self, step: Callable[[int], dict[str, float]], on_save: Callable[[], None] | None = None) -> None:
        budget = self.settings.minutes.get(self.stage, math.inf) * 60
        bar = tqdm(desc=self.stage, initial=self.step, total=self.total, unit="step",
                   disable=self.settings.quiet, dynamic_ncols=True)
        last_save = time.monotonic()
        while self.elapsed < budget and self.step < self.total:
            started = time.monotonic()
            figures = step(self.step)
            self.step += 1
            self.elapsed += time.monotonic() - started
            bar.update()
            bar.set_postfix({k: f"{v:.4g}" for k, v in figures.items()}, refresh=False)
            if time.monotonic() - last_save > self.save_every:
                self.save()
                if on_save:
                    on_save()
                last_save = time.monotonic()
        bar.close()
        self.save()
        if self.step < self.total:
            _log(self.settings, f"{self.stage} stopped by its time cap at step {self.step} of {self.total}: "
                 "the result depends on this machine's speed")


def _rng(settings: Settings, stage: str, step: int) -> tuple[random.Random, torch.Generator]:
    key = f"{settings.seed}/{stage}/{step}".encode()
    seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1
    return random.Random(seed), torch.Generator().manual_seed(seed)


def _lr(step: int, peak: float, total: int, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak at ``total`` steps."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _set_lr(optimizer: torch.optim.Optimizer, value: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = value


# --- data helpers ------------------------------------------------------------------------


def _load_split(settings: Settings, name: str) -> dict[str, np.ndarray]:
    with np.load(settings.work / "dataset" / f"{name}.npz") as data:
        return dict(data)


def _pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> the vision tower's normalised input."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


def _tokenize(tokenizer, texts: list[str], length: int) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", max_length=length, truncation=True,
                     return_tensors="pt").input_ids


# --- stages --------------------------------------------------------------------------------


def stage_dataset(settings: Settings) -> dict[str, Any]:
    folder = settings.work / "dataset"
    folder.mkdir(parents=True, exist_ok=True)
    for name, count, seed in [("train", settings.train_images, TRAIN_SEED + settings.seed),
                              ("held_out", settings.held_out_images, HELD_OUT_SEED)]:
        np.savez(folder / f"{name}.npz", **make_split(count, seed))
    save_tokenizer(settings.work / "tokenizer", WORDS)
    return {"train_images": settings.train_images, "held_out_images": settings.held_out_images}


def stage_vae(settings: Settings) -> dict[str, Any]:
    train = _load_split(settings, "train")["images"]
    vae = build_vae()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    loop = Loop(settings, "vae", {"vae": vae, "optimizer": optimizer})
    batch = settings.batch["vae"]

    def step(i: int) -> dict[str, float]:
        _, gen = _rng(settings, "vae", i)
        x = _pixels(train[torch.randint(len(train), (batch,), generator=gen).numpy()])
        _set_lr(optimizer, _lr(i, 1e-3, loop.total))
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        mse = F.mse_loss(recon, x)
        # L1 keeps edges sharp; the KL term is tiny, as in Stable Diffusion's autoencoder.
        loss = mse + F.l1_loss(recon, x) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"psnr": float(10 * math.log10(4 / max(mse.item(), 1e-10)))}

    vae.train()
    loop.run(step)
    vae.eval()
    # Scale latents to unit variance, as Stable Diffusion's 0.18215 does for its VAE.
    with torch.no_grad():
        sample = _pixels(train[: min(len(train), 512)])
        std = vae.encode(sample).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(settings.work / "vae" / "model")
    return {"steps": loop.step, "seconds": round(loop.elapsed), "scaling_factor": 1.0 / std}


def _clip_models(settings: Settings):
    from transformers import CLIPTextModel, CLIPVisionModelWithProjection

    tokenizer = load_tokenizer(settings.work / "tokenizer")
    text = CLIPTextModel(text_config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id))
    vision = CLIPVisionModelWithProjection(vision_config())
    return tokenizer, text, vision


class _ClipHeads(torch.nn.Module):
    """Training-only extras: the temperature and attribute heads that teach both towers to
    separate shape, colour and background (plain contrastive learning was slow on shape)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        sizes = {"colour": len(COLOUR_NAMES), "shape": len(SHAPES), "background": len(COLOUR_NAMES)}
        self.text = torch.nn.ModuleDict({k: torch.nn.Linear(width, n) for k, n in sizes.items()})
        self.image = torch.nn.ModuleDict({k: torch.nn.Linear(width, n) for k, n in sizes.items()})


def _matches(labels: torch.Tensor, named: torch.Tensor) -> torch.Tensor:
    """[images, captions] 1 where the image has every attribute the caption names."""
    agree = (labels[:, None, :] == named[None, :, :]) | (named[None, :, :] < 0)
    return agree.all(-1).float()


def stage_clip(settings: Settings) -> dict[str, Any]:
    train = _load_split(settings, "train")
    tokenizer, text, vision = _clip_models(settings)
    heads = _ClipHeads(text.config.hidden_size)
    params = [*text.parameters(), *vision.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.01)
    loop = Loop(settings, "clip", {"text": text, "vision": vision, "heads": heads, "optimizer": optimizer})
    batch = min(settings.batch["clip"], len(train["images"]))
    labels_all = torch.from_numpy(np.stack([train["colour"], train["shape"], train["background"]], 1))

    def step(i: int) -> dict[str, float]:
        rng, gen = _rng(settings, "clip", i)
        index = torch.randperm(len(labels_all), generator=gen)[:batch]
        labels = labels_all[index]
        texts = [caption(scene_of(train, int(j)), rng) for j in index]
        named = torch.tensor([mentioned(t) for t in texts])
        _set_lr(optimizer, _lr(i, 5e-4, loop.total))
        image_embeds = vision(pixel_values=clip_pixels(_pixels(train["images"][index.numpy()]))).image_embeds
        text_embeds = text(input_ids=_tokenize(tokenizer, texts, CLIP_TEXT_LENGTH)).pooler_output
        logits = heads.logit_scale.exp().clamp(max=100) * F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T
        # Several captions in a batch can describe the same image (and partial captions many):
        # every consistent pair is a positive.
        target = _matches(labels, named)
        loss = -(F.log_softmax(logits, 1) * target / target.sum(1, keepdim=True).clamp(min=1)).sum(1).mean()
        loss = loss - (F.log_softmax(logits, 0) * target / target.sum(0, keepdim=True).clamp(min=1)).sum(0).mean()
        for k, name in enumerate(["colour", "shape", "background"]):
            loss = loss + F.cross_entropy(heads.image[name](image_embeds), labels[:, k])
            if (named[:, k] >= 0).any():
                loss = loss + F.cross_entropy(heads.text[name](text_embeds), named[:, k], ignore_index=-1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        accuracy = (logits.argmax(1) == torch.arange(len(index))).float().mean()
        return {"loss": loss.item(), "i2t": accuracy.item()}

    text.train(), vision.train()
    loop.run(step)
    text.save_pretrained(settings.work / "clip" / "text_encoder")
    vision.save_pretrained(settings.work / "clip" / "image_encoder")
    return {"steps": loop.step, "seconds": round(loop.elapsed)}


def judge_step(model, optimizer, images: np.ndarray, labels: dict[str, torch.Tensor], index: torch.Tensor,
               gen: torch.Generator, blur: bool) -> dict[str, float]:
    """One step of a judge classifier on the images at ``index`` (the base judge and the
    adapters' heart-aware judge train alike). Generated images are a little soft and noisy,
    so every other batch is blurred and every batch gets a little noise: judge robustly to both."""
    x = (_pixels(images[index.numpy()]) + 1) / 2
    if blur:
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1) * 0.5 + x * 0.5
    x = (x + 0.03 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    logits = model(x)
    loss = sum(F.cross_entropy(logits[k], labels[k][index]) for k in logits)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.item()}


def stage_classifier(settings: Settings) -> dict[str, Any]:
    train = _load_split(settings, "train")
    model = ShapeClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loop = Loop(settings, "classifier", {"model": model, "optimizer": optimizer})
    batch = settings.batch["classifier"]
    labels = {k: torch.from_numpy(train[k]) for k in ["colour", "shape", "background", "size", "position"]}

    def step(i: int) -> dict[str, float]:
        _, gen = _rng(settings, "classifier", i)
        index = torch.randint(len(train["images"]), (batch,), generator=gen)
        return judge_step(model, optimizer, train["images"], labels, index, gen, blur=bool(i % 2))

    model.train()
    loop.run(step)
    model.eval()
    save_classifier(model, settings.work / "classifier" / "classifier.safetensors")
    return {"steps": loop.step, "seconds": round(loop.elapsed)}


class _PromptCache:
    """Text-encoder hidden states per caption, computed the first time a caption is drawn
    (the encoder is frozen, so each of the ~1,900 captions is encoded once). Each caption is
    encoded on its own, so its states do not depend on which captions shared a batch: a
    resumed run, whose cache fills in a different order, sees bit-identical inputs."""

    def __init__(self, tokenizer, text_encoder) -> None:
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.states: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = sorted(set(texts) - self.states.keys())
        if missing:
            self.states.update(zip(missing, encode_texts(self.tokenizer, self.text_encoder, missing, batch=1)))
        return torch.stack([self.states[t] for t in texts])


@torch.no_grad()
def encode_texts(tokenizer, text_encoder, texts: list[str], batch: int = 256) -> torch.Tensor:
    """Hidden states exactly as a Stable Diffusion prompt encoder computes them."""
    out = []
    for start in range(0, len(texts), batch):
        ids = _tokenize(tokenizer, texts[start:start + batch], tokenizer.model_max_length)
        out.append(text_encoder(input_ids=ids).last_hidden_state)
    return torch.cat(out)


@torch.no_grad()
def _encode_latents(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    out = [vae.encode(_pixels(images[i:i + batch])).latent_dist.mean for i in range(0, len(images), batch)]
    return torch.cat(out) * vae.config.scaling_factor


def _probe_prompt_sensitivity(unet, latents: torch.Tensor, embeds: dict[str, torch.Tensor],
                              alphas: torch.Tensor) -> float:
    """How much the prediction depends on the prompt: |eps(a) - eps(b)| / |eps(a)| for two
    prompts that differ in every attribute, on fixed noisy latents. Near zero means the UNet
    ignores its text (the failure to catch early, not after an hour of training)."""
    gen = torch.Generator().manual_seed(0)
    t = torch.full((len(latents),), 600)
    noisy = alphas[600].sqrt() * latents + (1 - alphas[600]).sqrt() * torch.randn(latents.shape, generator=gen)
    a = unet(noisy, t, encoder_hidden_states=embeds["a"].expand(len(latents), -1, -1)).sample
    b = unet(noisy, t, encoder_hidden_states=embeds["b"].expand(len(latents), -1, -1)).sample
    return float((a - b).norm() / a.norm())


def stage_unet(settings: Settings) -> dict[str, Any]:
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextModel

    train = _load_split(settings, "train")
    vae = AutoencoderKL.from_pretrained(settings.work / "vae" / "model").eval()
    tokenizer = load_tokenizer(settings.work / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(settings.work / "clip" / "text_encoder").eval()
    cache = settings.work / "unet" / "inputs.pt"
    if cache.exists():
        latents = torch.load(cache)["latents"]
    else:
        latents = _encode_latents(vae, train["images"])
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"latents": latents}, cache)
    prompts = _PromptCache(tokenizer, text_encoder)
    alphas = DDPMScheduler.from_config(SCHEDULER_CONFIG).alphas_cumprod
    snr = alphas / (1 - alphas)

    unet = build_unet()
    ema = build_unet().requires_grad_(False)
    ema.load_state_dict(unet.state_dict())
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3, weight_decay=0.01)
    loop = Loop(settings, "unet", {"unet": unet, "ema": ema, "optimizer": optimizer}, save_every=180)
    batch = min(settings.batch["unet"], len(latents))
    probe = {"a": prompts(["a red circle on a blue background"]),
             "b": prompts(["a green cross on a yellow background"])}
    figures: dict[str, float] = {}

    def step(i: int) -> dict[str, float]:
        rng, gen = _rng(settings, "unet", i)
        index = torch.randint(len(latents), (batch,), generator=gen)
        texts = ["" if rng.random() < CAPTION_DROPOUT else caption(scene_of(train, int(j)), rng) for j in index]
        context = prompts(texts)
        x0 = latents[index]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, len(alphas), (batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        _set_lr(optimizer, _lr(i, 1e-3, loop.total, warmup=200))
        prediction = unet(noisy, t, encoder_hidden_states=context).sample
        # Min-SNR-5 weighting: stop easy, low-noise steps from dominating the gradient.
        weight = snr[t].clamp(max=5.0) / snr[t]
        loss = (weight * (prediction - noise).pow(2).mean((1, 2, 3))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        decay = min(0.995, (1 + i) / (10 + i))  # short memory: the run is short
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), unet.parameters()):
                p_ema.lerp_(p, 1 - decay)
        if i % 100 == 0:
            with torch.no_grad():
                figures["text_effect"] = _probe_prompt_sensitivity(ema, latents[:8], probe, alphas)
        return {"loss": loss.item(), **figures}

    def save_ema() -> None:
        ema.save_pretrained(settings.work / "unet" / "model")
        _log(settings, f"unet step {loop.step}: text_effect={figures.get('text_effect', float('nan')):.3f}")

    unet.train()
    loop.run(step, on_save=save_ema)
    ema.save_pretrained(settings.work / "unet" / "model")
    return {"steps": loop.step, "seconds": round(loop.elapsed), "text_effect": figures.get("text_effect")}


def fit_latent_rgb(latents: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Least-squares [C+1, 3] map from (scaled) latents to RGB in [0, 1]; last row is the bias.

    ``images`` [B, 3, H, W] in [0, 1] are pooled to the latent resolution first."""
    small = F.adaptive_avg_pool2d(images, latents.shape[-2:])
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    x = torch.cat([x, torch.ones(len(x), 1)], 1)
    y = small.permute(0, 2, 3, 1).reshape(-1, 3)
    return torch.linalg.lstsq(x.double(), y.double()).solution.float()


def stage_latent_rgb(settings: Settings) -> dict[str, Any]:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(settings.work / "vae" / "model").eval()
    images = _load_split(settings, "train")["images"][:2000]
    factors = fit_latent_rgb(_encode_latents(vae, images), (_pixels(images) + 1) / 2)
    (settings.work / "latent_rgb.json").write_text(json.dumps([[round(v, 6) for v in row] for row in factors.tolist()]) + "\n")
    return {"rows": len(factors)}


def stage_export(settings: Settings) -> dict[str, Any]:
    """Assemble a Stable-Diffusion-layout folder; loading it needs only stock classes."""
    from diffusers import DDPMScheduler

    out = settings.export_to
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    work = settings.work
    shutil.copytree(work / "vae" / "model", out / "vae")
    shutil.copy(work / "latent_rgb.json", out / "vae" / "latent_rgb.json")
    shutil.copytree(work / "clip" / "text_encoder", out / "text_encoder")
    shutil.copytree(work / "clip" / "image_encoder", out / "image_encoder")
    shutil.copytree(work / "tokenizer", out / "tokenizer")
    shutil.copytree(work / "unet" / "model", out / "unet")
    DDPMScheduler.from_config(SCHEDULER_CONFIG).save_pretrained(out / "scheduler")
    import diffusers

    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "_nodeflow_family": "bundled",
        "_nodeflow_vae_scale_factor": VAE_FACTOR,
        "_nodeflow_latent_channels": LATENT_CHANNELS,
        "feature_extractor": [None, None],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    settings.classifier_to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(work / "classifier" / "classifier.safetensors", settings.classifier_to)
    digests = weight_digests(out)
    _write_provenance(settings, out / "training.json", digests)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"bytes": size, "sha256": digests}


def weight_digests(folder: Path) -> dict[str, str]:
    """sha256 of every weights file, by path in ``folder``: two runs with the same settings on
    the same machine give the same digests."""
    return {f.relative_to(folder).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*.safetensors"))}


def _write_provenance(settings: Settings, path: Path, digests: dict[str, str]) -> None:
    """``training.json`` beside the weights: how they were made (settings, library versions,
    each stage's figures) and their digests, so a retrain can be compared with them."""
    import diffusers
    import transformers

    stages = {}
    for stage in MODEL_STAGES[:-1]:
        marker = _done_marker(settings, stage)
        if marker.exists():
            stages[stage] = json.loads(marker.read_text())
    record = {
        "command": "nodeflow train-demo",
        "seed": settings.seed, "train_images": settings.train_images, "held_out_images": settings.held_out_images,
        "steps": {k: settings.steps[k] for k in MODEL_STEPS}, "batch": {k: settings.batch[k] for k in MODEL_STEPS},
        "time_caps_minutes": {k: v for k, v in settings.minutes.items() if k in MODEL_STEPS},
        "max_steps": settings.max_steps, "threads": settings.threads,
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__},
        "stages": stages,
        "sha256": digests,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")


_STAGE_FUNCTIONS: dict[str, Callable[[Settings], dict[str, Any]]] = {
    "dataset": stage_dataset, "vae": stage_vae, "clip": stage_clip, "classifier": stage_classifier,
    "unet": stage_unet, "latent_rgb": stage_latent_rgb, "export": stage_export,
    **_adapters.STAGE_FUNCTIONS,
}


# --- driver ----------------------------------------------------------------------------------


def _log(settings: Settings, message: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {message}"
    if not settings.quiet:
        tqdm.write(line)
    with open(settings.work / "train.log", "a") as f:
        f.write(line + "\n")


def _done_marker(settings: Settings, stage: str) -> Path:
    return settings.work / stage / "done.json"


def reopen(settings: Settings, stage: str) -> None:
    """Let ``stage`` train on from its checkpoint (e.g. with a larger budget); everything
    downstream of it is rebuilt from scratch afterwards."""
    for name in [stage, *_DEPENDENTS[stage]]:
        _done_marker(settings, name).unlink(missing_ok=True)


def adopt_shipped(settings: Settings) -> None:
    """Fill the work folder with the shipped model as its stages' output, as if this run had
    trained it: the model folder's weights are checked against the digests its
    ``training.json`` recorded, and the settings must be those it was trained with, so the
    adapters trained on it are the ones a run from scratch gives. The dataset stage is
    rendered again (deterministic, seconds)."""
    source = settings.export_to
    record = json.loads((source / "training.json").read_text())
    if weight_digests(source) != record["sha256"]:
        raise SystemExit(f"{source}: the weights are not the ones its training.json names; retrain from scratch")
    for key in ["seed", "train_images", "held_out_images"]:
        if record[key] != getattr(settings, key):
            raise SystemExit(f"--from-shipped: the shipped model was trained with {key}={record[key]!r}, "
                             f"not {getattr(settings, key)!r}")
    if any(settings.steps[k] != v for k, v in record["steps"].items()) or any(
            settings.batch[k] != v for k, v in record["batch"].items()):
        raise SystemExit("--from-shipped: the model stages' steps and batches must be the shipped ones")
    work = settings.work
    work.mkdir(parents=True, exist_ok=True)
    if not _done_marker(settings, "dataset").exists():
        train(settings, ["dataset"])  # first: finishing it clears the later stages' folders
    copies = {"vae/model": "vae", "clip/text_encoder": "text_encoder", "clip/image_encoder": "image_encoder",
              "unet/model": "unet"}
    for target, name in copies.items():
        shutil.rmtree(work / target, ignore_errors=True)
        shutil.copytree(source / name, work / target)
    (work / "vae" / "model" / "latent_rgb.json").unlink(missing_ok=True)
    shutil.copy(source / "vae" / "latent_rgb.json", work / "latent_rgb.json")
    (work / "classifier").mkdir(exist_ok=True)
    shutil.copy(settings.classifier_to, work / "classifier" / "classifier.safetensors")
    for stage in ["vae", "clip", "classifier", "unet", "latent_rgb", "export"]:
        figures = {**record["stages"].get(stage, {}), "adopted_from": str(source)}
        _done_marker(settings, stage).parent.mkdir(parents=True, exist_ok=True)
        _done_marker(settings, stage).write_text(json.dumps(figures, indent=2) + "\n")
    _log(settings, f"adopted the shipped model from {source}")


def train(settings: Settings, stages: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the pipeline (or the named stages, whose inputs must exist), skipping finished
    stages. Returns each stage's figures."""
    torch.set_num_threads(settings.threads)
    settings.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, dict[str, Any]] = {}
    for stage in stages or STAGES:
        marker = _done_marker(settings, stage)
        if marker.exists():
            report[stage] = json.loads(marker.read_text())
            continue
        _log(settings, f"stage {stage} starting")
        started = time.monotonic()
        # Models are initialised from torch's global generator: seed it per stage, so the
        # initial weights (and with them the whole run) follow from --seed.
        torch.manual_seed(_rng(settings, stage, -1)[0].getrandbits(63))
        figures = _STAGE_FUNCTIONS[stage](settings)
        figures["wall_seconds"] = round(time.monotonic() - started, 1)
        figures.update(torch=torch.__version__, threads=settings.threads)
        for later in _DEPENDENTS[stage]:
            # Built on this stage's old output (a UNet checkpoint, its cached VAE latents):
            # start those over rather than train on from stale inputs.
            shutil.rmtree(settings.work / later, ignore_errors=True)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(figures, indent=2) + "\n")
        _log(settings, f"stage {stage} done: {figures}")
        report[stage] = figures
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nodeflow train-demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Settings.work, help="checkpoint folder (resumed when rerun)")
    p.add_argument("--export-to", type=Path, default=MODEL_DIR, help="where the diffusers folder is written")
    p.add_argument("--classifier-to", type=Path, default=CLASSIFIER_PATH, help="where the judging classifier is written")
    p.add_argument("--adapters-to", type=Path, default=ADAPTERS_DIR,
                   help="where the adapters are written (loras/, controlnet/, upscale_models/)")
    p.add_argument("--judge-to", type=Path, default=ADAPTER_JUDGE_PATH,
                   help="where the judge that also knows the LoRA's heart is written")
    p.add_argument("--from-shipped", action="store_true",
                   help="take the model's finished stages from the shipped folder (checked against its "
                        "training.json digests) instead of retraining them: only the adapters train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-images", type=int, default=Settings.train_images)
    p.add_argument("--held-out-images", type=int, default=Settings.held_out_images)
    p.add_argument("--steps", action="append", default=[], metavar="STAGE=N",
                   help=f"step budget of a stage (defaults: {DEFAULT_STEPS})")
    p.add_argument("--minutes", action="append", default=[], metavar="STAGE=MIN",
                   help="cap a stage's training time (the result then depends on the machine's speed)")
    p.add_argument("--batch", action="append", default=[], metavar="STAGE=N",
                   help=f"batch size of a stage (defaults: {DEFAULT_BATCH})")
    p.add_argument("--max-steps", type=int, default=None, help="cap every stage at this many steps")
    p.add_argument("--stages", default=None, help="comma-separated subset of: " + ",".join(STAGES))
    p.add_argument("--reopen", action="append", default=[], metavar="STAGE",
                   help="train a finished stage on from its checkpoint (and redo what depends on it)")
    p.add_argument("--keep-shipped", action="append", default=[], metavar="STAGE",
                   help=f"take this adapter stage's output ({', '.join(_adapters.KEEPABLE)}) from the shipped "
                        "adapters folder, checked against adapters.json, instead of training it")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads; on a machine busy with other work, 1 is often faster")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _pairs(items: list[str], cast: type, flag: str) -> dict[str, Any]:
    out = {}
    for item in items:
        stage, sep, value = item.partition("=")
        if not sep or stage not in TRAINED_STAGES:
            raise SystemExit(f"{flag} expects STAGE=VALUE with STAGE one of {TRAINED_STAGES}, got {item!r}")
        out[stage] = cast(value)
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings(
        work=args.work, export_to=args.export_to, classifier_to=args.classifier_to, seed=args.seed,
        adapters_to=args.adapters_to, judge_to=args.judge_to,
        train_images=args.train_images, held_out_images=args.held_out_images,
        steps={**DEFAULT_STEPS, **_pairs(args.steps, int, "--steps")},
        minutes=_pairs(args.minutes, float, "--minutes"),
        batch={**DEFAULT_BATCH, **_pairs(args.batch, int, "--batch")},
        max_steps=args.max_steps, threads=args.threads, quiet=args.quiet,
    )
    stages = args.stages.split(",") if args.stages else None
    unknown = [s for s in (stages or []) + args.reopen if s not in STAGES]
    if unknown:
        print(f"unknown stage(s) {unknown}; stages are {STAGES}")
        return 2
    settings.work.mkdir(parents=True, exist_ok=True)
    if args.from_shipped:
        adopt_shipped(settings)
    for stage in args.reopen:
        reopen(settings, stage)
    if args.keep_shipped:
        _adapters.keep_shipped(settings, args.keep_shipped)
    report = train(settings, stages)
    for stage, figures in report.items():
        print(f"{stage:>11}: {figures}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
