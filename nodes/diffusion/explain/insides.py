"""Inside the sampler: what each step sees and does, as strips and a plot.

The Sampler's own ``preview`` field shows one of these views live; this node records
all of them for a whole run (through the sampler's step trace, so it runs exactly the
Sampler's loop) and draws them: per shown step the noisy latent x_t, the predicted
noise, the estimate of the clean image x0, the predictions with and without the prompt,
their difference (what classifier-free guidance amplifies) and the noise the sampler
added back; and per step the noise level, the size of the guidance difference and of
the added noise, which tells DDPM (noise added back every step) from DDIM (none).
"""

from __future__ import annotations

from typing import Any

from nodeflow import Choice, Float, Int, Node, NodeError, Output, RunContext, Socket

from nodes.diffusion.impl.samplers import SAMPLERS, SCHEDULES, eta_unsupported_reason, unsupported_reason
from nodes.diffusion.types import GUIDER, IMAGE, LATENT, NOISE, VAE, Autoencoder, Latent, NoiseSource

ROWS = (("latent", "x_t (latent)"), ("noise", "predicted noise"), ("x0", "x0 estimate"), ("x0_decoded", "x0 decoded"),
        ("uncond", "uncond"), ("cond", "cond"), ("cfg_difference", "cond - uncond"), ("added_noise", "noise added"))


def shown_steps(total: int, count: int) -> list[int]:
    """``count`` evenly spaced step indices of ``total``, first and last included."""
    if total <= count:
        return list(range(total))
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


class SamplerInsides(Node):
    type = "SamplerInsides"
    display_name = "Sampler Insides"
    category = "explain"
    description = (
        "Runs a Sampler (the same loop, the same result) and shows what happens inside it, "
        "for the first image: per shown step the noisy latent x_t, the predicted noise, the "
        "x0 estimate (also decoded when a VAE is connected), the predictions without (uncond) "
        "and with the prompt (cond), their difference (what CFG multiplies by its scale) and "
        "the noise the sampler added back; and per step the noise level sigma, the size of "
        "the CFG difference and of the added noise (large for DDPM, zero for DDIM eta 0). "
        "Noise-like rows are scaled to unit spread."
    )
    preview_label = "estimate of the final image (predicted x0)"

    noise = Socket(NOISE)
    guider = Socket(GUIDER)
    latent = Socket(LATENT)
    vae = Socket(VAE, optional=True, tooltip="decodes the x0 row with the real VAE (else only the cheap colour map)")
    sampler = Choice(tuple(SAMPLERS), default="ddim", tooltip="the solver")
    schedule = Choice(tuple(SCHEDULES), default="normal", tooltip="how noise levels are spaced over the steps")
    steps = Int(20, min=1, max=200, tooltip="number of steps")
    eta = Float(0.0, min=0.0, max=1.0, step=0.01, tooltip="ddim only: 0 deterministic, 1 DDPM-like")
    columns = Int(8, min=2, max=20, tooltip="how many of the steps the strips show (evenly spaced, last included)")
    outputs = (Output("latent", LATENT, tooltip="the sampled latent, as the Sampler gives it"),
               Output("strips", IMAGE, tooltip="one row per view, one column per shown step"),
               Output("plot", IMAGE, tooltip="per step: sigma, the CFG difference and the noise added back"))

    @classmethod
    def check_values(cls, values: dict[str, Any]) -> dict[str, str]:
        problems = {}
        if "sampler" in values and "schedule" in values and (reason := unsupported_reason(values["sampler"], values["schedule"])):
            problems["schedule"] = reason
        if "sampler" in values and (reason := eta_unsupported_reason(values["sampler"], values.get("eta", 0.0))):
            problems["eta"] = reason
        return problems

    def run(self, ctx: RunContext, noise: NoiseSource, guider: Any, latent: Latent, vae: Autoencoder | None,
            sampler: str, schedule: str, steps: int, eta: float, columns: int) -> tuple:
        import numpy as np
        import torch

        from nodes.diffusion.explain import draw
        from nodes.diffusion.impl.guidance import GuidanceError
        from nodes.diffusion.impl.preview import latent_preview, latent_rgb_map
        from nodes.diffusion.impl.sample import SamplingError, StepView, sample

        views: list[StepView] = []
        try:
            samples = sample(ctx, noise, guider, latent, sampler, schedule, steps, 1.0, eta, trace=views.append)
        except SamplingError as exc:
            raise NodeError(str(exc), field=exc.field) from None
        except GuidanceError as exc:
            raise NodeError(str(exc), field="guider") from None
        model = guider.model
        rgb_map = model.latent_rgb if model.latent_rgb is not None else latent_rgb_map(model.family, samples.shape[1])

        def picture(tensor: "torch.Tensor | None", spread: bool) -> np.ndarray:
            if tensor is None:
                return np.full((8, 8, 3), 0.85, dtype=np.float32)
            if spread:
                tensor = tensor / tensor.std().clamp(min=1e-6) * 0.5
            return draw.to_float(latent_preview(tensor, rgb_map))

        shown = [views[i] for i in shown_steps(len(views), columns)]
        decoded = None
        if vae is not None:
            from nodes.diffusion.impl.vae import decode

            with torch.inference_mode():
                decoded = decode(vae, torch.cat([v.x0 for v in shown]).to(vae.vae.device, vae.vae.dtype)).float().cpu().numpy()
        rows, labels = [], []
        for key, label in ROWS:
            if key == "x0_decoded":
                if decoded is None:
                    continue
                row = list(decoded)
            elif key == "latent":
                row = [picture(v.latent / (1 + v.sigma ** 2) ** 0.5, False) for v in shown]
            elif key == "x0":
                row = [picture(v.x0, False) for v in shown]
            elif key == "cfg_difference":
                row = [picture(None if v.uncond is None else v.cond - v.uncond, True) for v in shown]
            else:
                row = [picture(getattr(v, key), True) for v in shown]
            rows.append(row)
            labels.append(label)
        heads = [f"step {v.index + 1} s={v.sigma:.2g}" for v in shown]
        strips = draw.grid(rows, labels, heads, cell=64, title=f"Inside {sampler} ({schedule}, {steps} steps)")

        index = [v.index + 1 for v in views]

        def rms(tensor: "torch.Tensor | None") -> float:
            return 0.0 if tensor is None else float(tensor.pow(2).mean().sqrt())

        latent_size = [rms(v.latent) for v in views]
        plot = draw.side_by_side([
            draw.line_panel(draw.Panel("Noise level per step", [draw.Line("sigma", index, [v.sigma for v in views], marks=True)],
                                       "step", "sigma", log_y=True), width=300, height=240),
            draw.line_panel(draw.Panel("What each step does (RMS, relative to x_t)", [
                draw.Line("noise added back", index, [rms(v.added_noise) / max(s, 1e-12) for v, s in zip(views, latent_size)], marks=True),
                draw.Line("cond - uncond", index, [rms(None if v.uncond is None else v.cond - v.uncond) / max(rms(v.prediction), 1e-12)
                                                   for v in views], marks=True),
            ], "step", "relative size"), width=380, height=240),
        ])
        return Latent(samples, model.family, latent.noise_mask), draw.as_image(strips), draw.as_image(plot)
