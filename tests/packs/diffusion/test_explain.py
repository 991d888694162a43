"""The explain nodes show true numbers, on the bundled "shapes" model: forward noising is
the schedule's closed form, the CFG difference times the scale plus the unconditional
prediction is the guided one, DDIM with eta 0 adds no noise back and DDPM does, the
schedule plot is the model's own schedule, CLIP's map separates the colours, the toy
model's samples land on its spiral; and every shipped explain workflow runs to pictures
that show what its note says."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow import NodeError, RunContext, RunSettings  # noqa: E402
from nodes.bundled import MODEL_DIR  # noqa: E402
from nodes.diffusion.explain.clip_space import CLIPSpace, pca_2d, text_embeddings  # noqa: E402
from nodes.diffusion.explain.insides import SamplerInsides  # noqa: E402
from nodes.diffusion.explain.noising import ForwardNoise, NoisingStrip  # noqa: E402
from nodes.diffusion.explain.schedules import ScheduleCompare  # noqa: E402
from nodes.diffusion.explain import toy  # noqa: E402
from nodes.diffusion.impl.guidance import Guider  # noqa: E402
from nodes.diffusion.impl.sample import sample as run_sampler  # noqa: E402
from nodes.diffusion.impl.samplers import schedule_sigmas  # noqa: E402
from nodes.diffusion.latent import EmptyLatent  # noqa: E402
from nodes.diffusion.loaders import Checkpoint  # noqa: E402
from nodes.diffusion.sampling import CFG, Noise, Sampler  # noqa: E402
from nodes.diffusion.text import TextEncoder  # noqa: E402
from nodes.diffusion.types import Latent, NoiseSource  # noqa: E402
from tests.support import WORKFLOWS, host_context  # noqa: E402

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")


@pytest.fixture(scope="module")
def shapes():
    loaded = Checkpoint().run(host_context(), checkpoint="shapes", dtype="auto", prediction="auto")
    encode = TextEncoder()
    loaded["positive"] = encode.run(RunContext(), clip=loaded["clip"], text="a red circle on a blue background", clip_skip=1)
    loaded["negative"] = encode.run(RunContext(), clip=loaded["clip"], text="red", clip_skip=1)
    loaded["latent"] = EmptyLatent().run(RunContext(), width=32, height=32, batch=1, vae=loaded["vae"])
    return loaded


def guider(shapes, scale=5.0):
    return CFG().run(RunContext(), model=shapes["model"], positive=shapes["positive"], negative=shapes["negative"],
                     scale=scale, rescale=0.0)


def test_forward_noise_jumps_to_the_schedules_closed_form(shapes):
    config = json.loads((MODEL_DIR / "scheduler" / "scheduler_config.json").read_text())
    assert config["beta_schedule"] == "scaled_linear"
    betas = np.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, config["num_train_timesteps"]) ** 2
    alpha_bar = np.cumprod(1 - betas)
    x0 = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(5))
    eps = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(11))
    for level in (0.0, 0.3, 0.8, 1.0):
        noisy, share = ForwardNoise().run(RunContext(), model=shapes["model"], latent=Latent(x0), noise=NoiseSource(11),
                                          level=level)
        t = round(level * (config["num_train_timesteps"] - 1))
        expected = np.sqrt(alpha_bar[t]) * x0 + np.sqrt(1 - alpha_bar[t]) * eps
        assert share == pytest.approx(alpha_bar[t], rel=1e-5)
        torch.testing.assert_close(noisy.samples, expected.float(), atol=1e-5, rtol=1e-5)
    # The last train step leaves almost nothing of the picture.
    assert alpha_bar[-1] < 0.01


def test_noising_strip_loses_the_picture_column_by_column(shapes):
    image = shapes["vae"]
    picture = torch.zeros((1, 32, 32, 3))
    picture[..., 2] = 1.0  # blue
    picture[:, 8:24, 8:24, 0], picture[:, 8:24, 8:24, 2] = 1.0, 0.0  # a red square
    strip, latents = NoisingStrip().run(RunContext(), model=shapes["model"], vae=image, image=picture,
                                        noise=NoiseSource(3), columns=6)
    clean = latents.samples[0].flatten()
    similarity = [float(torch.nn.functional.cosine_similarity(clean, x.flatten(), dim=0)) for x in latents.samples]
    assert similarity[0] == pytest.approx(1.0, abs=1e-5)
    assert all(a > b for a, b in zip(similarity, similarity[1:])), similarity
    assert similarity[-1] < 0.2
    pixels = strip[0].numpy()
    assert pixels.shape[1] > 6 * 64 and pixels.std() > 0.1


def test_cfg_difference_times_scale_plus_uncond_is_the_guided_prediction(shapes):
    views = []
    run_sampler(RunContext(), NoiseSource(1), guider(shapes, 5.0), shapes["latent"], "dpmpp_2m", "normal", 8, 1.0, 0.0,
                trace=views.append)
    assert len(views) == 8
    for view in views:
        difference = view.cond - view.uncond
        torch.testing.assert_close(view.uncond + 5.0 * difference, view.prediction, atol=1e-5, rtol=1e-5)
        assert float(difference.abs().mean()) > 1e-3  # the negative prompt "red" really differs
        # The x0 estimate and the predicted noise rebuild the latent: x_t = x0 + sigma * noise.
        torch.testing.assert_close(view.x0 + view.sigma * view.noise, view.latent, atol=1e-4, rtol=1e-4)
    # Without a negative pass there is no uncond to show.
    single = []
    plain = Guider(shapes["model"], shapes["positive"])
    run_sampler(RunContext(), NoiseSource(1), plain, shapes["latent"], "euler", "normal", 3, 1.0, 0.0, trace=single.append)
    assert all(v.uncond is None and torch.equal(v.cond, v.prediction) for v in single)


def test_ddim_eta_0_adds_no_noise_back_and_ddpm_does(shapes):
    def added(sampler, eta=0.0):
        views = []
        run_sampler(RunContext(), NoiseSource(4), guider(shapes), shapes["latent"], sampler, "normal", 10, 1.0, eta,
                    trace=views.append)
        return [float(v.added_noise.pow(2).mean().sqrt() / v.latent.pow(2).mean().sqrt()) for v in views[:-1]]

    assert max(added("ddim")) < 1e-4
    assert max(added("euler")) < 1e-4
    assert min(added("ddpm")) > 0.02
    assert min(added("ddim", eta=1.0)) > 0.02
    # Deterministic means the result depends on the starting noise only: DDIM gives the same
    # image from two generators that agree on the start and differ after it; DDPM does not.
    start = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(9))

    def finish(sampler, seed):
        latent = Latent(start.clone())  # taken as already noisy (No Noise), so the run's generator is free
        from nodes.diffusion.impl.samplers import make_scheduler

        scheduler = make_scheduler(sampler, "normal", shapes["model"].scheduler_config)
        scheduler.set_timesteps(10)
        predict = guider(shapes).bind(latent.samples)
        x = latent.samples * scheduler.init_noise_sigma
        generator = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            for t in scheduler.timesteps:
                kwargs = {"generator": generator} if sampler == "ddpm" else {"eta": 0.0}
                x = scheduler.step(predict(scheduler.scale_model_input(x, t), t), t, x, **kwargs).prev_sample
        return x

    torch.testing.assert_close(finish("ddim", 1), finish("ddim", 2))
    assert float((finish("ddpm", 1) - finish("ddpm", 2)).abs().mean()) > 0.05


def test_sampler_insides_runs_the_samplers_loop_and_draws_every_view(shapes):
    noise = Noise().run(RunContext(), seed=8)
    common = dict(noise=noise, guider=guider(shapes), latent=shapes["latent"], sampler="dpmpp_2m", schedule="normal",
                  steps=12, eta=0.0)
    plain = Sampler().run(RunContext(), denoise=1.0, **common).samples
    watched = Sampler().run(RunContext(), denoise=1.0, preview="cfg_difference", **common).samples
    latent, strips, plot = SamplerInsides().run(RunContext(), vae=shapes["vae"], columns=6, **common)
    torch.testing.assert_close(latent.samples, plain)
    torch.testing.assert_close(watched, plain)  # what the preview shows never changes the result
    rows = strips[0].numpy()
    assert rows.shape[0] > 8 * 64 and rows.shape[1] > 6 * 64  # 8 views (x0 decoded too), 6 steps
    assert rows.std() > 0.1 and plot[0].numpy().std() > 0.05


def test_sampler_previews_the_chosen_view_and_computes_none_when_nobody_looks(shapes):
    pictures: dict[str, list] = {}
    for kind in ("x0", "cfg_difference", "noise"):
        got = pictures.setdefault(kind, [])
        ctx = RunContext(on_progress=lambda i, n, preview, got=got: got.append(np.asarray(preview, dtype=np.float32)))
        Sampler().run(ctx, noise=NoiseSource(2), guider=guider(shapes), latent=shapes["latent"], sampler="euler",
                      schedule="normal", steps=4, denoise=1.0, eta=0.0, preview=kind)
    assert all(len(v) == 4 for v in pictures.values())
    assert "CFG" in Sampler.preview_title({"preview": "cfg_difference"})  # how the editor titles the live view
    assert Sampler.preview_title({"preview": "x0"}) == Sampler.preview_label
    assert np.abs(pictures["x0"][-1] - pictures["cfg_difference"][-1]).mean() > 10
    assert np.abs(pictures["noise"][-1] - pictures["cfg_difference"][-1]).mean() > 10

    class Watching:  # the real guider, noting whether the sampler asked for the unmixed predictions
        def __init__(self, inner):
            self.inner, self.model, self.positive, self.taps = inner, inner.model, inner.positive, []

        def bind(self, latent, tap=None, seed=None, timesteps=None, sigma_of=None):
            self.taps.append(tap)
            return self.inner.bind(latent, tap, seed, timesteps, sigma_of)

    watching = Watching(guider(shapes))
    nobody = RunContext(settings=RunSettings(previews=False), on_progress=lambda *a: None)
    run_sampler(nobody, NoiseSource(2), watching, shapes["latent"], "euler", "normal", 2, 1.0, 0.0,
                preview_kind="cfg_difference")
    assert watching.taps == [None]


def test_schedule_plot_is_the_models_own_schedule_and_marks_the_visited_steps(shapes):
    upstream = {"scheduler_config": shapes["model"].scheduler_config}
    insight = ScheduleCompare.insight({"sampler": "euler", "steps": 10, "axis": "alpha_bar"}, upstream)
    training, visited = insight["plots"]
    own = training["series"][0]
    config = shapes["model"].scheduler_config
    betas = np.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, config["num_train_timesteps"]) ** 2
    np.testing.assert_allclose(own["y"], np.cumprod(1 - betas)[own["x"]], rtol=1e-9)
    linear = next(s for s in training["series"] if s["label"].startswith("linear"))
    assert abs(linear["y"][-1] - own["y"][-1]) > 1e-3  # another schedule, another curve
    by_name = {s["label"]: s for s in visited["series"]}
    assert {"normal", "karras", "exponential"} <= set(by_name)
    expected = schedule_sigmas("euler", "karras", 10, config)["alpha_bar"]
    np.testing.assert_allclose(by_name["karras"]["y"], expected, rtol=1e-9)
    assert len(by_name["normal"]["x"]) == 10
    plot = ScheduleCompare().run(RunContext(), model=shapes["model"], sampler="euler", steps=10, axis="sigma")[0].numpy()
    blue = np.all(np.abs(plot * 255 - np.array([0, 114, 178])) < 30, axis=-1)
    assert blue.sum() > 200  # the model's own (first) line is drawn


def test_pca_of_clip_embeddings_separates_the_bundled_models_colours(shapes):
    prompts = [form.format(colour) for colour in COLOURS for form in ("{}", "a {} shape")]
    labels = np.repeat(np.arange(len(COLOURS)), 2)
    points, _, _ = pca_2d(text_embeddings(shapes["clip"], prompts).numpy())
    centres = np.stack([points[labels == i].mean(axis=0) for i in range(len(COLOURS))])
    nearest = np.argmin(((points[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).all()
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    same = (labels[:, None] == labels[None]) & ~np.eye(len(labels), dtype=bool)
    assert distances[same].mean() < 0.2 * distances[labels[:, None] != labels[None]].mean()

    map_image, matrix, found = CLIPSpace().run(RunContext(), clip=shapes["clip"], images=None, prompts="\n".join(prompts),
                                               base="a red shape", a="green", b="red")
    assert found in ("green", "a green shape")
    pixels = map_image[0].numpy() * 255
    for rgb in ((220, 40, 40), (40, 160, 60), (40, 80, 220)):  # red, green, blue dots on the map
        assert np.all(np.abs(pixels - np.array(rgb)) < 12, axis=-1).sum() > 20, rgb
    assert matrix[0].numpy().std() > 0.1


def test_clip_space_places_pictures_beside_their_colour(shapes):
    pictures = torch.zeros((2, 32, 32, 3))
    pictures[0, ..., 0] = 0.9  # a red picture
    pictures[1, ..., 1] = 0.7  # a green one
    map_image, _, _ = CLIPSpace().run(RunContext(), clip=shapes["clip"], images=pictures, prompts="red\ngreen",
                                      base="", a="", b="")
    assert map_image[0].numpy().std() > 0.05


def test_toy_diffusion_learns_its_spiral_in_seconds_and_samples_land_on_it():
    model = toy.train("spiral", 2000, seed=0)
    for sampler in ("ddpm", "ddim"):
        path = toy.sample(model, sampler, 20, 400, seed=1)
        assert path.shape[0] == (101 if sampler == "ddpm" else 21)
        assert toy.distance_to_data(model, path[-1]) < 0.2, sampler  # measured 0.09 / 0.08
    assert toy.distance_to_data(model, torch.randn((400, 2), generator=torch.Generator().manual_seed(1)) * 2) > 0.6
    # At a low noise level the score points from near the spiral onto it.
    near = model.curve[::50] + 0.4 * torch.randn((40, 2), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        score = -toy.predict_noise(model, near, 3)
    closest = model.curve[torch.cdist(near, model.curve).argmin(dim=1)]
    towards = torch.nn.functional.cosine_similarity(score, closest - near, dim=1)
    assert (towards > 0).float().mean() > 0.85
    field, walks, distance = toy.ToyScoreField().run(RunContext(), toy=model, levels="0.05, 0.7", ddim_steps=20,
                                                     count=200, seed=0)
    assert distance < 0.2 and field[0].shape[1] > 2 * 250 and walks[0].numpy().std() > 0.05


def test_toy_training_is_deterministic_for_a_seed():
    a, b, c = toy.train("two_moons", 60, seed=3), toy.train("two_moons", 60, seed=3), toy.train("two_moons", 60, seed=4)
    assert a.losses == b.losses and a.losses != c.losses
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))


def test_a_note_never_runs_and_costs_nothing():
    from nodeflow.engine.plan import build_plan
    from nodeflow.model.graph import Graph
    from nodeflow.model.registry import default_registry

    graph = Graph(default_registry())
    graph.add_node("Note", {"text": "what to look at"})
    toy_node = graph.add_node("ToyDiffusion", {"train_steps": 50})
    show = graph.add_node("PreviewImage")
    graph.connect(toy_node.id, "picture", show.id, "images")
    plan = build_plan(graph)
    assert {step.node_id for step in plan.steps} == {toy_node.id, show.id}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["forward-noising", "sampler-insides", "samplers-compared", "schedules", "clip-space",
                                  "score-field"])
def test_shipped_explain_workflow_runs_to_the_pictures_its_note_describes(name, tmp_path):
    from benchmarks.explain_pictures import IDEAS, previews_of, run_workflow

    path = WORKFLOWS / "explain" / f"{name}.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(IDEAS[name]())), "rerun the generator"
    flow, result = run_workflow(path, tmp_path)
    notes = [n for n in flow.graph.nodes.values() if n.type == "Note"]
    assert len(notes) == 1 and len(notes[0].values["text"]) > 200
    pictures = previews_of(result, flow)
    assert pictures
    for title, picture in pictures.items():
        assert picture.std() > 0.04, title  # drawn, not blank
    if name == "sampler-insides":
        final = pictures["the final image"]
        centre, corner = final[16, 16], final[2, 2]
        assert centre[0] > 0.5 > centre[2] and corner[2] > 0.5 > corner[0]  # a red circle on blue
    if name == "clip-space":
        base, moved = pictures["images from base"][16, 16], pictures["images from base + (a - b)"][16, 16]
        assert base[0] > base[1] + 0.3 and moved[1] > moved[0] + 0.3  # red, moved to green
    if name == "score-field":
        walks = pictures["samples: DDPM and DDIM"] * 255
        for rgb in ((213, 94, 0), (0, 158, 115)):  # the DDPM and the DDIM trajectories
            assert np.all(np.abs(walks - np.array(rgb)) < 10, axis=-1).sum() > 100, rgb
    if name == "forward-noising":
        strip = pictures["x_t across the schedule"]
        assert strip.shape[1] > 8 * 64


def test_the_views_work_on_another_model_a_v_prediction_sd2(tmp_path_factory):
    from tests.support.tiny_models import shared_tiny_sd2

    folder = shared_tiny_sd2(tmp_path_factory)
    ctx = RunContext(device="cpu", settings=RunSettings(model_folders={"checkpoints": [folder.parent]}))
    loaded = Checkpoint().run(ctx, checkpoint=folder.name, dtype="fp32", prediction="auto")
    model = loaded["model"]
    assert model.scheduler_config["prediction_type"] == "v_prediction"
    encode = TextEncoder()
    positive = encode.run(RunContext(), clip=loaded["clip"], text="a red circle", clip_skip=1)
    negative = encode.run(RunContext(), clip=loaded["clip"], text="a blue square", clip_skip=1)
    cfg = CFG().run(RunContext(), model=model, positive=positive, negative=negative, scale=4.0, rescale=0.0)
    latent = EmptyLatent().run(RunContext(), width=16, height=16, batch=1, vae=loaded["vae"])
    views = []
    result = run_sampler(RunContext(), NoiseSource(3), cfg, latent, "ddim", "normal", 4, 1.0, 0.0, trace=views.append)
    for view in views:
        torch.testing.assert_close(view.uncond + 4.0 * (view.cond - view.uncond), view.prediction, atol=1e-5, rtol=1e-5)
    assert max(float(v.added_noise.abs().max()) for v in views[:-1]) < 1e-4  # DDIM eta 0, whatever the prediction type
    inside, strips, _ = SamplerInsides().run(RunContext(), noise=NoiseSource(3), guider=cfg, latent=latent, vae=loaded["vae"],
                                             sampler="ddim", schedule="normal", steps=4, eta=0.0, columns=4)
    torch.testing.assert_close(inside.samples, result)
    assert strips[0].numpy().std() > 0.05
    plot = ScheduleCompare().run(RunContext(), model=model, sampler="euler", steps=8, axis="log_snr")[0]
    assert plot.numpy().std() > 0.05
    with pytest.raises(NodeError, match="vision tower"):  # SD's CLIP has no vision tower: said, not a traceback
        CLIPSpace().run(RunContext(), clip=loaded["clip"], images=torch.zeros((1, 16, 16, 3)), prompts="a\nb",
                        base="", a="", b="")


def test_choosing_another_preview_view_re_runs_nothing_and_saves_no_second_image(tmp_path):
    from nodeflow import api

    flow = api.open(Path(__file__).parents[3] / "workflows" / "default.json")
    first = flow.run(output_dir=tmp_path)
    assert "7" in first.executed and len(first.files) == 1
    flow.set("7", "preview", "cfg_difference")
    again = flow.run(output_dir=tmp_path)
    assert again.executed == () and again.files == ()
