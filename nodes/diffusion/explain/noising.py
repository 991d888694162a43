"""Forward noising: training's jump from a clean latent straight to step t.

Because Gaussians add up, noising a clean latent x0 step by step for t steps is the
same as one draw: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps. These nodes
make that jump with the model's own schedule (its scheduler config, through diffusers'
``add_noise``, the call training uses) and show the image at each level.
"""

from __future__ import annotations

from typing import Any

from nodeflow import FLOAT, Float, Int, Node, NodeError, Output, RunContext, Socket

from nodes.diffusion.types import IMAGE, LATENT, MODEL, NOISE, VAE, Autoencoder, DiffusionModel, Latent, NoiseSource


def _train_scheduler(model: DiffusionModel) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(dict(model.scheduler_config))


def noised(model: DiffusionModel, samples: Any, seed: int | None, timestep: int) -> tuple[Any, float]:
    """``samples`` noised to train step ``timestep`` in one jump, and alpha-bar there."""
    import torch

    scheduler = _train_scheduler(model)
    generator = torch.Generator("cpu").manual_seed(seed if seed is not None else 0)
    noise = torch.randn(tuple(samples.shape), generator=generator, dtype=torch.float32).to(samples.device, samples.dtype)
    t = torch.full((samples.shape[0],), timestep, dtype=torch.long)
    return scheduler.add_noise(samples, noise, t), float(scheduler.alphas_cumprod[timestep])


class ForwardNoise(Node):
    type = "ForwardNoise"
    display_name = "Forward Noise"
    category = "explain"
    description = (
        "Noises a latent to a level of the model's training schedule in one jump: "
        "x_t = sqrt(alpha-bar) x0 + sqrt(1 - alpha-bar) noise, as training does. Level 0 "
        "is the clean latent, 1 the last (noisiest) train step. Decode it to see what the "
        "model is asked to denoise at that step."
    )

    model = Socket(MODEL, tooltip="whose noise schedule (its scheduler config)")
    latent = Socket(LATENT, tooltip="the clean latent (e.g. VAE Encode of a picture)")
    noise = Socket(NOISE, tooltip="the seeded noise eps")
    level = Float(0.5, min=0.0, max=1.0, step=0.01, tooltip="fraction of the training schedule: t = level x (T - 1)")
    outputs = (Output("latent", LATENT, tooltip="x_t"),
               Output("alpha_bar", FLOAT, tooltip="the share of signal variance left at t"))

    def run(self, ctx: RunContext, model: DiffusionModel, latent: Latent, noise: NoiseSource, level: float) -> tuple:
        from nodes.diffusion.explain.schedule_math import level_to_timestep

        t = level_to_timestep(level, model.scheduler_config)
        samples, alpha_bar = noised(model, latent.samples, noise.seed, t)
        return Latent(samples, latent.family, latent.noise_mask), alpha_bar


class NoisingStrip(Node):
    type = "NoisingStrip"
    display_name = "Forward Noising Strip"
    category = "explain"
    description = (
        "One picture noised to evenly spaced levels of the model's training schedule (one "
        "jump each, the same noise): top row decoded by the VAE, bottom row the latent "
        "itself (its channels as colours), with the signal share alpha-bar of each column "
        "and the schedule's alpha-bar curve with those steps marked."
    )

    model = Socket(MODEL, tooltip="whose noise schedule")
    vae = Socket(VAE, tooltip="to encode the picture and decode each x_t")
    image = Socket(IMAGE, tooltip="the clean picture (the first of a batch is used)")
    noise = Socket(NOISE, tooltip="the seeded noise added at every level")
    columns = Int(8, min=2, max=16, tooltip="how many levels, from clean (t = 0) to the last train step")
    outputs = (Output("strip", IMAGE), Output("latents", LATENT, tooltip="the x_t of every column, as a batch"))

    def run(self, ctx: RunContext, model: DiffusionModel, vae: Autoencoder, image: Any, noise: NoiseSource,
            columns: int) -> tuple:
        import numpy as np
        import torch

        from nodes.diffusion.explain import draw
        from nodes.diffusion.explain.schedule_math import alpha_bar as closed_alpha_bar, level_to_timestep
        from nodes.diffusion.impl.preview import latent_preview, latent_rgb_map
        from nodes.diffusion.impl.vae import decode, encode

        if image.ndim != 4 or image.shape[0] < 1:
            raise NodeError("expected an IMAGE batch [B, H, W, 3]", field="image")
        with torch.inference_mode():
            clean = encode(vae, image[:1])
            steps = [level_to_timestep(i / (columns - 1), model.scheduler_config) for i in range(columns)]
            noisy, shares = [], []
            for t in steps:
                x_t, share = noised(model, clean, noise.seed, t)
                noisy.append(x_t)
                shares.append(share)
            batch = torch.cat(noisy)
            pictures = decode(vae, batch).float().cpu().numpy()
        rgb_map = vae.latent_rgb if vae.latent_rgb is not None else latent_rgb_map(vae.family, batch.shape[1])
        latents = [draw.to_float(latent_preview(x, rgb_map)) for x in noisy]
        labels = [f"t={t} a={a:.2f}" for t, a in zip(steps, shares)]
        strip = draw.grid([list(pictures), latents], ["decoded", "latent"], labels,
                          cell=max(64, min(128, pictures.shape[1])), title="Forward noising: x_t = sqrt(a) x0 + sqrt(1-a) noise")
        a = closed_alpha_bar(model.scheduler_config)
        curve = draw.line_panel(draw.Panel("alpha-bar of the model's schedule, columns marked", [
            draw.Line("alpha-bar", list(range(len(a))), list(a)),
            draw.Line("columns", steps, [float(a[t]) for t in steps], joined=False),
        ], x_label="train timestep t", y_label="alpha-bar"), width=max(420, strip.shape[1]), height=200)
        return draw.as_image(draw.stacked([strip, curve])), Latent(batch, model.family)
