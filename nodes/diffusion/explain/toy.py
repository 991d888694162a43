"""The score field, in two dimensions: a toy diffusion model small enough to train in
seconds on a CPU, with the same words as the image model's nodes.

Points of a spiral (or two moons) are the data. Training noises them to a random step t
of its schedule (linear betas, 100 steps) in one jump and teaches a small MLP to predict the noise (epsilon
prediction, as Stable Diffusion). The predicted noise, scaled, is the score: the
direction towards more likely, less noisy data, -eps / sqrt(1 - alpha-bar). Drawn over a
grid at a few noise levels it shows the field the sampler follows; DDPM and DDIM walk it
from pure noise to the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nodeflow import FLOAT, Choice, DataType, Int, Node, NodeError, Output, RunContext, Socket, String

from nodes.diffusion.types import IMAGE

TRAIN_STEPS_T = 100  # diffusion steps of the toy schedule
# Linear betas (as DDPM), steeper than an image model's because there are only 100 steps.
TOY_SCHEDULE = {"num_train_timesteps": TRAIN_STEPS_T, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.1}
DATA_SCALE = 3.0  # the data spread about as wide as the final noise (unit variance): learnt in seconds
EXTENT = 4.8  # the drawn square is [-EXTENT, EXTENT]^2
DATASETS = ("spiral", "two_moons")


@dataclass(frozen=True, eq=False)
class ToyDiffusionModel:
    """A trained 2-D denoiser: ``net`` (torch MLP, eps prediction), its schedule ``alpha_bar``
    [T] (torch), the data set it learnt (``data`` [N, 2]) and its noise-free curve
    (``curve`` [M, 2], to measure how close samples land), the training ``losses``."""

    net: Any
    alpha_bar: Any
    data: Any
    curve: Any
    dataset: str
    losses: tuple[float, ...]


TOY_DIFFUSION = DataType("TOY_DIFFUSION", (150, 110, 60), "A tiny trained 2-D diffusion model (the toy score field)",
                         ToyDiffusionModel)


def dataset_points(name: str, count: int, generator: Any, jitter: float = 0.1) -> Any:
    """``count`` points of the data set; ``jitter`` 0 gives the noise-free curve, evenly."""
    import torch

    if jitter:
        u = torch.rand(count, generator=generator)
    else:
        u = torch.linspace(0, 1, count)
    if name == "spiral":
        theta = (0.6 + 2.6 * u) * math.pi
        r = theta / (3.2 * math.pi) * 1.3
        points = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)
    else:
        half = u < 0.5
        angle = torch.where(half, u * 2, (u - 0.5) * 2) * math.pi
        upper = torch.stack([torch.cos(angle) - 0.5, torch.sin(angle) - 0.25], dim=1)
        lower = torch.stack([0.5 - torch.cos(angle), 0.25 - torch.sin(angle)], dim=1)
        points = torch.where(half[:, None], upper, lower) * 0.9
    points = points * DATA_SCALE
    if jitter:
        points = points + jitter * torch.randn(points.shape, generator=generator)
    return points


def _net(seed: int) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Linear(2 + 16, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128), torch.nn.SiLU(),
            torch.nn.Linear(128, 128), torch.nn.SiLU(), torch.nn.Linear(128, 2),
        )


def _features(x: Any, t: Any) -> Any:
    """The point and 16 sinusoidal features of its step (the time embedding)."""
    import torch

    frequencies = 2.0 ** torch.arange(8, dtype=torch.float32)
    phase = (t.float()[:, None] / TRAIN_STEPS_T) * frequencies[None] * math.pi
    return torch.cat([x, torch.sin(phase), torch.cos(phase)], dim=1)


def predict_noise(model: ToyDiffusionModel, x: Any, t: Any) -> Any:
    import torch

    if not torch.is_tensor(t) or t.ndim == 0:
        t = torch.full((x.shape[0],), int(t))
    return model.net(_features(x, t))


def train(dataset: str, steps: int, seed: int) -> ToyDiffusionModel:
    import torch

    from nodes.diffusion.explain.schedule_math import alpha_bar

    generator = torch.Generator("cpu").manual_seed(seed)
    data = dataset_points(dataset, 4000, generator)
    curve = dataset_points(dataset, 2000, generator, jitter=0.0)
    a = torch.tensor(alpha_bar(TOY_SCHEDULE), dtype=torch.float32)
    net = _net(seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=1e-2, total_steps=steps)
    losses = []
    with torch.enable_grad():
        for _ in range(steps):
            batch = data[torch.randint(0, len(data), (256,), generator=generator)]
            t = torch.randint(0, TRAIN_STEPS_T, (256,), generator=generator)
            eps = torch.randn(batch.shape, generator=generator)
            share = a[t][:, None]
            x_t = share.sqrt() * batch + (1 - share).sqrt() * eps  # the forward jump to step t
            loss = torch.nn.functional.mse_loss(net(_features(x_t, t)), eps)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
    net.eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return ToyDiffusionModel(net, a, data, curve, dataset, tuple(losses))


def sample(model: ToyDiffusionModel, sampler: str, steps: int, count: int, seed: int) -> Any:
    """Trajectories [steps + 1, count, 2] from pure noise to data. ``ddpm`` walks every
    train step, drawing fresh noise at each (``steps`` is ignored); ``ddim`` (eta 0) takes
    ``steps`` evenly spaced steps, deterministically."""
    import torch

    generator = torch.Generator("cpu").manual_seed(seed)
    a = model.alpha_bar
    x = torch.randn((count, 2), generator=generator)
    path = [x]
    with torch.inference_mode():
        if sampler == "ddpm":
            for t in range(TRAIN_STEPS_T - 1, -1, -1):
                a_t, a_prev = a[t], (a[t - 1] if t > 0 else torch.tensor(1.0))
                beta = 1 - a_t / a_prev
                eps = predict_noise(model, x, t)
                mean = (x - beta / (1 - a_t).sqrt() * eps) / (1 - beta).sqrt()
                if t > 0:
                    variance = beta * (1 - a_prev) / (1 - a_t)
                    x = mean + variance.sqrt() * torch.randn(x.shape, generator=generator)
                else:
                    x = mean
                path.append(x)
        else:
            times = torch.linspace(TRAIN_STEPS_T - 1, 0, steps).round().long().tolist()
            for i, t in enumerate(times):
                a_t = a[t]
                a_prev = a[times[i + 1]] if i + 1 < len(times) else torch.tensor(1.0)
                eps = predict_noise(model, x, t)
                x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-2 * EXTENT, 2 * EXTENT)  # as clip_sample
                x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
                path.append(x)
    return torch.stack(path)


def distance_to_data(model: ToyDiffusionModel, points: Any) -> float:
    """Mean distance from each point to the data's noise-free curve."""
    import torch

    return float(torch.cdist(points.float(), model.curve).min(dim=1).values.mean())


class ToyDiffusion(Node):
    type = "ToyDiffusion"
    display_name = "Toy Diffusion (2-D)"
    category = "explain"
    description = (
        "Trains a tiny diffusion model on 2-D points (a spiral or two moons) on the CPU in "
        "seconds: noise the points to a random step in one jump, teach a small MLP to "
        "predict that noise. Seeded and deterministic. Shows the data and the training loss."
    )

    dataset = Choice(DATASETS, default="spiral", tooltip="the data the model learns")
    train_steps = Int(2000, min=50, max=20000, tooltip="optimiser steps (256 points each)")
    seed = Int(0, min=0, max=2 ** 31 - 1, tooltip="data, initial weights and training draws")
    outputs = (Output("toy", TOY_DIFFUSION), Output("picture", IMAGE, tooltip="the data and the training loss"))

    def run(self, ctx: RunContext, dataset: str, train_steps: int, seed: int) -> tuple:
        import numpy as np

        from nodes.diffusion.explain import draw

        model = train(dataset, train_steps, seed)
        data = draw.vector_field(np.zeros((0, 2)), np.zeros((0, 2)), model.data.numpy(), EXTENT,
                                 title=f"the data: {dataset}", size=260)
        losses = np.asarray(model.losses)
        window = max(1, len(losses) // 50)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        loss = draw.line_panel(draw.Panel("training loss (noise MSE)", [draw.Line("loss", list(range(len(smooth))), smooth.tolist())],
                                          "optimiser step", "MSE"), width=340, height=260)
        return model, draw.as_image(draw.side_by_side([data, loss]))


class ToyScoreField(Node):
    type = "ToyScoreField"
    display_name = "Toy Score Field"
    category = "explain"
    description = (
        "The toy model's learned score field, -predicted noise / sqrt(1 - alpha-bar), drawn "
        "as arrows at chosen noise levels (fractions of its schedule): near 0 the arrows "
        "point onto the data, near 1 towards its middle. Beside them, sample trajectories "
        "from pure noise to data with DDPM (every step, fresh noise each step) and DDIM "
        "(eta 0, deterministic, fewer steps). `distance` is the DDIM samples' mean distance "
        "to the data curve."
    )

    toy = Socket(TOY_DIFFUSION)
    levels = String("0.05, 0.3, 0.7", tooltip="noise levels to draw the field at, fractions of the schedule, comma separated")
    ddim_steps = Int(20, min=1, max=100, tooltip="DDIM's steps (DDPM takes all 100)")
    count = Int(300, min=1, max=5000, tooltip="how many samples")
    seed = Int(0, min=0, max=2 ** 31 - 1, tooltip="the starting noise (and DDPM's draws)")
    outputs = (Output("field", IMAGE), Output("samples", IMAGE, tooltip="DDPM and DDIM trajectories"),
               Output("distance", FLOAT, tooltip="DDIM samples' mean distance to the data curve"))

    def run(self, ctx: RunContext, toy: ToyDiffusionModel, levels: str, ddim_steps: int, count: int, seed: int) -> tuple:
        import numpy as np
        import torch

        from nodes.diffusion.explain import draw

        try:
            fractions = [float(part) for part in levels.replace(";", ",").split(",") if part.strip()]
        except ValueError:
            raise NodeError(f"expected numbers between 0 and 1 separated by commas, got {levels!r}", field="levels") from None
        if not fractions or any(not 0.0 <= f <= 1.0 for f in fractions):
            raise NodeError(f"expected numbers between 0 and 1 separated by commas, got {levels!r}", field="levels")
        axis = torch.linspace(-EXTENT * 0.95, EXTENT * 0.95, 21)
        grid_points = torch.cartesian_prod(axis, axis)
        panels = []
        with torch.inference_mode():
            for fraction in fractions:
                t = int(round(fraction * (TRAIN_STEPS_T - 1)))
                eps = predict_noise(toy, grid_points, t)
                score = -eps / (1 - toy.alpha_bar[t]).sqrt()
                panels.append(draw.vector_field(grid_points.numpy(), score.numpy(), toy.data[::4].numpy(), EXTENT,
                                                title=f"score at level {fraction:g} (t={t})", size=260))
        walks = []
        for sampler, colour in (("ddpm", (213, 94, 0)), ("ddim", (0, 158, 115))):
            path = sample(toy, sampler, ddim_steps, count, seed)
            shown = [path[:, i].numpy() for i in range(min(count, 24 if sampler == "ddim" else 8))]
            ends = path[-1].numpy()
            picture = draw.vector_field(ends, np.zeros_like(ends), toy.data[::4].numpy(), EXTENT, paths=shown,
                                        title=f"{sampler}: {len(path) - 1} steps, {distance_to_data(toy, path[-1]):.3f} from data",
                                        size=260, path_colour=colour)
            walks.append(picture)
            if sampler == "ddim":
                distance = distance_to_data(toy, path[-1])
        return draw.as_image(draw.side_by_side(panels)), draw.as_image(draw.side_by_side(walks)), distance
