"""The bundled model's training code stays honest: every stage of `nodeflow train-demo`
runs a few real steps on a handful of images, the result loads as a stock diffusers
pipeline, and reruns resume instead of starting over."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from nodes.bundled.training import trainer as _train
from nodes.bundled.training.dataset import (COLOUR_NAMES, SHAPES, WORDS, caption, full_caption, make_split,
                                    mentioned, random_scene, render)
from nodes.bundled.training.metrics import judge_colours, to_image
from nodes.bundled.training.tokenizer import load_tokenizer, save_tokenizer

TINY = ["--train-images", "48", "--held-out-images", "8", "--max-steps", "2", "--quiet", "--threads", "1",
        "--batch", "vae=4", "--batch", "clip=8", "--batch", "classifier=8", "--batch", "unet=4",
        "--batch", "judge=8", "--batch", "lora=4", "--batch", "controlnet=4", "--batch", "upscaler=4",
        "--batch", "hires_lora=4"]


def _tiny_args(tmp_path) -> list[str]:
    return ["--work", str(tmp_path / "work"), "--export-to", str(tmp_path / "shapes"),
            "--classifier-to", str(tmp_path / "classifier.safetensors"), "--adapters-to", str(tmp_path / "adapters"),
            "--judge-to", str(tmp_path / "judge_heart.safetensors"), *TINY]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("train")
    assert _train.main(_tiny_args(tmp_path)) == 0
    return tmp_path


def test_every_stage_runs_and_exports_a_stock_stable_diffusion_folder(trained):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    folder = trained / "shapes"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_nodeflow_family"] == "bundled" and index["_nodeflow_vae_scale_factor"] == 2
    latent_rgb = json.loads((folder / "vae" / "latent_rgb.json").read_text())
    assert np.array(latent_rgb).shape == (5, 3)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size <= 25_000_000
    assert (trained / "classifier.safetensors").exists()

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.image_encoder).__name__ == "CLIPVisionModelWithProjection"
    image = pipe("a red circle on a blue background", negative_prompt="green", num_inference_steps=3,
                 guidance_scale=5.0, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()


def test_rerun_skips_finished_stages_and_reopen_trains_on_from_the_checkpoint(trained):
    unet_weights = trained / "work" / "unet" / "model" / "diffusion_pytorch_model.safetensors"
    before = unet_weights.stat().st_mtime_ns
    assert _train.main(_tiny_args(trained)) == 0
    assert unet_weights.stat().st_mtime_ns == before  # nothing retrained

    args = _tiny_args(trained)
    args[args.index("--max-steps") + 1] = "3"
    assert _train.main([*args, "--reopen", "unet"]) == 0
    checkpoint = torch.load(trained / "work" / "unet" / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == 3
    assert json.loads((trained / "work" / "export" / "done.json").read_text())["bytes"] > 0


def test_loop_resumes_at_the_saved_step(tmp_path):
    settings = _train.Settings(work=tmp_path, max_steps=2, quiet=True)
    model = torch.nn.Linear(2, 2)
    seen: list[int] = []
    _train.Loop(settings, "vae", {"model": model}).run(lambda i: seen.append(i) or {})
    settings.max_steps = 5
    _train.Loop(settings, "vae", {"model": model}).run(lambda i: seen.append(i) or {})
    assert seen == [0, 1, 2, 3, 4]


def test_dataset_is_deterministic_and_labelled_by_its_pixels():
    a, b = make_split(40, seed=3), make_split(40, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["images"], make_split(40, seed=4)["images"])
    assert (a["colour"] != a["background"]).all()
    shape_colour, background = judge_colours(to_image(a["images"]))
    assert (shape_colour.numpy() == a["colour"]).all()
    assert (background.numpy() == a["background"]).all()


def test_captions_name_the_scene_in_any_word_order():
    rng = random.Random(0)
    for _ in range(300):
        scene = random_scene(rng)
        text = caption(scene, rng, partial_fraction=0.5)
        for named, actual in zip(mentioned(text), (scene.colour, scene.shape, scene.background)):
            assert named in (-1, actual), text
    scene = random_scene(rng, colour=0, shape=1, background=2)
    assert full_caption(scene) == f"a {COLOUR_NAMES[0]} {SHAPES[1]} on a {COLOUR_NAMES[2]} background"
    assert mentioned("a blue background with a red circle") == (0, 0, 2)
    assert mentioned("red") == (0, -1, -1)
    assert render(scene).size == (32, 32)


def test_word_level_vocabulary_loads_in_the_stock_clip_tokenizer(tmp_path):
    save_tokenizer(tmp_path, WORDS)
    tokenizer = load_tokenizer(tmp_path)
    ids = tokenizer("a blue background with a red circle, black star").input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["<|startoftext|>", "a</w>", "blue</w>", "background</w>", "with</w>", "a</w>",
                      "red</w>", "circle</w>", ",</w>", "black</w>", "star</w>", "<|endoftext|>"]
    for word in WORDS:
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    padded = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(padded) == 77 and padded[0] == tokenizer.bos_token_id
    assert set(padded[1:]) == {tokenizer.eos_token_id}


def test_latent_rgb_fit_recovers_a_linear_map():
    latents = torch.randn(20, 4, 8, 8)
    true = torch.randn(5, 3)
    rgb = (latents.permute(0, 2, 3, 1) @ true[:4] + true[4]).permute(0, 3, 1, 2)
    fitted = _train.fit_latent_rgb(latents, torch.nn.functional.interpolate(rgb, scale_factor=2))
    assert torch.allclose(fitted, true, atol=1e-4)


def test_every_step_draws_a_different_batch():
    # A regression: a seed made from the truncated key bytes repeated each batch ten times.
    settings = _train.Settings()
    for stage in ["vae", "clip", "classifier", "unet"]:
        seeds = {_train._rng(settings, stage, i)[1].initial_seed() for i in range(3000)}
        assert len(seeds) == 3000, stage


def _weights(folder) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*.safetensors"))}


def test_training_is_reproducible_even_when_interrupted_and_resumed(trained, tmp_path):
    """The committed weights must be what `nodeflow train-demo` gives: the same settings give
    byte-identical weights, also when a stage was cut short and resumed from its checkpoint."""
    args = [*_tiny_args(tmp_path), "--seed", "0"]
    args[args.index("--max-steps") + 1] = "3"
    once = tmp_path / "shapes"
    # The resumed run: each trained stage is stopped by a time cap after its first step, then
    # reopened without the cap, so it continues from its saved checkpoint to step 3.
    resumed_args = [a.replace(str(tmp_path), str(tmp_path / "resumed")) for a in args]
    for stage in _train.STAGES:
        if stage in _train.TRAINED_STAGES:
            assert _train.main([*resumed_args, "--stages", stage, "--minutes", f"{stage}=0.00001"]) == 0
            saved = torch.load(tmp_path / "resumed" / "work" / stage / "checkpoint.pt", weights_only=False)
            assert saved["step"] == 1
            assert _train.main([*resumed_args, "--stages", stage, "--reopen", stage]) == 0
        else:
            assert _train.main([*resumed_args, "--stages", stage]) == 0
    assert _train.main(args) == 0

    first, second = _weights(once), _weights(tmp_path / "resumed" / "shapes")
    assert len(first) == 4 and first.keys() == second.keys()
    assert all(first[name] == second[name] for name in first), [n for n in first if first[n] != second[n]]
    record = json.loads((once / "training.json").read_text())
    assert record["sha256"] == json.loads((tmp_path / "resumed" / "shapes" / "training.json").read_text())["sha256"]
    assert record["sha256"] == _train.weight_digests(once) and record["steps"]["unet"] == _train.DEFAULT_STEPS["unet"]
    assert record["stages"]["unet"]["steps"] == 3
    adapters = tmp_path / "adapters"
    first, second = _weights(adapters), _weights(tmp_path / "resumed" / "adapters")
    assert len(first) == 4 and first.keys() == second.keys()
    assert all(first[name] == second[name] for name in first), [n for n in first if first[n] != second[n]]
    stages = json.loads((adapters / "adapters.json").read_text())["stages"]
    assert stages["lora"]["steps"] == 3 and stages["hires_lora"]["steps"] == 3


def test_adapters_are_files_of_their_kinds_in_the_layouts_user_files_have(trained):
    """The LoRA in the kohya layout, the ControlNet a diffusers folder, the upscaler the
    RealESRGAN-compact key layout; read back with the libraries' own loaders."""
    from diffusers import ControlNetModel
    from safetensors.torch import load_file

    from nodes.bundled.training.adapters import load_upscaler

    adapters = trained / "adapters"
    lora = load_file(str(adapters / "loras" / "shapes-heart.safetensors"))
    assert lora and all(k.startswith("lora_unet_") for k in lora)
    assert any(k.endswith(".lora_down.weight") for k in lora) and any(k.endswith(".alpha") for k in lora)
    assert any("attentions" in k for k in lora)
    hires = load_file(str(adapters / "loras" / "shapes-hires.safetensors"))
    assert hires.keys() <= lora.keys() and all(v.dtype == torch.float16 for v in hires.values())
    controlnet = ControlNetModel.from_pretrained(adapters / "controlnet" / "shapes-mask")
    assert controlnet.config.conditioning_embedding_out_channels == [16, 32]
    state = load_file(str(adapters / "upscale_models" / "2x-shapes-compact.safetensors"))
    assert {"body.0.weight", "body.1.weight"} <= state.keys()
    upscaler = load_upscaler(adapters / "upscale_models" / "2x-shapes-compact.safetensors")
    assert upscaler(torch.rand(1, 3, 32, 32)).shape == (1, 3, 64, 64)


def test_from_shipped_refuses_a_model_folder_whose_weights_are_not_the_recorded_ones(trained, tmp_path):
    import shutil

    folder = tmp_path / "shapes"
    shutil.copytree(trained / "shapes", folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    args = _tiny_args(tmp_path)
    args[args.index("--export-to") + 1] = str(folder)
    with pytest.raises(SystemExit, match="not the ones"):
        _train.main([*args, "--from-shipped"])


def test_keep_shipped_takes_checked_adapters_instead_of_training_them(trained, tmp_path):
    """Retraining one adapter need not retrain the others: --keep-shipped takes their files
    from the shipped folder once their digests are the ones adapters.json records."""
    import shutil

    shipped = tmp_path / "adapters"
    shutil.copytree(trained / "adapters", shipped)
    before = _weights(shipped)
    args = [a.replace(str(tmp_path / "shapes"), str(trained / "shapes")) for a in _tiny_args(tmp_path)]
    args[args.index("--classifier-to") + 1] = str(trained / "classifier.safetensors")
    args[args.index("--max-steps") + 1] = str(json.loads((shipped / "adapters.json").read_text())["max_steps"])
    keep = ["--keep-shipped", "lora", "--keep-shipped", "controlnet"]
    assert _train.main([*args, "--from-shipped", *keep]) == 0
    assert not (tmp_path / "work" / "lora" / "checkpoint.pt").exists()  # kept, not trained
    assert (tmp_path / "work" / "upscaler" / "checkpoint.pt").exists()  # trained again
    after = _weights(shipped)
    kept = [name for name in before if name.startswith(("loras/shapes-heart", "controlnet/"))]
    assert len(kept) == 2 and all(after[name] == before[name] for name in kept)
    record = json.loads((shipped / "adapters.json").read_text())
    assert record["stages"]["lora"]["kept_from_shipped"] and "kept_from_shipped" not in record["stages"]["upscaler"]

    lora = shipped / "loras" / "shapes-heart.safetensors"
    lora.write_bytes(lora.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(SystemExit, match="not the file adapters.json records"):
        _train.main([*args, "--work", str(tmp_path / "work2"), "--from-shipped", *keep])


def test_hearts_are_a_new_shape_with_masks_at_any_size():
    from nodes.bundled.training.adapters import HEART

    hearts = make_split(12, seed=5, shapes=(HEART,), masks=True, size=64)
    assert (hearts["shape"] == HEART).all() and hearts["images"].shape == (12, 64, 64, 3)
    drawn = (hearts["masks"] > 127)
    assert drawn.any(axis=(1, 2)).all() and not drawn.all(axis=(1, 2)).any()
    shape_colour, _ = judge_colours(to_image(hearts["images"]))
    assert (shape_colour.numpy() == hearts["colour"]).all()


def test_cli_passes_options_through_to_train_demo(tmp_path, capsys):
    from nodeflow.cli import main

    assert main(["train-demo", *_tiny_args(tmp_path), "--stages", "dataset"]) == 0
    assert (tmp_path / "work" / "dataset" / "train.npz").exists()


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    assert _train._lr(0, 1.0, 1000) == pytest.approx(0.01)
    assert _train._lr(99, 1.0, 1000) == pytest.approx(1.0)
    assert _train._lr(550, 1.0, 1000) == pytest.approx(0.55)
    assert _train._lr(1000, 1.0, 1000) == pytest.approx(0.1)
