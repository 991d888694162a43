"""Model patches on the tiny SD model: Perturbed-Attention Guidance equals diffusers' PAG
pipeline, Rescale CFG works in v space, FreeU scales the decoder as the paper's rule says,
Differential Diffusion thresholds the mask by the run's progress; and none of them
changes the shared UNet that the unpatched model keeps sampling with."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nodes.diffusion.impl  # noqa: E402,F401  (torchvision shim before diffusers' pipelines)
from nodeflow import RunContext, RunSettings  # noqa: E402
from nodes.diffusion.impl import patches  # noqa: E402
from nodes.diffusion.impl.samplers import make_scheduler  # noqa: E402
from nodes.diffusion.loaders import Checkpoint  # noqa: E402
from nodes.diffusion.model_ops import ModelSampling  # noqa: E402
from nodes.diffusion.model_patches import (  # noqa: E402
    DeepShrink, DifferentialDiffusion, FreeU, PerturbedAttentionGuidance, RescaleCFG, SelfAttentionGuidance,
)
from nodes.diffusion.sampling import CFG, Noise, Sampler  # noqa: E402
from nodes.diffusion.text import TextEncoder  # noqa: E402
from nodes.diffusion.types import FreeUScaling, Latent  # noqa: E402
from nodes.diffusion.vae import VAEDecode  # noqa: E402
from tests.support import FIXTURES  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402

PROMPT, NEGATIVE, SEED, STEPS = "a red circle on a blue background", "a green background", 1234, 4


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return shared_tiny_sd(tmp_path_factory)


@pytest.fixture(scope="module")
def parts(tiny_sd):
    ctx = RunContext(device="cpu", settings=RunSettings(model_folders={"checkpoints": [tiny_sd.parent]}))
    loaded = Checkpoint().run(ctx, checkpoint=tiny_sd.name, dtype="fp32", prediction="auto")
    encode = TextEncoder()
    loaded["positive"] = encode.run(RunContext(), clip=loaded["clip"], text=PROMPT, clip_skip=1)
    loaded["negative"] = encode.run(RunContext(), clip=loaded["clip"], text=NEGATIVE, clip_skip=1)
    return loaded


def _latent(side: int = 16) -> Latent:
    return Latent(torch.zeros(1, 4, side, side))


def _sample(parts, model, latent=None, scale=7.5, rescale=0.0, sampler="ddim", steps=STEPS, denoise=1.0):
    guider = CFG().run(RunContext(), model, parts["positive"], parts["negative"], scale, rescale)
    return Sampler().run(RunContext(), noise=Noise().run(RunContext(), seed=SEED), guider=guider,
                         latent=latent or _latent(), sampler=sampler, schedule="normal", steps=steps,
                         denoise=denoise, eta=0.0).samples


def _decode(parts, latent):
    return VAEDecode().run(RunContext(), latent=latent, vae=parts["vae"], tiling="off", tile_size=512)


def _prediction(model, parts, x, t):
    """One guided prediction with the base model, to check the shared UNet is as it was."""
    guider = CFG().run(RunContext(), model, parts["positive"], parts["negative"], 7.0, 0.0)
    with torch.inference_mode():
        return guider.bind(x, sigma_of=lambda _: 1.0)(x, t)


# ------------------------------------------------------------------ Perturbed-Attention Guidance
def test_pag_image_equals_diffusers_pag_pipeline_on_the_middle_block(parts, tiny_sd):
    from diffusers import DDIMScheduler, StableDiffusionPAGPipeline

    model = PerturbedAttentionGuidance().run(RunContext(), parts["model"], scale=3.0)
    latent = Latent(_sample(parts, model))
    ours = _decode(parts, latent).numpy()

    pipe = StableDiffusionPAGPipeline.from_pretrained(tiny_sd, local_files_only=True, safety_checker=None,
                                                      pag_applied_layers=["mid"])
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=7.5, pag_scale=3.0,
                     generator=torch.Generator("cpu").manual_seed(SEED), height=32, width=32, output_type="np").images
    plain = _decode(parts, Latent(_sample(parts, parts["model"]))).numpy()
    assert ours.shape == reference.shape == (1, 32, 32, 3)
    assert np.abs(ours - reference).max() <= 1e-4
    assert np.abs(ours - plain).max() > 1e-3  # and it did something


def test_pag_leaves_the_shared_unet_and_a_scale_of_zero_changes_nothing(parts):
    unet = parts["model"].unet
    x, t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3)), torch.tensor(500)
    before = _prediction(parts["model"], parts, x, t)
    processors = [block.attn1.processor for block in unet.mid_block.attentions[0].transformer_blocks]
    _sample(parts, PerturbedAttentionGuidance().run(RunContext(), parts["model"], scale=3.0), steps=2)
    assert [block.attn1.processor for block in unet.mid_block.attentions[0].transformer_blocks] == processors
    assert torch.equal(_prediction(parts["model"], parts, x, t), before)
    off = PerturbedAttentionGuidance().run(RunContext(), parts["model"], scale=0.0)
    assert torch.equal(_sample(parts, off, steps=2), _sample(parts, parts["model"], steps=2))


def test_the_identity_self_attention_returns_each_tokens_value(parts):
    attention = parts["model"].unet.mid_block.attentions[0].transformer_blocks[0].attn1
    tokens = torch.randn(2, 16, attention.to_v.in_features)
    with torch.inference_mode():
        normal = attention(tokens)
        with patches.identity_self_attention(parts["model"].unet):
            identity = attention(tokens)
        expected = attention.to_out[0](attention.to_v(tokens))
    torch.testing.assert_close(identity, expected)
    assert not torch.allclose(normal, identity)


# ------------------------------------------------------------------ Rescale CFG
def test_rescale_cfg_on_a_v_prediction_model_is_the_cfg_nodes_rescale(parts):
    v_model = ModelSampling().run(RunContext(), parts["model"], prediction="v_prediction", zero_snr=False)
    patched = RescaleCFG().run(RunContext(), v_model, multiplier=0.7)
    assert torch.equal(_sample(parts, patched, scale=9.0), _sample(parts, v_model, scale=9.0, rescale=0.7))


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_the_conversion_to_v_agrees_with_diffusers_clean_image_estimate(kind):
    """v = a eps - s x0: the x0 diffusers' DDIM step derives from a prediction of either
    kind is the x0 of that prediction's v (and back)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=kind,
                              clip_sample=False)
    scheduler.set_timesteps(10)
    t = int(scheduler.timesteps[3])
    alpha_bar = float(scheduler.alphas_cumprod[t])
    sigma = ((1 - alpha_bar) / alpha_bar) ** 0.5
    generator = torch.Generator().manual_seed(0)
    x, prediction = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 4, 8, 8, generator=generator)
    x0 = scheduler.step(prediction, t, x).pred_original_sample
    a, s = alpha_bar ** 0.5, (1 - alpha_bar) ** 0.5
    v = patches.to_v(prediction, x, sigma, kind)
    torch.testing.assert_close((a * x - s * v).double(), x0.double(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patches.from_v(v, x, sigma, kind), prediction, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patches.to_v(x0, x, sigma, "sample"), v, atol=1e-4, rtol=1e-4)


def test_rescale_cfg_on_an_epsilon_model_matches_the_spread_of_the_prompts_v(parts):
    unet = parts["model"].unet
    x, t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(5)), torch.tensor(600)
    sigma = 1.7
    guider = CFG().run(RunContext(), RescaleCFG().run(RunContext(), parts["model"], multiplier=1.0),
                       parts["positive"], parts["negative"], 8.0, 0.0)
    unpatched = CFG().run(RunContext(), parts["model"], parts["positive"], parts["negative"], 8.0, 0.0)
    with torch.inference_mode():
        rescaled = guider.bind(x, sigma_of=lambda _: sigma)(x, t)
        plain = unpatched.bind(x)(x, t)
        cond = unet(x, t, encoder_hidden_states=parts["positive"].embeds).sample
    spread = patches.to_v(rescaled, x, sigma, "epsilon").std()
    torch.testing.assert_close(spread, patches.to_v(cond, x, sigma, "epsilon").std(), atol=1e-5, rtol=1e-4)
    assert (rescaled - plain).abs().max() > 1e-3
    none = CFG().run(RunContext(), RescaleCFG().run(RunContext(), parts["model"], multiplier=0.0),
                     parts["positive"], parts["negative"], 8.0, 0.0)
    with torch.inference_mode():
        torch.testing.assert_close(none.bind(x, sigma_of=lambda _: sigma)(x, t), plain, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ FreeU
def _three_width_unet():
    """A UNet whose decoder has the widths FreeU's rule tells apart: 4x (32) and 2x (16)
    the first block's (8), and 8 itself."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"), cross_attention_dim=16,
        attention_head_dim=4, norm_num_groups=4).eval()


def _low_frequencies_scaled_numpy(skip: np.ndarray, scale: float) -> np.ndarray:
    spectrum = np.fft.fftshift(np.fft.fft2(skip.astype(np.float64)), axes=(-2, -1))
    row, col = spectrum.shape[-2] // 2, spectrum.shape[-1] // 2
    spectrum[..., row - 1:row + 1, col - 1:col + 1] *= scale
    return np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(-2, -1))).real


@pytest.mark.parametrize("adaptive", [False, True])
def test_freeu_scales_each_decoder_input_by_the_width_of_its_backbone_features(adaptive):
    unet = _three_width_unet()
    patch = FreeUScaling(b1=1.5, b2=1.25, s1=0.5, s2=0.8, adaptive=adaptive)
    resnets = [resnet for block in unet.up_blocks for resnet in block.resnets]
    # The backbone width entering each decoder resnet (the rest is skip features), and what
    # the rule gives it: 4x the first width -> (b1, s1), 2x -> (b2, s2), else nothing.
    expected = [(32, (1.5, 0.5)), (32, (1.5, 0.5)), (32, (1.5, 0.5)), (16, (1.25, 0.8)), (16, (1.25, 0.8)), (8, None)]
    seen: dict[int, list] = {i: [] for i in range(len(resnets))}
    handles = [resnet.register_forward_pre_hook(lambda m, args, i=i: seen[i].append(args[0].clone()))
               for i, resnet in enumerate(resnets)]
    x, t, text = torch.randn(1, 4, 8, 8), torch.tensor(10), torch.randn(1, 3, 16)
    with torch.inference_mode(), patches.freeu(unet, [patch]):
        late = [resnet.register_forward_pre_hook(lambda m, args, i=i: seen[i].append(args[0].clone()))
                for i, resnet in enumerate(resnets)]
        unet(x, t, encoder_hidden_states=text)
    for handle in handles + late:
        handle.remove()
    for i, (width, factors) in enumerate(expected):
        before, after = (tensor.numpy() for tensor in seen[i])
        if factors is None:
            assert np.array_equal(before, after), i
            continue
        half = width // 2
        backbone = before[:, :half]
        if adaptive:
            mean = before[:, :width].mean(axis=1, keepdims=True)
            low, high = mean.min(axis=(2, 3), keepdims=True), mean.max(axis=(2, 3), keepdims=True)
            weight = (factors[0] - 1) * (mean - low) / (high - low) + 1
        else:
            weight = factors[0]
        np.testing.assert_allclose(after[:, :half], backbone * weight, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(after[:, half:width], before[:, half:width])
        np.testing.assert_allclose(after[:, width:], _low_frequencies_scaled_numpy(before[:, width:], factors[1]),
                                   rtol=1e-4, atol=1e-5)
    assert all(not resnet._forward_pre_hooks for resnet in resnets)  # and nothing is left on the UNet


def test_freeu_changes_the_image_and_the_base_model_samples_as_before(parts):
    base = _sample(parts, parts["model"], steps=3)
    patched = FreeU().run(RunContext(), parts["model"], variant="v2", b1=1.3, b2=1.4, s1=0.9, s2=0.2)
    assert (_sample(parts, patched, steps=3) - base).abs().max() > 1e-3
    assert torch.equal(_sample(parts, parts["model"], steps=3), base)


# ------------------------------------------------------------------ Differential Diffusion
def _masked_latent(value: float, picture: torch.Tensor) -> Latent:
    return Latent(picture, noise_mask=torch.full((1, 16, 16), value))


@pytest.fixture(scope="module")
def picture():
    return torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(9))


def test_a_uniform_mask_under_differential_diffusion_is_img2img_from_where_the_run_reaches_it(parts, picture):
    """Mask 0.5 everywhere: each position is kept (re-noised) until the run's remaining share
    falls to 0.5, then free; that is image-to-image from that step on."""
    steps, mask = 10, 0.5
    model = DifferentialDiffusion().run(RunContext(), parts["model"], strength=1.0)
    ours = _sample(parts, model, _masked_latent(mask, picture), steps=steps)

    scheduler = make_scheduler("ddim", "normal", parts["model"].scheduler_config)
    scheduler.set_timesteps(steps)
    timesteps = [float(t) for t in scheduler.timesteps]
    first_free = next(i for i in range(steps) if timesteps[i + 1] / timesteps[0] <= mask)
    img2img = _sample(parts, parts["model"], Latent(picture), steps=steps, denoise=(steps - first_free) / steps)
    assert 0 < first_free < steps - 1
    assert torch.equal(ours, img2img)
    soft = _sample(parts, parts["model"], _masked_latent(mask, picture), steps=steps)  # the soft mask as it is
    assert (soft - ours).abs().max() > 1e-3


def test_a_binary_mask_is_the_same_with_and_without_differential_diffusion(parts, picture):
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 1.0
    latent = Latent(picture, noise_mask=mask)
    model = DifferentialDiffusion().run(RunContext(), parts["model"], strength=1.0)
    ours = _sample(parts, model, latent, steps=5)
    assert torch.equal(ours, _sample(parts, parts["model"], latent, steps=5))
    assert torch.equal(ours[..., 8:], picture[..., 8:])  # the unmasked half is the input's


# ------------------------------------------------------------------ ComfyUI
def test_comfyuis_model_patches_import_onto_the_patch_nodes(tmp_path, models_settings):
    import nodeflow.api as api

    flow = api.open(FIXTURES / "comfyui" / "model_patches_api.json", device="cpu")
    values = {node.type: node.values for node in flow.graph.nodes.values()}
    assert values["FreeU"] == {"variant": "v2", "b1": 1.2, "b2": 1.3, "s1": 0.8, "s2": 0.3}
    assert values["RescaleCFG"] == {"multiplier": 0.6}
    assert values["PerturbedAttentionGuidance"] == {"scale": 2.5}
    assert values["DifferentialDiffusion"] == {"strength": 1.0}
    assert values["SelfAttentionGuidance"] == {"scale": 0.6, "blur_sigma": 1.5}
    assert values["DeepShrink"]["upscale_method"] == "nearest" and values["DeepShrink"]["block_number"] == 3
    assert values["UNetSelfAttentionMultiply"] == {"q": 1.0, "k": 1.1, "v": 1.0, "out": 0.9}
    assert values["EpsilonScale"] == {"scaling_factor": 1.004}
    assert "TorchCompileModel" not in values  # looked through: the model goes straight on
    result = flow.run(output_dir=tmp_path, device="cpu", settings=models_settings)
    assert result.ok, result.error or result.problems


@pytest.fixture
def models_settings(tiny_sd):
    return RunSettings(model_folders={"checkpoints": [tiny_sd.parent]})


def test_freeu_v1_files_without_values_get_the_first_versions_defaults():
    from nodeflow.files.open import workflow_from_dict
    from nodeflow.model.registry import default_registry

    prompt = json.loads((FIXTURES / "comfyui" / "model_patches_api.json").read_text())
    prompt["10"] = {"class_type": "FreeU", "inputs": {"model": ["1", 0]}}
    workflow = workflow_from_dict(prompt, default_registry())
    values = [node.values for node in workflow.graph.nodes.values() if node.type == "FreeU"]
    assert {"variant": "v1", "b1": 1.1, "b2": 1.2, "s1": 0.9, "s2": 0.2} in values


# ------------------------------------------------------------------ Self-Attention Guidance
def test_sag_image_equals_diffusers_sag_pipeline(parts, tiny_sd):
    from diffusers import DDIMScheduler
    from diffusers.pipelines.deprecated.stable_diffusion_sag.pipeline_stable_diffusion_sag import StableDiffusionSAGPipeline

    model = SelfAttentionGuidance().run(RunContext(), parts["model"], scale=0.75, blur_sigma=1.0)  # diffusers' fixed blur
    ours = _decode(parts, Latent(_sample(parts, model))).numpy()
    pipe = StableDiffusionSAGPipeline.from_pretrained(tiny_sd, local_files_only=True, safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=7.5, sag_scale=0.75,
                     generator=torch.Generator("cpu").manual_seed(SEED), height=32, width=32, output_type="np").images
    plain = _decode(parts, Latent(_sample(parts, parts["model"]))).numpy()
    assert np.abs(ours - reference).max() <= 1e-4
    assert np.abs(ours - plain).max() > 1e-3


def test_sag_runs_the_negative_pass_at_scale_one_and_leaves_the_shared_unet(parts):
    unet = parts["model"].unet
    x, t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3)), torch.tensor(500)
    before = _prediction(parts["model"], parts, x, t)
    processor = unet.mid_block.attentions[0].transformer_blocks[0].attn1.processor
    model = SelfAttentionGuidance().run(RunContext(), parts["model"], scale=0.5, blur_sigma=2.0)
    assert (_sample(parts, model, scale=1.0, steps=2) - _sample(parts, parts["model"], scale=1.0, steps=2)).abs().max() > 1e-4
    assert unet.mid_block.attentions[0].transformer_blocks[0].attn1.processor is processor
    assert not unet.mid_block.attentions[0]._forward_pre_hooks
    assert torch.equal(_prediction(parts["model"], parts, x, t), before)


def test_sag_without_a_negative_prompt_is_refused_naming_the_guider(parts):
    from nodeflow import NodeError
    from nodes.diffusion.sampling import BasicGuider

    model = SelfAttentionGuidance().run(RunContext(), parts["model"], scale=0.5, blur_sigma=2.0)
    guider = BasicGuider().run(RunContext(), model, parts["positive"])
    with pytest.raises(NodeError, match="Self-Attention Guidance works on the negative prompt") as error:
        Sampler().run(RunContext(), noise=Noise().run(RunContext(), seed=1), guider=guider, latent=_latent(),
                      sampler="euler", schedule="normal", steps=2, denoise=1.0, eta=0.0)
    assert error.value.field == "guider"


# ------------------------------------------------------------------ Deep Shrink
def _shrink(parts, **settings):
    values = dict(block_number=parts["model"].unet.config.layers_per_block + 1, downscale_factor=2.0,
                  start_percent=0.0, end_percent=0.35, downscale_after_skip=True, downscale_method="bicubic",
                  upscale_method="bicubic")
    values.update(settings)
    return DeepShrink().run(RunContext(), parts["model"], **values)


def _sizes_inside(unet, patch, x, t):
    """The middle block's input size and the first level's skip sizes in one UNet call under ``patch``."""
    seen: dict[str, Any] = {}

    def middle(module, args):
        seen.setdefault("middle", tuple(args[0].shape[-2:]))

    def skips(module, args, out):
        seen.setdefault("skips", [tuple(s.shape[-2:]) for s in out[1]])

    hooks = [unet.mid_block.register_forward_pre_hook(middle), unet.down_blocks[0].register_forward_hook(skips)]
    try:
        with torch.inference_mode(), patches.deep_shrink(unet, patch, 1000):
            out = unet(x, t, encoder_hidden_states=torch.randn(1, 3, unet.config.cross_attention_dim)).sample
    finally:
        for hook in hooks:
            hook.remove()
    return seen, out


@pytest.mark.parametrize("after_skip, skip_side", [(True, 8), (False, 4)])
def test_deep_shrink_halves_the_features_after_the_first_level_and_keeps_the_skip_as_asked(parts, after_skip, skip_side):
    """The tiny UNet's first level ends (its downsampler) at input block layers + 1: 16 -> 8
    normally, 4 shrunk; the skip kept there is 8 after the skip, 4 before it."""
    unet = parts["model"].unet
    patch = _shrink(parts, downscale_after_skip=after_skip).patches[-1]
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    early, out = _sizes_inside(unet, patch, x, torch.tensor(900))  # in the window (the first 35%)
    assert early["middle"] == (4, 4) and early["skips"][-1] == (skip_side, skip_side)
    assert out.shape == x.shape and torch.isfinite(out).all()
    late, _ = _sizes_inside(unet, patch, x, torch.tensor(100))  # outside it
    assert late["middle"] == (8, 8) and late["skips"][-1] == (8, 8)
    assert all(not module._forward_pre_hooks and not module._forward_hooks for module in unet.modules())


def test_deep_shrink_changes_the_first_steps_only_and_leaves_the_model(parts):
    base = _sample(parts, parts["model"], steps=4)
    assert (_sample(parts, _shrink(parts), steps=4) - base).abs().max() > 1e-3
    assert torch.equal(_sample(parts, _shrink(parts, downscale_factor=1.0), steps=4), base)
    assert torch.equal(_sample(parts, _shrink(parts, start_percent=0.6, end_percent=0.7), steps=4), base)  # no step in it
    assert torch.equal(_sample(parts, parts["model"], steps=4), base)


def test_deep_shrink_names_a_block_the_unet_does_not_have(parts):
    from nodeflow import NodeError

    with pytest.raises(NodeError, match="this UNet has input blocks 0-") as error:
        _shrink(parts, block_number=30)
    assert error.value.field == "block_number"


# ------------------------------------------------------------------ Perp-Neg
def _perp_neg(parts, negative, empty, scale=6.0, neg_scale=1.0):
    from nodes.diffusion.sampling import PerpNegGuider

    return PerpNegGuider().run(RunContext(), parts["model"], parts["positive"], negative, empty, scale, neg_scale)


def test_perp_neg_keeps_only_the_negatives_part_perpendicular_to_the_positive():
    generator = torch.Generator().manual_seed(4)
    empty, cond, uncond = (torch.randn(2, 4, 8, 8, generator=generator) for _ in range(3))
    guided = patches.perpendicular_guidance(empty, cond, uncond, 5.0, 1.0)
    pushed = (empty + 5.0 * (cond - empty) - guided) / 5.0  # the perpendicular part that was pushed away from
    positive = cond - empty
    assert (pushed * positive).sum(dim=(1, 2, 3)).abs().max() < 1e-3  # orthogonal to the positive, per image
    # a negative along the positive is not pushed away from at all
    along = patches.perpendicular_guidance(empty, cond, empty + 0.5 * positive, 5.0, 1.0)
    torch.testing.assert_close(along, empty + 5.0 * positive)


def test_perp_neg_with_a_negative_that_means_the_positive_does_not_cancel_it(parts):
    """With CFG, a negative equal to the positive cancels guidance (the prompt's own
    prediction); with Perp-Neg it is parallel, so nothing is pushed away: plain CFG from
    the empty prompt."""
    encode = TextEncoder()
    empty = encode.run(RunContext(), clip=parts["clip"], text="", clip_skip=1)
    x, t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(6)), torch.tensor(400)
    with torch.inference_mode():
        perp = _perp_neg(parts, parts["positive"], empty).bind(x)(x, t)
        from_empty = CFG().run(RunContext(), parts["model"], parts["positive"], empty, 6.0, 0.0).bind(x)(x, t)
    torch.testing.assert_close(perp, from_empty, atol=1e-4, rtol=1e-4)
    with torch.inference_mode():
        other = _perp_neg(parts, parts["negative"], empty).bind(x)(x, t)
    assert (other - from_empty).abs().max() > 1e-3


def test_comfyuis_perp_neg_guider_and_model_patch_import_and_run(tmp_path, models_settings):
    import nodeflow.api as api

    flow = api.open(FIXTURES / "comfyui" / "perpneg_api.json", device="cpu")
    types = sorted(node.type for node in flow.graph.nodes.values())
    assert "PerpNegGuider" in types and "PerpNeg" in types
    result = flow.run(output_dir=tmp_path, device="cpu", settings=models_settings)
    assert result.ok, result.error or result.problems


# ------------------------------------------------------------------ attention scaling, epsilon scaling
def test_cross_attention_values_at_zero_make_the_prompt_irrelevant(parts):
    from nodes.diffusion.model_patches import UNetCrossAttentionMultiply

    model = UNetCrossAttentionMultiply().run(RunContext(), parts["model"], q=1.0, k=1.0, v=0.0, out=1.0)
    latent = _latent()
    blind = _sample(parts, model, latent, steps=2)
    other = CFG().run(RunContext(), model, parts["negative"], parts["positive"], 7.5, 0.0)  # prompts swapped
    swapped = Sampler().run(RunContext(), noise=Noise().run(RunContext(), seed=SEED), guider=other, latent=latent,
                            sampler="ddim", schedule="normal", steps=2, denoise=1.0, eta=0.0).samples
    torch.testing.assert_close(blind, swapped, atol=1e-5, rtol=1e-5)
    base = _sample(parts, parts["model"], latent, steps=2)
    assert (blind - base).abs().max() > 1e-3
    assert all(not m._forward_hooks for m in parts["model"].unet.modules())
    same = UNetCrossAttentionMultiply().run(RunContext(), parts["model"], q=1.0, k=1.0, v=1.0, out=1.0)
    assert torch.equal(_sample(parts, same, latent, steps=2), base)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_epsilon_scaling_divides_the_noise_the_prediction_implies(parts, kind):
    from nodes.diffusion.model_patches import EpsilonScale

    model = ModelSampling().run(RunContext(), parts["model"], prediction=kind, zero_snr=False)
    scaled = EpsilonScale().run(RunContext(), model, scaling_factor=1.25)
    x, t, sigma = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(8)), torch.tensor(300), 0.8
    with torch.inference_mode():
        plain = CFG().run(RunContext(), model, parts["positive"], parts["negative"], 5.0, 0.0).bind(x)(x, t)
        ours = CFG().run(RunContext(), scaled, parts["positive"], parts["negative"], 5.0, 0.0).bind(
            x, sigma_of=lambda _: sigma)(x, t)
    torch.testing.assert_close(patches.to_eps(ours, x, sigma, kind), patches.to_eps(plain, x, sigma, kind) / 1.25,
                               atol=1e-5, rtol=1e-5)


def test_the_ui_format_reads_the_patches_widgets_in_comfyuis_order(tmp_path, models_settings):
    import nodeflow.api as api

    flow = api.open(FIXTURES / "comfyui" / "model_patches_ui_v04.json", device="cpu")
    values = {node.type: node.values for node in flow.graph.nodes.values()}
    assert values["FreeU"] == {"variant": "v2", "b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}
    assert values["DeepShrink"] == {"block_number": 3, "downscale_factor": 2, "start_percent": 0, "end_percent": 0.35,
                                    "downscale_after_skip": True, "downscale_method": "bicubic",
                                    "upscale_method": "bicubic"}
    assert values["DifferentialDiffusion"] == {"strength": 1.0}  # saved before it had a strength
    result = flow.run(output_dir=tmp_path, device="cpu", settings=models_settings)
    assert result.ok, result.error or result.problems


@pytest.mark.parametrize("style", ["regular", "nested"])
def test_dual_cfg_with_the_negative_as_its_second_positive_is_plain_cfg(parts, style):
    from nodes.diffusion.sampling import DualCFGGuider

    x, t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(12)), torch.tensor(500)
    dual = DualCFGGuider().run(RunContext(), parts["model"], parts["positive"], parts["negative"], parts["negative"],
                               cfg_conds=6.0, cfg_cond2_negative=1.0 if style == "nested" else 3.0, style=style)
    with torch.inference_mode():
        ours = dual.bind(x)(x, t)
        plain = CFG().run(RunContext(), parts["model"], parts["positive"], parts["negative"], 6.0, 0.0).bind(x)(x, t)
    torch.testing.assert_close(ours, plain, atol=1e-4, rtol=1e-4)
    encode = TextEncoder()
    other = encode.run(RunContext(), clip=parts["clip"], text="a green triangle", clip_skip=1)
    with torch.inference_mode():
        three = DualCFGGuider().run(RunContext(), parts["model"], parts["positive"], other, parts["negative"],
                                    cfg_conds=6.0, cfg_cond2_negative=3.0, style=style).bind(x)(x, t)
    assert (three - plain).abs().max() > 1e-3
