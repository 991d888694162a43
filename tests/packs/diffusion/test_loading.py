"""Loading models: the Checkpoint and UNet nodes, family detection, model paths, safety."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow import NodeError, RunContext, RunSettings  # noqa: E402
from nodes.diffusion.impl import loading as _loading  # noqa: E402
from nodes.diffusion.impl.ldm import CheckpointError  # noqa: E402
from nodes.diffusion.impl.paths import list_models, resolve_model_path  # noqa: E402
from nodes.diffusion.loaders import Checkpoint, UNet  # noqa: E402
from tests.support.tiny_models import save_single_file, shared_tiny_sd, shared_tiny_sd2, shared_tiny_sdxl  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    return shared_tiny_sd(tmp_path_factory)


@pytest.fixture(scope="session")
def models_dir(tiny_sd, tmp_path_factory) -> Path:
    """A checkpoints folder holding the tiny model twice: as a diffusers folder and as one file."""
    folder = tmp_path_factory.mktemp("checkpoints")
    shutil.copytree(tiny_sd, folder / "tiny")
    save_single_file(tiny_sd, folder / "sd1" / "tiny.safetensors")
    return folder


@pytest.fixture(scope="session")
def pipe(tiny_sd):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(tiny_sd, local_files_only=True, safety_checker=None)


@pytest.fixture(scope="session")
def sdxl_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("xl")
    shutil.copytree(shared_tiny_sdxl(tmp_path_factory), folder / "tinyxl")
    save_single_file(folder / "tinyxl", folder / "tinyxl.safetensors")
    return folder


@pytest.fixture(scope="session")
def sdxl_pipe(sdxl_dir):
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline.from_pretrained(sdxl_dir / "tinyxl", local_files_only=True)


def same(got: torch.Tensor, expected: torch.Tensor, exact: bool) -> None:
    """Equal bit for bit, or (``exact=False``) to float rounding: CPU kernels may round
    differently when the same weights sit at differently aligned addresses, which is
    all that differs between a single file and a diffusers folder."""
    if exact:
        assert torch.equal(got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def ctx_for(models_dir: Path) -> RunContext:
    return RunContext(node_id="1", settings=RunSettings(model_folders={"checkpoints": [str(models_dir)], "unet": [str(models_dir)]}))


def load(models_dir: Path, value: str, dtype: str = "auto", prediction: str = "auto"):
    """The Checkpoint node's outputs; like the executor's cache, loads each choice once."""
    return _load(models_dir, value, dtype, prediction)


@functools.cache
def _load(models_dir: Path, value: str, dtype: str, prediction: str):
    return Checkpoint().run(ctx_for(models_dir), checkpoint=value, dtype=dtype, prediction=prediction)


# -- the tiny model, from a folder and from a single file, equals diffusers' own ----------------


@pytest.mark.parametrize("value", ["tiny", "sd1/tiny.safetensors"])
def test_checkpoint_components_compute_what_the_diffusers_pipeline_computes(models_dir, pipe, value):
    out = load(models_dir, value)
    model, clip, vae = out["model"], out["clip"], out["vae"]
    assert model.family.name == "sd1" and model.family.vae_scale_factor == 2 and not model.family.uses_pooled
    assert model.dtype == torch.float32 and model.unet.dtype == torch.float32
    assert model.scheduler_config["prediction_type"] == "epsilon"
    assert model.scheduler_config["beta_schedule"] == "scaled_linear"

    exact = value == "tiny"  # the folder loads the very files the pipeline loads
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, 32, generator=generator)
    with torch.no_grad():
        same(model.unet(latents, 500, context).sample, pipe.unet(latents, 500, context).sample, exact)
        same(vae.vae.decode(latents).sample, pipe.vae.decode(latents).sample, exact)
        ids = pipe.tokenizer("a red square", padding="max_length", max_length=77, return_tensors="pt").input_ids
        same(clip.encoders[0](ids).last_hidden_state, pipe.text_encoder(ids).last_hidden_state, exact)
    assert clip.tokenizers[0]("a red square").input_ids == pipe.tokenizer("a red square").input_ids
    assert clip.pad_token_ids == [pipe.tokenizer.pad_token_id] == [49407]  # SD 1.x pads with the end token
    assert vae.scaling_factor == pytest.approx(0.18215) and vae.shift_factor == 0.0
    assert vae.latent_rgb.shape == (5, 3)
    assert {type(p).__name__ for p in model.unet.attn_processors.values()} == {"AttnProcessor2_0"}


@pytest.mark.parametrize("value", ["tinyxl", "tinyxl.safetensors"])
def test_sdxl_checkpoint_computes_what_the_diffusers_pipeline_computes(sdxl_dir, sdxl_pipe, value):
    out = load(sdxl_dir, value)
    model, clip, vae = out["model"], out["clip"], out["vae"]
    assert model.family.name == "sdxl" and model.family.uses_pooled
    assert clip.pad_token_ids == [49407, 0]  # CLIP-L pads with the end token, OpenCLIP-G with id 0
    assert [type(e).__name__ for e in clip.encoders] == ["CLIPTextModel", "CLIPTextModelWithProjection"]
    assert vae.scaling_factor == pytest.approx(0.13025)
    assert model.scheduler_config["_class_name"] == "EulerDiscreteScheduler"

    exact = value == "tinyxl"
    generator = torch.Generator().manual_seed(1)
    latents, context = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 77, 96, generator=generator)
    added = {"text_embeds": torch.randn(1, 64, generator=generator), "time_ids": torch.tensor([[16.0, 16, 0, 0, 16, 16]])}
    ids = sdxl_pipe.tokenizer_2("a red square", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        same(model.unet(latents, 20, context, added_cond_kwargs=added).sample,
             sdxl_pipe.unet(latents, 20, context, added_cond_kwargs=added).sample, exact)
        same(vae.vae.decode(latents).sample, sdxl_pipe.vae.decode(latents).sample, exact)
        got, expected = clip.encoders[1](ids, output_hidden_states=True), sdxl_pipe.text_encoder_2(ids, output_hidden_states=True)
        same(got.hidden_states[-2], expected.hidden_states[-2], exact)
        same(got.text_embeds, expected.text_embeds, exact)


@pytest.fixture(scope="session")
def sd2_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sd2")
    shutil.copytree(shared_tiny_sd2(tmp_path_factory), folder / "tinysd2")
    save_single_file(folder / "tinysd2", folder / "tinysd2.safetensors")  # with the unused last layer
    return folder


def test_sd2_folder_and_single_file_compute_what_the_pipeline_computes(sd2_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sd2_dir / "tinysd2", local_files_only=True, safety_checker=None)
    latents, context = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 64)
    ids = pipe.tokenizer("a red square", padding="max_length", max_length=77, return_tensors="pt").input_ids
    for value, exact in (("tinysd2", True), ("tinysd2.safetensors", False)):
        out = load(sd2_dir, value, prediction="v_prediction")
        model, clip = out["model"], out["clip"]
        assert model.family.name == "sd2" and clip.pad_token_ids == [0]
        # built without the OpenCLIP tower's last layer: SD 2.x reads the penultimate one
        assert clip.encoders[0].config.num_hidden_layers == pipe.text_encoder.config.num_hidden_layers
        with torch.no_grad():
            same(model.unet(latents, 30, context).sample, pipe.unet(latents, 30, context).sample, exact)
            same(clip.encoders[0](ids).last_hidden_state, pipe.text_encoder(ids).last_hidden_state, exact)


def test_sd2_schedule_follows_the_prediction_type(sd2_dir):
    folder = load(sd2_dir, "tinysd2")["model"].scheduler_config
    assert (folder["_class_name"], folder["prediction_type"]) == ("DDIMScheduler", "v_prediction")
    # An untrained tiny file shows no v-prediction signature: auto falls back to 512-base (epsilon).
    auto = load(sd2_dir, "tinysd2.safetensors")["model"].scheduler_config
    assert auto["prediction_type"] == "epsilon"
    chosen = load(sd2_dir, "tinysd2.safetensors", prediction="v_prediction")["model"].scheduler_config
    assert (chosen["_class_name"], chosen["prediction_type"]) == ("DDIMScheduler", "v_prediction")


def test_sdxl_vae_stays_fp32_when_the_model_loads_in_fp16(sdxl_dir):
    out = load(sdxl_dir, "tinyxl.safetensors", dtype="fp16")
    assert out["model"].unet.dtype == torch.float16
    assert out["vae"].vae.dtype == torch.float32  # its config says force_upcast: fp16 overflows


def test_sdxl_single_file_architecture_is_read_from_the_weights(sdxl_dir, sdxl_pipe):
    config = load(sdxl_dir, "tinyxl.safetensors")["model"].unet.config
    for key in ("transformer_layers_per_block", "addition_time_embed_dim", "projection_class_embeddings_input_dim",
                "use_linear_projection", "cross_attention_dim", "down_block_types", "attention_head_dim"):
        assert tuple(_listify(config[key])) == tuple(_listify(sdxl_pipe.unet.config[key])), key


def test_single_file_architecture_is_read_from_the_weights(models_dir, pipe):
    model = load(models_dir, "sd1/tiny.safetensors")["model"]
    for key in ("block_out_channels", "layers_per_block", "down_block_types", "up_block_types",
                "cross_attention_dim", "attention_head_dim", "in_channels", "out_channels"):
        assert tuple(_listify(model.unet.config[key])) == tuple(_listify(pipe.unet.config[key])), key


def _listify(value):
    return value if isinstance(value, (list, tuple)) else [value]


def test_fp16_dtype_choice_loads_half_weights(models_dir):
    out = load(models_dir, "sd1/tiny.safetensors", dtype="fp16")
    assert out["model"].unet.dtype == torch.float16 and out["model"].dtype == torch.float16
    assert out["clip"].encoders[0].dtype == torch.float16


def test_dtype_auto_is_fp16_only_on_cuda():
    assert _loading.resolve_dtype("auto", "cpu") == torch.float32
    assert _loading.resolve_dtype("auto", "mps") == torch.float32
    assert _loading.resolve_dtype("auto", "cuda:0") == torch.float16
    assert _loading.resolve_dtype("bf16", "cpu") == torch.bfloat16


def test_prediction_widget_overrides_the_schedule(models_dir):
    out = load(models_dir, "sd1/tiny.safetensors", prediction="v_prediction")
    assert out["model"].scheduler_config["prediction_type"] == "v_prediction"


def test_unet_node_loads_from_file_and_folder_alike(models_dir, pipe):
    ctx = ctx_for(models_dir)
    from_file = UNet().run(ctx, unet="sd1/tiny.safetensors", dtype="fp32", prediction="auto")
    from_folder = UNet().run(ctx, unet="tiny", dtype="fp32", prediction="auto")
    latents, context = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
    with torch.no_grad():
        expected = pipe.unet(latents, 10, context).sample
        same(from_file.unet(latents, 10, context).sample, expected, exact=False)
        same(from_folder.unet(latents, 10, context).sample, expected, exact=True)
    assert from_file.family.name == from_folder.family.name == "sd1"
    inner = UNet().run(ctx, unet="tiny/unet/diffusion_pytorch_model.safetensors", dtype="fp32", prediction="auto")
    with torch.no_grad():
        same(inner.unet(latents, 10, context).sample, expected, exact=True)


def test_model_folder_latent_rgb_json_is_used(tiny_sd, tmp_path):
    import json

    folder = tmp_path / "withmap"
    shutil.copytree(tiny_sd, folder)
    rows = [[0.1, 0.2, 0.3], [0.0, 0.1, 0.0], [0.2, 0.0, 0.1], [0.0, 0.0, 0.2], [0.5, 0.5, 0.5]]
    (folder / "vae" / "latent_rgb.json").write_text(json.dumps(rows))
    vae = load(tmp_path, "withmap")["vae"]
    # The file maps to [0, 1]; the VAE record carries the [-1, 1] form previews use.
    assert torch.allclose(vae.latent_rgb[:-1], 2 * torch.tensor(rows[:-1]))
    assert torch.allclose(vae.latent_rgb[-1], torch.zeros(3))


def test_folder_declaring_its_family_and_carrying_an_image_encoder(tiny_sd, tmp_path):
    """The bundled model's layout: ``_nodeflow_family`` in model_index.json, a CLIP image
    encoder beside the text encoder, fp16-variant weight files as hub snapshots have."""
    import json

    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = tmp_path / "bundled-like"
    shutil.copytree(tiny_sd, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index.update(_nodeflow_family="bundled", image_encoder=["transformers", "CLIPVisionModelWithProjection"])
    (folder / "model_index.json").write_text(json.dumps(index))
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                                            num_attention_heads=1, image_size=32, patch_size=8, projection_dim=32))
    vision.save_pretrained(folder / "image_encoder")
    (folder / "text_encoder" / "model.safetensors").rename(folder / "text_encoder" / "model.fp16.safetensors")
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    unet.rename(unet.with_name("diffusion_pytorch_model.fp16.safetensors"))

    out = load(tmp_path, "bundled-like")
    assert out["model"].family.name == out["clip"].family.name == "bundled"
    assert isinstance(out["clip"].vision, CLIPVisionModelWithProjection)
    with torch.no_grad():
        assert out["clip"].vision(torch.zeros(1, 3, 32, 32)).image_embeds.shape == (1, 32)


def test_checkpoint_runs_in_the_executor_with_configured_model_folders(models_dir):
    from nodeflow.engine.executor import Executor
    from nodeflow.model.graph import Graph
    from nodeflow.model.registry import default_registry

    from tests.support.testpack import Sink

    registry = default_registry()
    registry.register(Sink)
    graph = Graph(registry)
    ckpt = graph.add_node("Checkpoint", {"checkpoint": "sd1/tiny.safetensors"})
    text = graph.add_node("TextEncoder", {"text": "a blue circle"})
    sink = graph.add_node("Sink")
    graph.connect(ckpt.id, "clip", text.id, "clip")
    graph.connect(text.id, "conditioning", sink.id, "value")
    settings = RunSettings(model_folders={"checkpoints": [str(models_dir)]})
    executor = Executor(registry, device="cpu")
    result = executor.run(graph, settings=settings)
    assert result.ok, result.error
    assert Sink.received[-1].embeds.shape == (1, 77, 32)
    graph.set_value(text.id, "text", "a green star")
    again = executor.run(graph, settings=settings)
    assert again.ok and ckpt.id in again.cached and text.id in again.executed  # the model is not reloaded


# -- family and prediction detection -------------------------------------------------------------


def shapes(**named) -> dict[str, torch.Tensor]:
    return {key.replace("__", "."): torch.empty(shape, device="meta") for key, shape in named.items()}


def unet_keys(context_dim: int, label_emb: bool = False) -> dict[str, torch.Tensor]:
    keys = {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.empty(320, context_dim, device="meta")}
    if label_emb:
        keys["model.diffusion_model.label_emb.0.0.weight"] = torch.empty(1280, 2816, device="meta")
    return keys


def test_family_of_the_tiny_files(models_dir, sdxl_dir):
    assert _loading.detect_family(_loading.read_state_dict(models_dir / "sd1" / "tiny.safetensors")) == "sd1"
    assert _loading.detect_family(_loading.read_state_dict(sdxl_dir / "tinyxl.safetensors")) == "sdxl"


@pytest.mark.parametrize(
    "state, family",
    [
        ({**unet_keys(768), "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.empty(49408, 768, device="meta")}, "sd1"),
        ({**unet_keys(1024), "cond_stage_model.model.token_embedding.weight": torch.empty(49408, 1024, device="meta")}, "sd2"),
        ({**unet_keys(2048, True), "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": torch.empty(49408, 768, device="meta"),
          "conditioner.embedders.1.model.positional_embedding": torch.empty(77, 1280, device="meta")}, "sdxl"),
        (unet_keys(768), "sd1"),  # UNet-only files: decided by cross-attention width
        (unet_keys(1024), "sd2"),
        (unet_keys(2048, True), "sdxl"),
    ],
    ids=["sd1", "sd2", "sdxl", "sd1-unet", "sd2-unet", "sdxl-unet"],
)
def test_family_detection_from_keys_and_shapes(state, family):
    assert _loading.detect_family(state) == family


def test_refiner_is_recognised_and_foreign_files_are_refused_with_a_reason():
    refiner = {"conditioner.embedders.0.model.text_projection": torch.empty(1280, 1280, device="meta")}
    assert _loading.detect_family(refiner) == "sdxl_refiner"
    unet_only = {
        "model.diffusion_model.label_emb.0.0.weight": torch.empty(1536, 2560, device="meta"),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": torch.empty(768, 1280, device="meta"),
    }
    assert _loading.detect_family(unet_only) == "sdxl_refiner"
    with pytest.raises(CheckpointError, match="not a Stable Diffusion checkpoint"):
        _loading.detect_family({"encoder.weight": torch.empty(2, 2)})


def test_sd2_prediction_type_detection():
    key = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
    generator = torch.Generator().manual_seed(0)
    wide = {key: torch.randn(320, generator=generator) * 0.2}
    narrow = {key: torch.randn(320, generator=generator) * 0.01}
    assert _loading.detect_prediction(wide, "sd2") == "v_prediction"
    assert _loading.detect_prediction(narrow, "sd2") == "epsilon"
    assert _loading.detect_prediction(wide, "sd1") == "epsilon"  # SD 1.x is always epsilon
    assert _loading.detect_prediction({"v_pred": torch.tensor([])}, "sdxl") == "v_prediction"


# -- model paths -------------------------------------------------------------------------------


def test_missing_model_names_the_value_and_every_folder_searched(tmp_path):
    folders = [tmp_path / "a", tmp_path / "b"]
    ctx = RunContext(node_id="7", settings=RunSettings(model_folders={"checkpoints": [str(f) for f in folders]}))
    with pytest.raises(NodeError) as error:
        Checkpoint().run(ctx, checkpoint="nope.safetensors", dtype="auto", prediction="auto")
    message = str(error.value)
    assert 'field "checkpoint"' in message and "'nope.safetensors'" in message
    for folder in folders:
        assert str(folder) in message


def test_first_configured_folder_wins(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        (folder / "m.safetensors").write_bytes(b"x")
    settings = RunSettings(model_folders={"checkpoints": [str(first), str(second)]})
    assert resolve_model_path("m.safetensors", "checkpoints", settings) == first / "m.safetensors"
    with pytest.raises(NodeError, match="no checkpoint chosen"):
        resolve_model_path("", "checkpoints", settings)


def test_list_models_offers_files_and_diffusers_folders(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "a.safetensors").write_bytes(b"x")
    (tmp_path / "sub" / "b.ckpt").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a model")
    pipeline = tmp_path / "sub" / "deeper" / "pipe"
    (pipeline / "unet").mkdir(parents=True)
    (pipeline / "model_index.json").write_text("{}")
    (pipeline / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    listed = list_models("checkpoints", RunSettings(model_folders={"checkpoints": [tmp_path]}))
    assert listed == ["a.safetensors", "sub/b.ckpt", "sub/deeper/pipe"]


def test_the_bundled_pack_offers_its_model_after_the_users_own_folders(tmp_path):
    from nodeflow.host.settings import build_run_settings
    from nodeflow.model.registry import default_registry

    (tmp_path / "mine.safetensors").write_bytes(b"x")
    settings = build_run_settings(default_registry(), allow_paths=(), environ={"NODEFLOW_MODELS": str(tmp_path),
                                                                                "NODEFLOW_CONFIG_DIR": "/nonexistent"})
    assert settings.folders("checkpoints")[0] == tmp_path
    assert list_models("checkpoints", settings) == ["mine.safetensors", "shapes"]  # the pack's folder holds models only


# -- pickle safety -------------------------------------------------------------------------------


class _Payload:
    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_checkpoint_with_code_is_refused_without_running_it(models_dir, tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    torch.save({"state_dict": {"x": torch.zeros(1)}, "evil": payload}, tmp_path / "evil.ckpt")
    ctx = RunContext(settings=RunSettings(model_folders={"checkpoints": [str(tmp_path)]}))
    with pytest.raises(NodeError, match="would run code from the file, which is never done"):
        Checkpoint().run(ctx, checkpoint="evil.ckpt", dtype="auto", prediction="auto")
    assert not marker.exists()


@pytest.mark.parametrize("name, reason", [("broken.safetensors", "not a readable"), ("broken.ckpt", "not a plain weights file")])
def test_unreadable_file_is_a_field_error(tmp_path, name, reason):
    (tmp_path / name).write_bytes(b"not a model at all")
    ctx = RunContext(settings=RunSettings(model_folders={"checkpoints": [str(tmp_path)]}))
    with pytest.raises(NodeError, match=f'field "checkpoint": {name}: .*{reason}'):
        Checkpoint().run(ctx, checkpoint=name, dtype="auto", prediction="auto")


def test_plain_pickled_state_dict_loads(models_dir, tmp_path):
    state = _loading.read_state_dict(models_dir / "sd1" / "tiny.safetensors")
    torch.save({"state_dict": state}, tmp_path / "tiny.ckpt")
    ctx = RunContext(settings=RunSettings(model_folders={"checkpoints": [str(tmp_path)]}))
    out = Checkpoint().run(ctx, checkpoint="tiny.ckpt", dtype="auto", prediction="auto")
    assert out["model"].family.name == "sd1"
