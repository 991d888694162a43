"""How a model's output is read (x0, LCM) and merging two models block by block.

x0 mode reads the UNet's output as the clean latent, so one Euler step to sigma 0 returns
exactly what the UNet predicted; lcm mode marks an LCM-distilled model, which the lcm
sampler runs and other samplers refuse. Block merges take each block from the model
its ratio says: 1 is model1's weights exactly, 0 model2's, and only that block changes.
ComfyUI files with these nodes import onto them.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import replace

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow import NodeError, RunContext, RunSettings  # noqa: E402
from nodes.diffusion.loaders import Checkpoint  # noqa: E402
from nodes.diffusion.merge_blocks import SD1_BLOCKS, SDXL_BLOCKS, ModelMergeBlocks, ModelMergeSD1, ModelMergeSDXL  # noqa: E402
from nodes.diffusion.model_ops import ModelSampling  # noqa: E402
from nodes.diffusion.sampling import BasicGuider, Noise, Sampler  # noqa: E402
from tests.packs.diffusion.test_sampling import latent_for, parts, tiny_sd  # noqa: E402,F401  (fixtures)
from tests.support.tiny_models import shared_tiny_sdxl  # noqa: E402

CTX = RunContext()


def _other(model, seed: int):
    """The same architecture with other weights: model2 of a merge."""
    unet = copy.deepcopy(model.unet)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in unet.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    return replace(model, unet=unet)


def _weights(model):
    return model.unet.state_dict()


def test_x0_mode_reads_the_unets_output_as_the_clean_latent(parts):
    x0_model = ModelSampling().run(CTX, parts["model"], "sample", False)
    guider = BasicGuider().run(CTX, x0_model, parts["positive"])
    latent = latent_for(parts)
    out = Sampler().run(CTX, Noise().run(CTX, 4), guider, latent, "euler", "normal", 1, 1.0, 0.0).samples
    from nodes.diffusion.impl.samplers import make_scheduler

    scheduler = make_scheduler("euler", "normal", x0_model.scheduler_config)
    scheduler.set_timesteps(1)
    t = scheduler.timesteps[0]
    x = torch.randn(latent.samples.shape, generator=torch.Generator().manual_seed(4)) * scheduler.init_noise_sigma
    with torch.inference_mode():
        predicted = parts["model"].unet(scheduler.scale_model_input(x, t), t,
                                        encoder_hidden_states=parts["positive"].embeds, return_dict=False)[0]
    assert torch.allclose(out, predicted, atol=1e-5)
    eps = Sampler().run(CTX, Noise().run(CTX, 4), BasicGuider().run(CTX, parts["model"], parts["positive"]), latent,
                        "euler", "normal", 1, 1.0, 0.0).samples
    assert not torch.allclose(eps, predicted, atol=1e-2)


def test_lcm_mode_runs_with_the_lcm_sampler_and_refuses_the_others(parts):
    lcm_model = ModelSampling().run(CTX, parts["model"], "lcm", False)
    latent = latent_for(parts)
    run = lambda model, sampler: Sampler().run(  # noqa: E731
        CTX, Noise().run(CTX, 2), BasicGuider().run(CTX, model, parts["positive"]), latent, sampler, "normal", 2, 1.0,
        0.0).samples
    assert torch.equal(run(lcm_model, "lcm"), run(parts["model"], "lcm"))  # an epsilon model, LCM's scheduler
    with pytest.raises(NodeError) as refused:
        run(lcm_model, "euler")
    assert refused.value.field == "sampler" and "lcm" in str(refused.value)
    assert ModelSampling().run(CTX, lcm_model, "epsilon", False).sampling == ""


def test_block_ratios_take_each_block_from_the_model_they_name(parts):
    model1 = parts["model"]
    model2 = _other(model1, 1)
    first, second = _weights(model1), _weights(model2)
    same = ModelMergeBlocks().run(CTX, model1, model2, 1.0, 1.0, 1.0)
    assert all(torch.equal(v, first[k]) for k, v in _weights(same).items())
    swapped = ModelMergeBlocks().run(CTX, model1, model2, 0.0, 0.0, 0.0)
    assert all(torch.equal(v, second[k]) for k, v in _weights(swapped).items())

    mixed = _weights(ModelMergeBlocks().run(CTX, model1, model2, 0.0, 1.0, 0.25))
    for key, value in mixed.items():
        if key.startswith(("down_blocks.", "conv_in.", "time_embedding.")):
            assert torch.equal(value, second[key]), key  # input 0 (the time embedding follows it)
        elif key.startswith("mid_block."):
            assert torch.equal(value, first[key]), key
        else:  # up blocks and the final layer: out 0.25
            assert key.startswith(("up_blocks.", "conv_norm_out.", "conv_out.")), key
            assert torch.allclose(value, 0.25 * first[key] + 0.75 * second[key], atol=1e-6), key
    assert all(torch.equal(v, first[k]) for k, v in _weights(model1).items())  # the input is not changed


def test_sd1_block_ratios_follow_the_original_layout(parts):
    model1 = parts["model"]
    model2 = _other(model1, 3)
    first, second = _weights(model1), _weights(model2)
    ratios = {field: 1.0 for field in SD1_BLOCKS}
    # the tiny SD UNet: 2 down levels of 2 layers. Input block 1 is down level 0's first
    # layer (block 2 its second); middle block 1 the attention; output block 4 is up level
    # 1's second layer (of 3). Blocks 10 and 11 do not exist here: a 0 for them changes nothing.
    ratios.update(input_blocks_1=0.0, middle_block_1=0.0, output_blocks_4=0.0, input_blocks_10=0.0,
                  output_blocks_11=0.0)
    merged = _weights(ModelMergeSD1().run(CTX, model1, model2, **ratios))
    from_second = ("down_blocks.0.resnets.0.", "down_blocks.0.attentions.0.", "mid_block.attentions.0.",
                   "up_blocks.1.resnets.1.", "up_blocks.1.attentions.1.")
    for key, value in merged.items():
        expected = second if key.startswith(from_second) else first
        assert torch.equal(value, expected[key]), key
    assert any(k.startswith("up_blocks.1.attentions.1.") for k in merged)
    assert any(k.startswith("down_blocks.0.resnets.1.") for k in merged)  # input block 2, from model1


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    path = shared_tiny_sdxl(tmp_path_factory)
    ctx = RunContext(settings=RunSettings(model_folders={"checkpoints": [path.parent]}))
    return Checkpoint().run(ctx, path.name, "fp32", "auto")["model"]


def test_sdxl_block_ratios_follow_the_original_layout(tiny_sdxl):
    model1, model2 = tiny_sdxl, _other(tiny_sdxl, 2)
    first, second = _weights(model1), _weights(model2)
    ratios = {field: 1.0 for field in SDXL_BLOCKS}
    # the tiny SDXL UNet: 2 levels of 2 layers. Input blocks 1-2 are down level 0's layers,
    # 3 its downsampler, 4 down level 1's first layer; output block 1 is up level 0's
    # second (of 3); label_emb is the size embedding.
    ratios.update(input_blocks_3=0.0, input_blocks_4=0.0, output_blocks_1=0.0, label_emb=0.0)
    merged = _weights(ModelMergeSDXL().run(CTX, model1, model2, **ratios))
    from_second = ("down_blocks.0.downsamplers.", "down_blocks.1.resnets.0.", "down_blocks.1.attentions.0.",
                   "up_blocks.0.resnets.1.",
                   "up_blocks.0.attentions.1.", "add_embedding.")
    for key, value in merged.items():
        expected = second if key.startswith(from_second) else first
        assert torch.equal(value, expected[key]), key
    assert any(k.startswith("down_blocks.1.resnets.0.") for k in merged)


def test_comfyui_block_merges_and_sampling_modes_import(tmp_path):
    import nodeflow.api as api

    data = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
        "30": {"class_type": "ModelMergeBlocks", "inputs": {"model1": ["4", 0], "model2": ["4", 0], "input": 0.2,
                                                            "middle": 0.4, "out": 0.6}},
        "31": {"class_type": "ModelMergeSDXL", "inputs": {"model1": ["4", 0], "model2": ["30", 0],
                                                          **{b: 0.5 for b in SDXL_BLOCKS.values()},
                                                          "output_blocks.4": 0.1}},
        "32": {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["31", 0], "sampling": "x0", "zsnr": False}},
        "34": {"class_type": "ModelMergeSD1", "inputs": {"model1": ["4", 0], "model2": ["4", 0],
                                                         **{b: 0.5 for b in SD1_BLOCKS.values()},
                                                         "input_blocks.10.": 0.1}},
        "35": {"class_type": "ModelMergeSD2", "inputs": {"model1": ["4", 0], "model2": ["34", 0],
                                                         **{b: 0.5 for b in SD1_BLOCKS.values()}, "out.": 0.9}},
        "33": {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["31", 0], "sampling": "lcm", "zsnr": False}},
    }
    path = tmp_path / "merge.json"
    path.write_text(json.dumps(data))
    nodes = api.open(path, device="cpu").graph.nodes
    assert nodes["30"].type == "ModelMergeBlocks"
    assert [nodes["30"].values[k] for k in ("input", "middle", "out")] == [0.2, 0.4, 0.6]
    assert nodes["31"].type == "ModelMergeSDXL"
    assert (nodes["31"].values["output_blocks_4"], nodes["31"].values["time_embed"]) == (0.1, 0.5)
    assert (nodes["32"].values["prediction"], nodes["33"].values["prediction"]) == ("sample", "lcm")
    assert nodes["34"].type == nodes["35"].type == "ModelMergeSD1"
    assert (nodes["34"].values["input_blocks_10"], nodes["34"].values["input_blocks_1"]) == (0.1, 0.5)
    assert nodes["35"].values["out"] == 0.9
    data["32"]["inputs"]["sampling"] = "img_to_img"
    path.write_text(json.dumps(data))
    with pytest.raises(Exception, match="node 32 .ModelSamplingDiscrete.: sampling 'img_to_img' has no nodeflow"):
        api.open(path, device="cpu")


@pytest.fixture(scope="module")
def pipe(tiny_sd):
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(tiny_sd, local_files_only=True, safety_checker=None)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.mark.parametrize("prediction,sampler,schedule,scheduler_class,settings", [
    ("v_prediction", "euler", "karras", "EDMEulerScheduler", {}),
    ("edm", "dpmpp_2m", "exponential", "EDMDPMSolverMultistepScheduler",
     {"sigma_schedule": "exponential", "algorithm_type": "dpmsolver++", "solver_order": 2}),
])
def test_an_edm_model_samples_as_diffusers_edm_schedulers_do(parts, pipe, prediction, sampler, schedule,
                                                             scheduler_class, settings):
    import diffusers

    from nodes.diffusion.model_edm import ModelSamplingEDM
    from nodes.diffusion.sampling import CFG

    edm = ModelSamplingEDM().run(CTX, parts["model"], prediction, 80.0, 0.01)
    guider = CFG().run(CTX, edm, parts["positive"], parts["negative"], 5.0, 0.0)
    latent = latent_for(parts, side=32)
    ours = Sampler().run(CTX, Noise().run(CTX, 7), guider, latent, sampler, schedule, 4, 1.0, 0.0).samples
    sigma_data = 1.0 if prediction == "v_prediction" else 0.5
    pipe.scheduler = getattr(diffusers, scheduler_class)(
        sigma_min=0.01, sigma_max=80.0, sigma_data=sigma_data,
        prediction_type="v_prediction" if prediction == "v_prediction" else "epsilon", **settings)
    reference = pipe(prompt_embeds=parts["positive"].embeds, negative_prompt_embeds=parts["negative"].embeds,
                     num_inference_steps=4, guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(7),
                     height=32, width=32, output_type="latent").images
    assert torch.allclose(ours, reference, atol=1e-5, rtol=0)
    plain = Sampler().run(CTX, Noise().run(CTX, 7), CFG().run(CTX, parts["model"], parts["positive"], parts["negative"],
                                                            5.0, 0.0), latent, sampler, schedule, 4, 1.0, 0.0).samples
    assert not torch.allclose(ours, plain, atol=1e-2)
    with pytest.raises(NodeError) as refused:
        Sampler().run(CTX, Noise().run(CTX, 7), guider, latent, "lms", "normal", 4, 1.0, 0.0)
    assert refused.value.field == "sampler" and "euler" in str(refused.value)


def test_comfyui_continuous_edm_imports_and_refuses_what_diffusers_lacks(tmp_path):
    import nodeflow.api as api

    data = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
            "40": {"class_type": "ModelSamplingContinuousEDM",
                   "inputs": {"model": ["4", 0], "sampling": "v_prediction", "sigma_max": 120.0, "sigma_min": 0.002}}}
    path = tmp_path / "edm.json"
    path.write_text(json.dumps(data))
    node = api.open(path, device="cpu").graph.nodes["40"]
    assert (node.type, node.values["prediction"], node.values["sigma_max"]) == ("ModelSamplingEDM", "v_prediction", 120.0)
    data["40"]["inputs"]["sampling"] = "eps"
    path.write_text(json.dumps(data))
    with pytest.raises(Exception, match="sampling 'eps' has no nodeflow equivalent: diffusers' EDM schedulers"):
        api.open(path, device="cpu")
