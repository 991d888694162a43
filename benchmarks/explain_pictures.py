"""The explain workflows and the pictures of docs/how-diffusion-works.md.

    python -m benchmarks.explain_pictures            # run every workflows/explain/*.json on
                                                    # the bundled model, write docs/explain/*.png
    python -m benchmarks.explain_pictures --write-workflows   # (re)write the workflows first

The workflows are built here (one function per idea: nodes, links, positions and the note
that says what to look at), so their layout is reviewable code; the docs' pictures are what
those shipped files produce when run, so the docs cannot drift from them. Prints the time
each workflow took.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows" / "explain"
PICTURES = ROOT / "docs" / "explain"
NOTE_COLUMN = 480  # the width of the notes' column, left of every workflow


class Builder:
    """A native workflow document, node by node."""

    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []
        self.links: list[dict[str, Any]] = []
        self.ui: dict[str, Any] = {}

    def add(self, type_name: str, pos: tuple[int, int], title: str = "", size: tuple[int, int] | None = None,
            **values: Any) -> str:
        node_id = str(len(self.nodes) + 1)
        if type_name != "Note":  # the note has the first column to itself
            pos = (pos[0] + NOTE_COLUMN, pos[1])
        self.nodes.append({"id": node_id, "type": type_name, "title": title, "mode": "normal", "values": values})
        self.ui[node_id] = {"pos": list(pos)}
        return node_id

    def link(self, source: str, output: str, target: str, input_name: str) -> None:
        self.links.append({"from": {"node": source, "output": output}, "to": {"node": target, "input": input_name}})

    def note(self, text: str) -> str:
        return self.add("Note", (40, 40), title="What to look at", text=text)

    def document(self) -> dict[str, Any]:
        return {"format": "nodeflow.workflow", "version": 1, "nodes": self.nodes, "links": self.links,
                "ui": {"nodes": self.ui}}


def _model_and_prompts(b: Builder, prompt: str, negative: str = "") -> tuple[str, str, str]:
    checkpoint = b.add("Checkpoint", (40, 300), checkpoint="shapes")
    positive = b.add("TextEncoder", (400, 40), title="Prompt", text=prompt)
    negative_id = b.add("TextEncoder", (400, 280), title="Negative prompt", text=negative)
    b.link(checkpoint, "clip", positive, "clip")
    b.link(checkpoint, "clip", negative_id, "clip")
    return checkpoint, positive, negative_id


def _generation(b: Builder, checkpoint: str, positive: str, negative: str, seed: int = 42, scale: float = 5.0,
                x: int = 780) -> tuple[str, str, str, str]:
    latent = b.add("EmptyLatent", (400, 520), width=32, height=32, batch=1)
    b.link(checkpoint, "vae", latent, "vae")
    noise = b.add("Noise", (x, 40), seed=seed)
    cfg = b.add("CFG", (x, 200), scale=scale)
    b.link(checkpoint, "model", cfg, "model")
    b.link(positive, "conditioning", cfg, "positive")
    b.link(negative, "conditioning", cfg, "negative")
    return latent, noise, cfg, checkpoint


def forward_noising() -> dict[str, Any]:
    b = Builder()
    checkpoint, positive, negative = _model_and_prompts(b, "a yellow star on a purple background")
    latent, noise, cfg, _ = _generation(b, checkpoint, positive, negative)
    sampler = b.add("Sampler", (1160, 40), sampler="dpmpp_2m", steps=20)
    for source, output, name in ((noise, "noise", "noise"), (cfg, "guider", "guider"), (latent, "latent", "latent")):
        b.link(source, output, sampler, name)
    decode = b.add("VAEDecode", (1160, 460))
    b.link(checkpoint, "vae", decode, "vae")
    b.link(sampler, "latent", decode, "latent")
    strip = b.add("NoisingStrip", (1540, 40), columns=8)
    b.link(checkpoint, "model", strip, "model")
    b.link(checkpoint, "vae", strip, "vae")
    b.link(decode, "image", strip, "image")
    b.link(noise, "noise", strip, "noise")
    preview = b.add("PreviewImage", (1920, 40), title="x_t across the schedule")
    b.link(strip, "strip", preview, "images")
    b.note((
        "Training noises a clean image to step t in ONE jump: x_t = sqrt(a) x0 + sqrt(1-a) noise, where a "
        "(alpha-bar) is the signal share the schedule leaves at t. Gaussians add up, so no step-by-step "
        "noising is needed.\n\nLook at the strip: left is the picture the model just drew, right the last "
        "train step (pure noise). The top row is decoded by the VAE, the bottom row is the latent itself. "
        "The curve below shows alpha-bar over the 1000 train steps, the columns marked: most of the "
        "picture is gone by the middle.\n\nForward Noise does one such jump at a chosen level."))
    return b.document()


def sampler_insides() -> dict[str, Any]:
    b = Builder()
    checkpoint, positive, negative = _model_and_prompts(b, "a red circle on a blue background", "red")
    latent, noise, cfg, _ = _generation(b, checkpoint, positive, negative, scale=5.0)
    insides = b.add("SamplerInsides", (1160, 40), sampler="dpmpp_2m", steps=20, columns=8)
    for source, output, name in ((noise, "noise", "noise"), (cfg, "guider", "guider"), (latent, "latent", "latent")):
        b.link(source, output, insides, name)
    b.link(checkpoint, "vae", insides, "vae")
    strips = b.add("PreviewImage", (1540, 40), title="per step: x_t, noise, x0, cond, uncond, difference")
    b.link(insides, "strips", strips, "images")
    plot = b.add("PreviewImage", (1920, 40), title="per step: sigma, CFG difference, noise added")
    b.link(insides, "plot", plot, "images")
    live = b.add("Sampler", (1160, 480), title="Sampler (live preview: CFG difference)", sampler="dpmpp_2m",
                 steps=20, preview="cfg_difference")
    for source, output, name in ((noise, "noise", "noise"), (cfg, "guider", "guider"), (latent, "latent", "latent")):
        b.link(source, output, live, name)
    decode = b.add("VAEDecode", (1540, 480))
    b.link(checkpoint, "vae", decode, "vae")
    b.link(live, "latent", decode, "latent")
    final = b.add("PreviewImage", (1920, 480), title="the final image")
    b.link(decode, "image", final, "images")
    b.note((
        "The network is trained to predict the TOTAL noise in x_t, so every step has an estimate of the clean "
        "image: x0 = (x_t - sigma * noise). Rows of the strips, left to right over the run: the noisy latent x_t, "
        "the predicted noise, the x0 estimate (cheap colours, then decoded by the VAE), the prediction without "
        "the prompt (uncond: here the negative prompt \"red\"), with it (cond), and their difference, which "
        "classifier-free guidance multiplies by its scale: guided = uncond + scale x (cond - uncond).\n\n"
        "All of it happens in the VAE's latent space (16x16x4 for this model).\n\nLive: select the lower "
        "Sampler and run; its preview field picks what the live preview shows (x0, noise, latent, cond, "
        "uncond, cfg_difference, added_noise)."))
    return b.document()


def samplers_compared() -> dict[str, Any]:
    b = Builder()
    checkpoint, positive, negative = _model_and_prompts(b, "a green background with a white cross")
    latent, noise, cfg, _ = _generation(b, checkpoint, positive, negative, seed=7)
    for row, sampler in enumerate(("ddpm", "ddim", "dpmpp_2m")):
        insides = b.add("SamplerInsides", (1160, 40 + row * 480), title=f"{sampler}", sampler=sampler, steps=20, columns=6)
        for source, output, name in ((noise, "noise", "noise"), (cfg, "guider", "guider"), (latent, "latent", "latent")):
            b.link(source, output, insides, name)
        b.link(checkpoint, "vae", insides, "vae")
        strips = b.add("PreviewImage", (1540, 40 + row * 480), title=f"{sampler}: per step")
        b.link(insides, "strips", strips, "images")
        plot = b.add("PreviewImage", (1920, 40 + row * 480), title=f"{sampler}: noise added back")
        b.link(insides, "plot", plot, "images")
    b.note((
        "One seed, one prompt, three samplers, 20 steps each.\n\nDDPM re-noises: every step it adds fresh noise "
        "back (the \"noise added\" row and the orange curve of its plot), so its path wanders and it needs many "
        "steps. DDIM with eta 0 takes the same model but moves deterministically along its x0 estimate: nothing "
        "is added back (the curve is at zero) and the same seed always gives the same image. DPM++ 2M is "
        "deterministic too and uses the last two estimates, so it gets there in fewer steps.\n\nCompare the "
        "x0 rows: DDIM and DPM++ settle early, DDPM late."))
    return b.document()


def schedules() -> dict[str, Any]:
    b = Builder()
    checkpoint = b.add("Checkpoint", (40, 40), checkpoint="shapes")
    compare = b.add("ScheduleCompare", (400, 40), sampler="euler", steps=20, axis="sigma")
    b.link(checkpoint, "model", compare, "model")
    preview = b.add("PreviewImage", (780, 40), title="schedules compared")
    b.link(compare, "plot", preview, "images")
    b.note((
        "How much noise each step holds. Left: the training schedule of this model (from its "
        "scheduler_config.json) beside linear, scaled-linear (Stable Diffusion's) and cosine betas: "
        "sigma = sqrt((1 - alpha-bar) / alpha-bar), on a log scale. Right: the noise levels a 20-step run "
        "visits with each sampling schedule; karras and exponential spend more steps at low noise, where the "
        "details are made.\n\nSet axis to alpha_bar or log_snr to see the same in other units; select the "
        "node to see the plot in the side panel too."))
    return b.document()


COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")


def clip_space() -> dict[str, Any]:
    b = Builder()
    checkpoint = b.add("Checkpoint", (40, 300), checkpoint="shapes")
    prompts = "\n".join(form.format(colour) for colour in COLOURS for form in ("{}", "a {} shape"))
    space = b.add("CLIPSpace", (400, 40), prompts=prompts, base="a red shape", a="green", b="red")
    b.link(checkpoint, "clip", space, "clip")
    map_preview = b.add("PreviewImage", (780, 40), title="the map")
    b.link(space, "map", map_preview, "images")
    matrix = b.add("PreviewImage", (1160, 40), title="cosine similarity")
    b.link(space, "similarity", matrix, "images")
    texts = {}
    for row, (name, text) in enumerate((("base", "a red circle on a yellow background"), ("a", "green"), ("b", "red"))):
        texts[name] = b.add("TextEncoder", (400, 600 + row * 240), title=f"{name}", text=text)
        b.link(checkpoint, "clip", texts[name], "clip")
    empty = b.add("TextEncoder", (400, 1320), title="Negative prompt", text="")
    b.link(checkpoint, "clip", empty, "clip")
    direction = b.add("ConditioningDirection", (780, 600), strength=1.0)
    b.link(texts["base"], "conditioning", direction, "base")
    b.link(texts["a"], "conditioning", direction, "a")
    b.link(texts["b"], "conditioning", direction, "b")
    latent = b.add("EmptyLatent", (780, 840), width=32, height=32, batch=4)
    b.link(checkpoint, "vae", latent, "vae")
    noise = b.add("Noise", (780, 1080), seed=3)
    for column, (title, conditioning) in enumerate((("base", texts["base"]), ("base + (a - b)", direction))):
        x = 1160 + column * 760
        cfg = b.add("CFG", (x, 600), scale=5.0)
        b.link(checkpoint, "model", cfg, "model")
        b.link(conditioning, "conditioning", cfg, "positive")
        b.link(empty, "conditioning", cfg, "negative")
        sampler = b.add("Sampler", (x, 820), sampler="dpmpp_2m", steps=20)
        b.link(noise, "noise", sampler, "noise")
        b.link(cfg, "guider", sampler, "guider")
        b.link(latent, "latent", sampler, "latent")
        decode = b.add("VAEDecode", (x + 380, 600))
        b.link(checkpoint, "vae", decode, "vae")
        b.link(sampler, "latent", decode, "latent")
        shown = b.add("PreviewImage", (x + 380, 820), title=f"images from {title}")
        b.link(decode, "image", shown, "images")
    b.note((
        "CLIP places texts (and pictures) in one space where similarity is closeness. The map shows 16 "
        "prompts (each colour said two ways) on their first two principal components: the two ways of saying "
        "a colour land together, the eight colours apart, and the matrix shows which prompts CLIP takes as "
        "alike. (Add shape words and the first axis becomes the shape.)\n\nA difference of two captions is a "
        "direction: the red arrow moves \"a red shape\" by (\"green\" - \"red\"), and the node names the prompt nearest to where "
        "it lands. Below, the same move on the full conditioning (Conditioning Direction) turns the red "
        "circles of the base prompt green, with the same seeds."))
    return b.document()


def score_field() -> dict[str, Any]:
    b = Builder()
    toy = b.add("ToyDiffusion", (40, 40), dataset="spiral", train_steps=2000, seed=0)
    data = b.add("PreviewImage", (40, 340), title="data and loss")
    b.link(toy, "picture", data, "images")
    field = b.add("ToyScoreField", (400, 40), levels="0.05, 0.3, 0.7", ddim_steps=20, count=300, seed=0)
    b.link(toy, "toy", field, "toy")
    field_view = b.add("PreviewImage", (780, 40), title="the score field at three noise levels")
    b.link(field, "field", field_view, "images")
    walks = b.add("PreviewImage", (780, 460), title="samples: DDPM and DDIM")
    b.link(field, "samples", walks, "images")
    b.note((
        "The model learns a score field: at every point and noise level, the direction towards more "
        "likely, less noisy data (-predicted noise / sqrt(1 - alpha-bar)).\n\nA tiny network learns it for "
        "points on a spiral in a few seconds. At low noise (left) the arrows point onto the spiral; at high "
        "noise they point to its middle. Sampling starts from pure noise and follows the field: DDPM "
        "through all 100 steps with fresh noise each step (wiggly paths), DDIM in 20 deterministic steps. "
        "The same words as the image model: epsilon prediction, alpha-bar, DDPM, DDIM."))
    return b.document()


IDEAS = {"forward-noising": forward_noising, "sampler-insides": sampler_insides, "samplers-compared": samplers_compared,
         "schedules": schedules, "clip-space": clip_space, "score-field": score_field}


def write_workflows() -> None:
    WORKFLOWS.mkdir(parents=True, exist_ok=True)
    for name, build in IDEAS.items():
        (WORKFLOWS / f"{name}.json").write_text(json.dumps(build(), indent=2) + "\n")


def previews_of(result: Any, flow: Any) -> dict[str, Any]:
    """Title (or id) of each Preview Image -> its picture (numpy [H, W, 3] in [0, 1])."""
    pictures = {}
    for node_id, outputs in result.outputs.items():
        node = flow.graph.nodes[node_id]
        if node.type == "PreviewImage":
            pictures[node.title or node_id] = outputs["images"][0].numpy()
    return pictures


def slug(title: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in title.lower()).split())


def run_workflow(path: Path, output_dir: Path) -> tuple[Any, Any]:
    import nodeflow.api

    flow = nodeflow.api.open(path, device="cpu")
    return flow, flow.run(output_dir=output_dir, device="cpu")


def main(argv: list[str] | None = None) -> None:
    import tempfile

    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-workflows", action="store_true", help="rewrite workflows/explain/*.json first")
    args = parser.parse_args(argv)
    if args.write_workflows:
        write_workflows()
    PICTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as out:
        for name in IDEAS:
            began = time.perf_counter()
            flow, result = run_workflow(WORKFLOWS / f"{name}.json", Path(out))
            seconds = time.perf_counter() - began
            for title, picture in sorted(previews_of(result, flow).items()):
                image = Image.fromarray((picture.clip(0, 1) * 255 + 0.5).astype("uint8"))
                if image.width < 200:  # the model's 32 px pictures, shown bigger
                    image = image.resize((image.width * 4, image.height * 4), Image.NEAREST)
                else:  # plots and strips: a 256-colour palette keeps the committed files small
                    image = image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
                image.save(PICTURES / f"{name}-{slug(title)}.png", optimize=True)
            print(f"{name:20s} {seconds:6.1f} s")


if __name__ == "__main__":
    main()
