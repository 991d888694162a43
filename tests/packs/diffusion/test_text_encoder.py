"""The TextEncoder node: prompt weighting, 75-token windows, clip skip, equality with diffusers."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow import NodeError, RunContext, RunSettings  # noqa: E402
from nodes.diffusion.impl.prompt import parse_weights, weighted_tokens, windows  # noqa: E402
from nodes.diffusion.text import TextEncoder, encode_text  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd, shared_tiny_sd2, shared_tiny_sdxl  # noqa: E402


@pytest.fixture(scope="session")
def pipe(tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(shared_tiny_sd(tmp_path_factory), local_files_only=True, safety_checker=None)


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    from nodes.diffusion.loaders import Checkpoint

    folder = shared_tiny_sd(tmp_path_factory)
    ctx = RunContext(settings=RunSettings(model_folders={"checkpoints": [str(folder.parent)]}))
    return Checkpoint().run(ctx, checkpoint=folder.name, dtype="auto", prediction="auto")["clip"]


def encode(clip, text: str, clip_skip: int = 1) -> torch.Tensor:
    return TextEncoder().run(RunContext(), clip=clip, text=text, clip_skip=clip_skip).embeds


def diffusers_ids(pipe, text: str) -> torch.Tensor:
    return pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


# -- emphasis syntax ---------------------------------------------------------------------------

W = 1.1


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", [("", 1.0)]),
        ("a cat", [("a cat", 1.0)]),
        ("(a cat)", [("a cat", W)]),
        ("((cat))", [("cat", W * W)]),
        ("[cat]", [("cat", 1 / W)]),
        ("[[cat]]", [("cat", 1 / W / W)]),
        ("(cat:1.3)", [("cat", 1.3)]),
        ("(cat: 0.5 )", [("cat", 0.5)]),
        ("(cat:-1)", [("cat", -1.0)]),
        ("a (b (c:2) d) e", [("a ", 1.0), ("b ", W), ("c", 2 * W), (" d", W), (" e", 1.0)]),
        ("(a [b] c:1.5)", [("a ", 1.5), ("b", 1.5 / W), (" c", 1.5)]),
        (r"\(cat\)", [("(cat)", 1.0)]),
        (r"\[x\] \\", [("[x] \\", 1.0)]),
        ("(open", [("open", W)]),  # never closed: weights the rest
        ("[open", [("open", 1 / W)]),
        ("a) b] c", [("a) b] c", 1.0)]),  # closing with nothing open: plain text
        ("time: 3pm", [("time: 3pm", 1.0)]),
        ("(x:1.2) (y:1.2)", [("x", 1.2), (" ", 1.0), ("y", 1.2)]),
    ],
)
def test_emphasis_parsing(text, expected):
    got = parse_weights(text)
    assert [piece for piece, _ in got] == [piece for piece, _ in expected]
    assert [weight for _, weight in got] == pytest.approx([weight for _, weight in expected])


def test_window_layout_matches_diffusers_tokenization(pipe):
    tokenizer = pipe.tokenizer
    for text in ["", "a photo of a cat", "two words"]:
        [window] = windows(weighted_tokens(tokenizer, text), tokenizer.bos_token_id, tokenizer.eos_token_id, 0)
        expected = tokenizer(text, padding="max_length", max_length=77).input_ids
        end = expected.index(tokenizer.eos_token_id)
        # start, text, end, then padding (here id 0, as SD 2.x / SDXL's second encoder pad)
        assert window.ids[: end + 1] == expected[: end + 1] and set(window.ids[end + 1 :]) <= {0}
        assert len(window.ids) == len(window.weights) == 77


# -- equality with diffusers -------------------------------------------------------------------


@pytest.mark.parametrize("text", ["a photo of a cat", "", "Mixed CASE, punctuation: 3.5 apples!"])
def test_plain_prompts_equal_diffusers_encode_prompt(clip, pipe, text):
    expected, negative = pipe.encode_prompt(text, "cpu", 1, True, negative_prompt="")
    assert torch.equal(encode(clip, text), expected)
    assert torch.equal(encode(clip, ""), negative)


def test_escaped_brackets_are_literal_text(clip, pipe):
    with torch.no_grad():
        expected = pipe.text_encoder(diffusers_ids(pipe, "a (cat)")).last_hidden_state
    assert torch.equal(encode(clip, r"a \(cat\)"), expected)


# -- weighting ---------------------------------------------------------------------------------


def test_weight_scales_the_token_and_restores_the_mean(clip):
    plain, weighted = encode(clip, "a cat"), encode(clip, "a (cat:1.5)")
    assert not torch.equal(plain, weighted)
    assert weighted.mean().item() == pytest.approx(plain.mean().item(), rel=1e-4)
    # positions: 0 start, 1 "a", 2 "cat"; every token is rescaled by the same factor
    rescale = weighted[0, 1] / plain[0, 1]
    assert torch.allclose(weighted[0, 2] / plain[0, 2], 1.5 * rescale, rtol=1e-4)
    assert torch.allclose(rescale, rescale[0].expand_as(rescale), rtol=1e-4)


def test_weight_one_is_exactly_the_plain_prompt(clip):
    assert torch.equal(encode(clip, "a (cat:1.0)"), encode(clip, "a cat"))


# -- long prompts --------------------------------------------------------------------------------


def test_long_prompt_is_encoded_in_75_token_windows(clip):
    words = ["cat", "dog", "red", "blue"] * 50  # 200 single-token words
    tokens = weighted_tokens(clip.tokenizers[0], " ".join(words))
    assert sum(map(len, tokens)) == 200
    embeds = encode(clip, " ".join(words))
    assert embeds.shape == (1, 3 * 77, 32)
    assert torch.equal(embeds[:, :77], encode(clip, " ".join(words[:75])))
    assert torch.equal(embeds[:, 77:154], encode(clip, " ".join(words[75:150])))


def test_break_starts_a_new_window(clip):
    embeds = encode(clip, "a cat BREAK a dog")
    assert embeds.shape == (1, 154, 32)
    assert torch.equal(embeds[:, :77], encode(clip, "a cat"))
    assert torch.equal(embeds[:, 77:], encode(clip, "a dog"))


# -- clip skip ---------------------------------------------------------------------------------


def test_clip_skip_two_reads_the_penultimate_layer_through_the_final_norm(clip, pipe):
    text = "a photo of a cat"
    with torch.no_grad():
        hidden = pipe.text_encoder(diffusers_ids(pipe, text), output_hidden_states=True).hidden_states
        expected = pipe.text_encoder.final_layer_norm(hidden[-2])
    skipped = encode(clip, text, clip_skip=2)
    assert torch.equal(skipped, expected)
    assert not torch.allclose(skipped, encode(clip, text, clip_skip=1))


def test_clip_skip_beyond_the_encoder_depth_is_a_field_error(clip):
    with pytest.raises(NodeError, match='field "clip_skip"'):
        encode(clip, "a cat", clip_skip=4)  # the tiny encoder has 3 layers


def test_node_declares_its_fields():
    inputs = TextEncoder.inputs
    assert list(inputs) == ["clip", "text", "clip_skip"]
    assert inputs["text"].multiline and inputs["clip_skip"].default == 1
    assert (inputs["clip_skip"].min, inputs["clip_skip"].max) == (1, 12)
    assert [o.data_type for o in TextEncoder.outputs] == ["CONDITIONING"]


def test_encode_text_gives_no_pooled_output_for_sd1(clip):
    cond = encode_text(clip, "a cat")
    assert cond.pooled is None and cond.embeds.shape == (1, 77, 32)


def test_sd2_pads_with_zero_and_equals_diffusers_encode_prompt(tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    from nodes.diffusion.loaders import Checkpoint

    folder = shared_tiny_sd2(tmp_path_factory)
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None)
    ctx = RunContext(settings=RunSettings(model_folders={"checkpoints": [str(folder.parent)]}))
    clip = Checkpoint().run(ctx, checkpoint=folder.name, dtype="auto", prediction="auto")["clip"]
    embeds, negative = pipe.encode_prompt("a photo of a cat", "cpu", 1, True, negative_prompt="")
    assert clip.pad_token_ids == [0]
    assert torch.equal(encode(clip, "a photo of a cat"), embeds)
    assert torch.equal(encode(clip, ""), negative)


# -- SDXL: two encoders, penultimate layers side by side, pooled from the second ---------------


@pytest.fixture(scope="session")
def sdxl(tmp_path_factory):
    from diffusers import StableDiffusionXLPipeline

    from nodes.diffusion.loaders import Checkpoint

    folder = shared_tiny_sdxl(tmp_path_factory)
    ctx = RunContext(settings=RunSettings(model_folders={"checkpoints": [str(folder.parent)]}))
    clip = Checkpoint().run(ctx, checkpoint=folder.name, dtype="auto", prediction="auto")["clip"]
    return clip, StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True)


@pytest.mark.parametrize("text", ["a photo of a cat", ""])
def test_sdxl_prompt_equals_diffusers_encode_prompt(sdxl, text):
    clip, pipe = sdxl
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        text, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=""
    )
    cond, empty = encode_text(clip, text), encode_text(clip, "")
    assert cond.embeds.shape == (1, 77, 32 + 64) and cond.pooled.shape == (1, 64)
    assert torch.equal(cond.embeds, embeds) and torch.equal(cond.pooled, pooled)
    assert torch.equal(empty.embeds, negative) and torch.equal(empty.pooled, negative_pooled)


def test_sdxl_long_prompt_pools_the_first_window(sdxl):
    clip, _ = sdxl
    words = ["cat", "dog"] * 50  # 100 tokens: two windows
    cond = encode_text(clip, " ".join(words))
    assert cond.embeds.shape == (1, 154, 96)
    assert torch.equal(cond.pooled, encode_text(clip, " ".join(words[:75])).pooled)
    assert not torch.equal(cond.pooled, encode_text(clip, " ".join(words[75:])).pooled)


def test_sdxl_clip_skip_moves_both_encoders_one_layer_down(sdxl):
    clip, pipe = sdxl
    ids = [pipe.tokenizer("a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids,
           pipe.tokenizer_2("a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids]
    with torch.no_grad():
        layers = [enc(i, output_hidden_states=True).hidden_states for enc, i in zip((pipe.text_encoder, pipe.text_encoder_2), ids)]
    expected = torch.cat([layers[0][-3], layers[1][-3]], dim=-1)
    assert torch.equal(encode_text(clip, "a cat", clip_skip=2).embeds, expected)
