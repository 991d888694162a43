"""The bundled model's adapters, trained by ``nodeflow train-demo`` after the model itself.

Each is an ordinary file of its kind, so it is loaded by exactly the nodes and loaders a
user's own file goes through:

    adapter_data     hearts (a shape the base model never saw), the shapes' masks, 64x64 renders
    judge            the classifier again, with a sixth shape: the heart (measures the LoRA)
    lora             PEFT LoRA on the UNet's attention blocks teaching "heart", kohya layout
    controlnet       diffusers ControlNetModel made from the UNet: the hint is the shape's mask
    upscaler         2x RealESRGAN-compact (SRVGGNetCompact) network, spandrel's key layout
    hires_lora       a small LoRA for the hires fix's second pass: the UNet on 32x32 latents
    export_adapters  copy them into ``nodes/bundled/adapters/<kind>/`` with ``adapters.json``

The same rules as the other stages: randomness from (seed, stage, step), step budgets,
resumable checkpoints (see trainer.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nodes.bundled.training.dataset import (ALL_SHAPES, HELD_OUT_SEED, NEW_SHAPES, SHAPES, TRAIN_SEED, caption,
                                            make_split, render_mask, scene_of, split_scenes)

if TYPE_CHECKING:
    from nodes.bundled.training.trainer import Settings

HEART = ALL_SHAPES.index("heart")
HEART_SEED = 7_000_001  # its own streams: no heart scene equals another split's
HEART_HELD_OUT_SEED = 7_000_003
LORA_NAME = "shapes-heart.safetensors"
CONTROLNET_NAME = "shapes-mask"
UPSCALER_NAME = "2x-shapes-compact.safetensors"
HIRES_LORA_NAME = "shapes-hires.safetensors"
LORA_RANK = 8
# The attention blocks of the UNet: attention projections, their feed-forward and in/out projections.
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
UPSCALER_FEATURES, UPSCALER_CONVS = 32, 6
UPSCALER_LR = 2e-3
LARGE_IMAGES = 8000  # 64x64 renders of the first training scenes, for the upscaler

# The hi-res LoRA: rank and storage sized to the 40 MB budget (about 0.2 MB), and only the
# noise levels a second pass at denoise <= 0.6 starts from.
HIRES_LORA_RANK = 4
HIRES_MAX_T = 600

STAGES = ["adapter_data", "judge", "lora", "controlnet", "upscaler", "hires_lora", "export_adapters"]
DEFAULT_STEPS = {"judge": 300, "lora": 1000, "controlnet": 1500, "upscaler": 2500, "hires_lora": 300}
DEFAULT_BATCH = {"judge": 128, "lora": 32, "controlnet": 32, "upscaler": 32, "hires_lora": 16}


def _trainer():
    from nodes.bundled.training import trainer

    return trainer


# --- data ----------------------------------------------------------------------------------


def stage_adapter_data(settings: Settings) -> dict[str, Any]:
    folder = settings.work / "adapter_data"
    folder.mkdir(parents=True, exist_ok=True)
    hearts = max(1, settings.train_images // 5)
    held_hearts = max(1, settings.held_out_images // 5)
    np.savez(folder / "hearts.npz", **make_split(hearts, HEART_SEED + settings.seed, shapes=(HEART,)))
    np.savez(folder / "hearts_held_out.npz", **make_split(held_hearts, HEART_HELD_OUT_SEED, shapes=(HEART,)))
    # The same scenes as the dataset stage's splits (same seeds), as masks and at 64x64.
    train = split_scenes(settings.train_images, TRAIN_SEED + settings.seed)
    held = split_scenes(settings.held_out_images, HELD_OUT_SEED)
    np.savez(folder / "masks.npz", masks=np.stack([np.asarray(render_mask(s)) for s in train]))
    np.savez(folder / "held_out_masks.npz", masks=np.stack([np.asarray(render_mask(s)) for s in held]))
    large = min(LARGE_IMAGES, settings.train_images)
    np.savez(folder / "large.npz", images=_large(train[:large]))
    np.savez(folder / "held_out_large.npz", images=_large(held))
    return {"hearts": hearts, "held_out_hearts": held_hearts, "large_images": large}


def _large(scenes) -> np.ndarray:
    from nodes.bundled.training.dataset import render

    return np.stack([np.asarray(render(s, 64)) for s in scenes])


def _load(settings: Settings, name: str) -> dict[str, np.ndarray]:
    with np.load(settings.work / "adapter_data" / f"{name}.npz") as data:
        return dict(data)


# --- judge ---------------------------------------------------------------------------------


def stage_judge(settings: Settings) -> dict[str, Any]:
    """The classifier stage's recipe on the base split plus hearts (one image in six a heart)."""
    from nodes.bundled.training.classifier import ShapeClassifier, save_classifier

    t = _trainer()
    base, hearts = t._load_split(settings, "train"), _load(settings, "hearts")
    names = ["colour", "shape", "background", "size", "position"]
    images = np.concatenate([base["images"], hearts["images"]])
    labels = {k: torch.from_numpy(np.concatenate([base[k], hearts[k]])) for k in names}
    model = ShapeClassifier(shapes=len(ALL_SHAPES))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loop = t.Loop(settings, "judge", {"model": model, "optimizer": optimizer})
    batch = settings.batch["judge"]
    n_base, n_hearts = len(base["images"]), len(hearts["images"])

    def step(i: int) -> dict[str, float]:
        _, gen = t._rng(settings, "judge", i)
        k = max(1, batch // 6)
        index = torch.cat([torch.randint(n_base, (batch - k,), generator=gen),
                           n_base + torch.randint(n_hearts, (k,), generator=gen)])
        return t.judge_step(model, optimizer, images, labels, index, gen, blur=bool(i % 2))

    model.train()
    loop.run(step)
    model.eval()
    save_classifier(model, settings.work / "judge" / "judge_heart.safetensors")
    return {"steps": loop.step, "seconds": round(loop.elapsed)}


# --- shared by the UNet-side stages --------------------------------------------------------


def _base(settings: Settings):
    """The trained VAE, tokenizer, frozen text encoder (through a prompt cache) and UNet."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from nodes.bundled.training.models import SCHEDULER_CONFIG
    from nodes.bundled.training.tokenizer import load_tokenizer

    t = _trainer()
    vae = AutoencoderKL.from_pretrained(settings.work / "vae" / "model").eval()
    tokenizer = load_tokenizer(settings.work / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(settings.work / "clip" / "text_encoder").eval()
    unet = UNet2DConditionModel.from_pretrained(settings.work / "unet" / "model")
    alphas = DDPMScheduler.from_config(SCHEDULER_CONFIG).alphas_cumprod
    return vae, t._PromptCache(tokenizer, text_encoder), unet, alphas


def _latents(settings: Settings, stage: str, vae, images: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """VAE latents of each named image set, cached in the stage's folder."""
    cache = settings.work / stage / "inputs.pt"
    if cache.exists():
        return torch.load(cache)
    out = {name: _trainer()._encode_latents(vae, value) for name, value in images.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out


def _noised(x0: torch.Tensor, alphas: torch.Tensor, gen: torch.Generator):
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, len(alphas), (len(x0),), generator=gen)
    a = alphas[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise, noise, t


def _min_snr_loss(prediction: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    snr = alphas[t] / (1 - alphas[t])
    weight = snr.clamp(max=5.0) / snr
    return (weight * (prediction - noise).pow(2).mean((1, 2, 3))).mean()


# --- LoRA ----------------------------------------------------------------------------------


def stage_lora(settings: Settings) -> dict[str, Any]:
    """Half of each batch hearts captioned with the new word, half the base data with its
    own captions (so the base concepts stay as they were). Empty prompts only for base
    images: the unconditional prediction stays the base model's."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    t = _trainer()
    vae, prompts, unet, alphas = _base(settings)
    base, hearts = t._load_split(settings, "train"), _load(settings, "hearts")
    keep = min(len(base["images"]), 4 * len(hearts["images"]))
    latents = _latents(settings, "lora", vae, {"base": base["images"][:keep], "hearts": hearts["images"]})
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=LORA_TARGETS))
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    loop = t.Loop(settings, "lora", {"unet": unet, "optimizer": optimizer})
    batch = settings.batch["lora"]

    def step(i: int) -> dict[str, float]:
        rng, gen = t._rng(settings, "lora", i)
        half = max(1, batch // 2)
        hi = torch.randint(len(latents["hearts"]), (half,), generator=gen)
        bi = torch.randint(len(latents["base"]), (batch - half,), generator=gen)
        texts = [caption(scene_of(hearts, int(j)), rng) for j in hi]
        texts += ["" if rng.random() < t.CAPTION_DROPOUT else caption(scene_of(base, int(j)), rng) for j in bi]
        x0 = torch.cat([latents["hearts"][hi], latents["base"][bi]])
        t._set_lr(optimizer, t._lr(i, 1e-3, loop.total))
        return _lora_update(unet, optimizer, params, _noised(x0, alphas, gen), prompts(texts), alphas)

    unet.train()
    loop.run(step)
    save_lora_kohya(get_peft_model_state_dict(unet), settings.work / "lora" / LORA_NAME)
    return {"steps": loop.step, "seconds": round(loop.elapsed), "rank": LORA_RANK}


def _lora_update(unet, optimizer, params, noised, context: torch.Tensor, alphas: torch.Tensor) -> dict[str, float]:
    """One optimiser step of a UNet LoRA on (noisy latents, noise, timesteps), shared by both LoRAs."""
    noisy, noise, steps = noised
    loss = _min_snr_loss(unet(noisy, steps, encoder_hidden_states=context).sample, noise, steps, alphas)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return {"loss": loss.item()}


def save_lora_kohya(unet_layers: dict[str, torch.Tensor], path: Path, dtype: torch.dtype = torch.float32) -> None:
    """PEFT UNet LoRA weights -> the kohya/A1111 layout (lora_unet_*.lora_down/up + alpha),
    stored as ``dtype`` (user LoRAs are often float16 too)."""
    from diffusers.utils import convert_state_dict_to_kohya
    from safetensors.torch import save_file

    kohya = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in unet_layers.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    # No metadata: safetensors writes its keys in hash order, which would change the bytes per run.
    save_file({k: v.to(dtype).contiguous() for k, v in sorted(kohya.items())}, str(path))


# --- hi-res LoRA ----------------------------------------------------------------------------


def stage_hires_lora(settings: Settings) -> dict[str, Any]:
    """The UNet was trained on 16x16 latents only; at the hires fix's 32x32 latents its second
    pass redraws the edges (crosses worst). A LoRA trained on the 32x32 latents of 64x64
    renders, at the noise levels a second pass starts from, keeps the shape, and the base
    weights (which the other adapters were trained on) stay as they are: the hires workflow
    loads it through Load LoRA on its second pass only."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    t = _trainer()
    vae, prompts, unet, alphas = _base(settings)
    train, large = t._load_split(settings, "train"), _load(settings, "large")["images"]
    latents = _latents(settings, "hires_lora", vae, {"large": large})["large"]
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=HIRES_LORA_RANK, lora_alpha=HIRES_LORA_RANK, target_modules=LORA_TARGETS))
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    loop = t.Loop(settings, "hires_lora", {"unet": unet, "optimizer": optimizer})
    batch = min(settings.batch["hires_lora"], len(latents))
    levels = alphas[:HIRES_MAX_T]

    def step(i: int) -> dict[str, float]:
        rng, gen = t._rng(settings, "hires_lora", i)
        index = torch.randint(len(latents), (batch,), generator=gen)
        texts = ["" if rng.random() < t.CAPTION_DROPOUT else caption(scene_of(train, int(j)), rng) for j in index]
        t._set_lr(optimizer, t._lr(i, 1e-3, loop.total))
        return _lora_update(unet, optimizer, params, _noised(latents[index], levels, gen), prompts(texts), alphas)

    unet.train()
    loop.run(step)
    save_lora_kohya(get_peft_model_state_dict(unet), settings.work / "hires_lora" / HIRES_LORA_NAME, torch.float16)
    return {"steps": loop.step, "seconds": round(loop.elapsed), "rank": HIRES_LORA_RANK, "max_t": HIRES_MAX_T}


# --- ControlNet ----------------------------------------------------------------------------


def build_controlnet(unet):
    """A ControlNet copied from the UNet's encoder half; the hint encoder halves the 32x32
    mask once, to the 16x16 latent grid."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))


def hint_pixels(masks: np.ndarray) -> torch.Tensor:
    """uint8 masks [B, H, W] -> the ControlNet's hint [B, 3, H, W] in [0, 1] (white = shape)."""
    return (torch.from_numpy(masks).float() / 255)[:, None].expand(-1, 3, -1, -1).contiguous()


def stage_controlnet(settings: Settings) -> dict[str, Any]:
    t = _trainer()
    vae, prompts, unet, alphas = _base(settings)
    train, masks = t._load_split(settings, "train"), _load(settings, "masks")["masks"]
    latents = _latents(settings, "controlnet", vae, {"base": train["images"]})["base"]
    unet.requires_grad_(False).eval()
    controlnet = build_controlnet(unet)
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=5e-4, weight_decay=0.0)
    loop = t.Loop(settings, "controlnet", {"controlnet": controlnet, "optimizer": optimizer}, save_every=180)
    batch = min(settings.batch["controlnet"], len(latents))

    def step(i: int) -> dict[str, float]:
        rng, gen = t._rng(settings, "controlnet", i)
        index = torch.randint(len(latents), (batch,), generator=gen)
        texts = ["" if rng.random() < t.CAPTION_DROPOUT else caption(scene_of(train, int(j)), rng) for j in index]
        context = prompts(texts)
        noisy, noise, steps = _noised(latents[index], alphas, gen)
        t._set_lr(optimizer, t._lr(i, 5e-4, loop.total))
        down, mid = controlnet(noisy, steps, encoder_hidden_states=context,
                               controlnet_cond=hint_pixels(masks[index.numpy()]), return_dict=False)
        prediction = unet(noisy, steps, encoder_hidden_states=context, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid).sample
        loss = _min_snr_loss(prediction, noise, steps, alphas)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        return {"loss": loss.item()}

    controlnet.train()
    loop.run(step)
    controlnet.eval().save_pretrained(settings.work / "controlnet" / "model")
    return {"steps": loop.step, "seconds": round(loop.elapsed)}


# --- upscaler ------------------------------------------------------------------------------


class CompactUpscaler(nn.Module):
    """The RealESRGAN "compact" network (SRVGGNetCompact), written here in plain torch with
    its state-dict layout, so the file reads in spandrel (and any ESRGAN tool): ``body`` is
    conv, PReLU, ``convs`` x (conv, PReLU), conv to 3 x scale^2 channels; then a pixel
    shuffle, plus the nearest-neighbour upscaled input."""

    def __init__(self, features: int = UPSCALER_FEATURES, convs: int = UPSCALER_CONVS, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(3, features, 3, 1, 1), nn.PReLU(features)]
        for _ in range(convs):
            layers += [nn.Conv2d(features, features, 3, 1, 1), nn.PReLU(features)]
        layers.append(nn.Conv2d(features, 3 * scale * scale, 3, 1, 1))
        self.body = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, 3, sH, sW]."""
        out = x
        for layer in self.body:
            out = layer(out)
        return F.pixel_shuffle(out, self.scale) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def load_upscaler(path: Path) -> CompactUpscaler:
    from safetensors.torch import load_file

    state = load_file(str(path))
    last = max(int(k.split(".")[1]) for k in state)
    model = CompactUpscaler(int(state["body.0.weight"].shape[0]), (last - 2) // 2,
                            int(round((state[f"body.{last}.weight"].shape[0] / 3) ** 0.5)))
    model.load_state_dict(state)
    return model.eval()


def stage_upscaler(settings: Settings) -> dict[str, Any]:
    """Squared error between the 2x output of a 32x32 render and the same scene rendered at
    64x64; a quarter of the inputs softened a little, as decoded images are.

    Not L1: most output pixels lie in flat areas where the nearest-neighbour base the
    network adds is already exact, so L1's pull to the median residual (zero) kept the whole
    residual branch at zero and the network at the nearest-neighbour result (27.9 dB, below
    bicubic). The last conv starts at zero, so training starts from that base exactly."""
    from safetensors.torch import save_file

    t = _trainer()
    small = t._load_split(settings, "train")["images"]
    large = _load(settings, "large")["images"]
    model = CompactUpscaler()
    nn.init.zeros_(model.body[-1].weight)
    nn.init.zeros_(model.body[-1].bias)
    optimizer = torch.optim.AdamW(model.parameters(), lr=UPSCALER_LR, weight_decay=0.0)
    loop = t.Loop(settings, "upscaler", {"model": model, "optimizer": optimizer})
    batch = min(settings.batch["upscaler"], len(large))

    def step(i: int) -> dict[str, float]:
        _, gen = t._rng(settings, "upscaler", i)
        index = torch.randint(len(large), (batch,), generator=gen).numpy()
        x = (t._pixels(small[index]) + 1) / 2
        y = (t._pixels(large[index]) + 1) / 2
        soft = (torch.rand(batch, 1, 1, 1, generator=gen) < 0.25).float() * 0.5
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1) * soft + x * (1 - soft)
        t._set_lr(optimizer, t._lr(i, UPSCALER_LR, loop.total))
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"psnr": 10 * math.log10(1 / max(loss.item(), 1e-10))}

    model.train()
    loop.run(step)
    model.eval()
    path = settings.work / "upscaler" / UPSCALER_NAME
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return {"steps": loop.step, "seconds": round(loop.elapsed),
            "parameters": sum(p.numel() for p in model.parameters())}


# --- export --------------------------------------------------------------------------------


def stage_export_adapters(settings: Settings) -> dict[str, Any]:
    out, work = settings.adapters_to, settings.work
    for kind in ["loras", "controlnet", "upscale_models"]:
        shutil.rmtree(out / kind, ignore_errors=True)
        (out / kind).mkdir(parents=True)
    shutil.copy(work / "lora" / LORA_NAME, out / "loras" / LORA_NAME)
    shutil.copy(work / "hires_lora" / HIRES_LORA_NAME, out / "loras" / HIRES_LORA_NAME)
    shutil.copytree(work / "controlnet" / "model", out / "controlnet" / CONTROLNET_NAME)
    shutil.copy(work / "upscaler" / UPSCALER_NAME, out / "upscale_models" / UPSCALER_NAME)
    settings.judge_to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(work / "judge" / "judge_heart.safetensors", settings.judge_to)
    digests = {f.relative_to(out).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
               for f in sorted(out.rglob("*.safetensors"))}
    stages = {}
    for stage in STAGES[:-1]:
        marker = work / stage / "done.json"
        if marker.exists():
            stages[stage] = json.loads(marker.read_text())
    record = {"command": "nodeflow train-demo", "seed": settings.seed,
              "steps": {k: settings.steps[k] for k in DEFAULT_STEPS}, "batch": {k: settings.batch[k] for k in DEFAULT_BATCH},
              "max_steps": settings.max_steps, "threads": settings.threads, "torch": torch.__version__,
              "base_unet_sha256": hashlib.sha256((work / "unet" / "model" / "diffusion_pytorch_model.safetensors")
                                                 .read_bytes()).hexdigest(),
              "stages": stages, "sha256": digests}
    (out / "adapters.json").write_text(json.dumps(record, indent=2) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"bytes": size, "sha256": digests}


# The adapter stages whose output a run can take from the shipped folder (``--keep-shipped``):
# the files adapters.json records a digest of, and where each stage leaves them.
KEEPABLE = {"lora": {f"loras/{LORA_NAME}": f"lora/{LORA_NAME}"},
            "controlnet": {f"controlnet/{CONTROLNET_NAME}": "controlnet/model"},
            "upscaler": {f"upscale_models/{UPSCALER_NAME}": f"upscaler/{UPSCALER_NAME}"},
            "hires_lora": {f"loras/{HIRES_LORA_NAME}": f"hires_lora/{HIRES_LORA_NAME}"}}


def keep_shipped(settings: Settings, stages: list[str]) -> None:
    """Take ``stages``' output from the shipped adapters folder instead of training them again
    (e.g. to retrain one adapter without the others' hour): each file is checked against the
    digest ``adapters.json`` recorded, and the record must name this run's seed and step cap, the stages'
    steps and batches, and the UNet now in the work folder, so what is kept is what training
    them here would give. Their stage figures are the recorded ones, marked ``kept_from_shipped``."""
    t = _trainer()
    source = settings.adapters_to
    record = json.loads((source / "adapters.json").read_text())
    unet = settings.work / "unet" / "model" / "diffusion_pytorch_model.safetensors"
    if not unet.exists() or hashlib.sha256(unet.read_bytes()).hexdigest() != record["base_unet_sha256"]:
        raise SystemExit(f"--keep-shipped: the shipped adapters were trained on another UNet than {unet}")
    for key in ["seed", "max_steps"]:
        if record[key] != getattr(settings, key):
            raise SystemExit(f"--keep-shipped: the shipped adapters were trained with {key}={record[key]!r}, "
                             f"not {getattr(settings, key)!r}")
    if not (settings.work / "adapter_data" / "done.json").exists():
        t.train(settings, ["adapter_data"])  # first: finishing it clears the later stages' folders
    for stage in stages:
        if stage not in KEEPABLE:
            raise SystemExit(f"--keep-shipped expects stages from {list(KEEPABLE)}, got {stage!r}")
        if record["steps"][stage] != settings.steps[stage] or record["batch"][stage] != settings.batch[stage]:
            raise SystemExit(f"--keep-shipped: {stage} was shipped with steps {record['steps'][stage]} and batch "
                             f"{record['batch'][stage]}, not {settings.steps[stage]} and {settings.batch[stage]}")
        for shipped, produced in KEEPABLE[stage].items():
            path = source / shipped
            files = sorted(path.rglob("*.safetensors")) if path.is_dir() else [path]
            for f in files:
                name = f.relative_to(source).as_posix()
                if hashlib.sha256(f.read_bytes()).hexdigest() != record["sha256"].get(name):
                    raise SystemExit(f"--keep-shipped: {name} is not the file adapters.json records")
            target = settings.work / produced
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if path.is_dir() else shutil.copy)(path, target)
        marker = settings.work / stage / "done.json"
        figures = {k: v for k, v in record["stages"][stage].items() if k not in ("kept_from", "kept_from_shipped")}
        marker.write_text(json.dumps({**figures, "kept_from_shipped": True}, indent=2) + "\n")
        t._log(settings, f"kept the shipped {stage} from {source}")


STAGE_FUNCTIONS = {"adapter_data": stage_adapter_data, "judge": stage_judge, "lora": stage_lora,
                   "controlnet": stage_controlnet, "upscaler": stage_upscaler, "hires_lora": stage_hires_lora,
                   "export_adapters": stage_export_adapters}
DEPENDENTS = {"adapter_data": STAGES[1:], "judge": ["export_adapters"], "lora": ["export_adapters"],
              "controlnet": ["export_adapters"], "upscaler": ["export_adapters"], "hires_lora": ["export_adapters"],
              "export_adapters": []}
assert NEW_SHAPES and len(SHAPES) == HEART
