"""Noise schedules compared: the model's own training schedule against the classic beta
schedules, and the noise levels each sampling schedule visits with the model's config."""

from __future__ import annotations

from typing import Any, Mapping

from nodeflow import Choice, Int, Node, Output, RunContext, Socket

from nodes.diffusion.impl.samplers import SAMPLERS, schedules_for
from nodes.diffusion.types import IMAGE, MODEL, DiffusionModel

AXES = ("sigma", "alpha_bar", "log_snr")
AXIS_LABELS = {"sigma": "sigma (noise / signal)", "alpha_bar": "alpha-bar (signal share)", "log_snr": "log10 SNR"}


def schedule_plots(config: Mapping[str, Any], sampler: str, steps: int, axis: str) -> list[dict[str, Any]]:
    """Two plots as insight data: the training schedules over the train timesteps (the
    model's own first), and each sampling schedule's steps with this config."""
    from nodes.diffusion.explain.schedule_math import CLASSIC, alpha_bar, measure
    from nodes.diffusion.impl.samplers import schedule_sigmas
    from nodes.diffusion.impl.sigmas import SigmaError

    import numpy as np

    train = int(config.get("num_train_timesteps", 1000))
    stride = max(1, train // 200)
    ts = list(range(0, train, stride))
    # The model's own line first and wide, so a classic schedule it equals shows inside it.
    series = [{"label": "this model's", "x": ts, "y": measure(alpha_bar(config), axis)[ts].tolist(), "width": 6}]
    for label, overrides in CLASSIC.items():
        classic = {"num_train_timesteps": train, **overrides}
        series.append({"label": label, "x": ts, "y": measure(alpha_bar(classic), axis)[ts].tolist()})
    visited = []
    for schedule in schedules_for(sampler):
        try:
            levels = schedule_sigmas(sampler, schedule, steps, config)
        except SigmaError:  # a list schedule this sampler cannot run at these steps (linear_quadratic): not drawn
            continue
        a = np.asarray(levels["alpha_bar"])
        visited.append({"label": schedule, "x": list(range(1, len(a) + 1)), "y": measure(a, axis).tolist(), "marks": True})
    return [
        {"title": "Training schedules (this model's first)", "x_label": "train timestep t",
         "y_label": AXIS_LABELS[axis], "series": series, "log_y": axis == "sigma"},
        {"title": f"Steps {sampler} visits ({steps} steps) per schedule", "x_label": "step",
         "y_label": AXIS_LABELS[axis], "series": visited, "log_y": axis == "sigma"},
    ]


class ScheduleCompare(Node):
    type = "ScheduleCompare"
    display_name = "Schedules Compared"
    category = "explain"
    description = (
        "How much noise each step holds. Left: the model's own training schedule (from its "
        "scheduler config) beside the linear, scaled-linear and cosine beta schedules, over "
        "the train timesteps. Right: the noise levels the sampler visits in `steps` steps "
        "with each schedule (normal, karras, exponential, simple, linear), one dot per step."
    )

    model = Socket(MODEL, tooltip="whose scheduler config")
    sampler = Choice(tuple(SAMPLERS), default="euler", tooltip="the sampler whose steps are marked")
    steps = Int(20, min=1, max=200, tooltip="number of sampling steps")
    axis = Choice(AXES, default="sigma", tooltip="sigma (log scale), alpha-bar or log10 signal-to-noise ratio")
    outputs = (Output("plot", IMAGE),)

    @classmethod
    def insight(cls, values: dict[str, Any], upstream: Mapping[str, Any]) -> dict[str, Any] | None:
        config = upstream.get("scheduler_config")
        if not isinstance(config, Mapping):
            return {"plots": [], "notes": ["connect a model folder (or run once) to compare its schedule"]}
        plots = schedule_plots(config, values["sampler"], values["steps"], values["axis"])
        for plot in plots:
            plot.pop("log_y", None)
        return {"plots": plots, "notes": ["the model's schedule from its scheduler_config.json"]}

    def run(self, ctx: RunContext, model: DiffusionModel, sampler: str, steps: int, axis: str) -> Any:
        from nodes.diffusion.explain import draw

        panels = []
        for plot in schedule_plots(model.scheduler_config, sampler, steps, axis):
            lines = [draw.Line(s["label"], s["x"], s["y"], marks=s.get("marks", False), width=s.get("width", 2))
                     for s in plot["series"]]
            panels.append(draw.line_panel(draw.Panel(plot["title"], lines, plot["x_label"], plot["y_label"],
                                                     log_y=plot["log_y"]), width=460, height=320))
        return draw.as_image(draw.side_by_side(panels))
