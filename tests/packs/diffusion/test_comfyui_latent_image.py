"""ComfyUI's latent batch / interpolation / transform nodes, the batch seed behaviour, and
the image and mask built-ins of issue 11 (ImageScaleToMaxDimension, ImageRotate,
ResizeAndPadImage, ImageStitch, ImageAddNoise, GetImageSize, CropMask, ImageColorToMask,
Morphology): imported from hand-written fixtures (one API, one UI format), run, and each
node's effect checked on real tensors."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import nodes.diffusion.impl  # noqa: E402,F401  (torchvision shim before diffusers)
import nodeflow.api as api  # noqa: E402
from nodeflow import NodeError, RunContext, RunSettings  # noqa: E402
from nodes.diffusion.image_ops import (  # noqa: E402
    ImageAddNoise, ImageRotate, ImageScaleToMaxDimension, ImageStitch, ImageYUVToRGB, Morphology, ResizeAndPadImage,
)
from nodes.diffusion.impl.sample import starting_noise  # noqa: E402
from nodes.diffusion.latent_ops import (  # noqa: E402
    LatentBatch, LatentBatchSeedBehavior, LatentConcat, LatentCut, LatentFlip, LatentFromBatch, LatentInterpolate,
    LatentRotate, RepeatLatentBatch,
)
from nodes.diffusion.masks import CropMask, ImageColorToMask  # noqa: E402
from nodes.diffusion.types import Latent  # noqa: E402
from tests.support import FIXTURES  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402

FIXTURES = FIXTURES / "comfyui"
CTX = RunContext(node_id="1")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return RunSettings(model_folders={"checkpoints": [shared_tiny_sd(tmp_path_factory).parent]})


@pytest.fixture
def input_dir(tmp_path):
    """rgba.png, 32x32: the left half opaque red, the right half transparent blue."""
    from PIL import Image

    pixels = np.zeros((32, 32, 4), dtype=np.uint8)
    pixels[:, :16] = (255, 0, 0, 255)
    pixels[:, 16:] = (0, 0, 255, 0)
    folder = tmp_path / "input"
    folder.mkdir()
    Image.fromarray(pixels, "RGBA").save(folder / "rgba.png")
    return folder


def _clockwise(planes: torch.Tensor) -> torch.Tensor:
    """A quarter turn clockwise of the last two axes, written out: new[i, j] = old[H-1-j, i]."""
    h, w = planes.shape[-2:]
    rows = torch.arange(h - 1, -1, -1)
    return planes[..., rows, :].transpose(-1, -2)


# ------------------------------------------------------------------------ latents
def test_latent_flip_rotate_interpolate_batch_and_seed_behavior_run_as_a_comfyui_graph(models, input_dir, tmp_path):
    flow = api.open(FIXTURES / "latent_batch_seed_api.json", device="cpu")
    wanted = ["2", "11", "12", "13", "14", "15", "16", "17", "19", "21", "3", "5", "9"]
    result = flow.run(outputs=wanted, output_dir=tmp_path / "out", input_dir=input_dir, device="cpu", settings=models)
    assert result.ok, result.error or result.problems
    out = result.outputs
    encoded = out["2"]["latent"].samples
    assert encoded.shape == (1, 4, 16, 16)
    flipped = out["11"]["latent"].samples
    assert torch.equal(flipped, encoded[..., torch.arange(15, -1, -1)])  # left to right
    assert torch.equal(out["12"]["latent"].samples, _clockwise(flipped))
    mixed = out["13"]["latent"].samples
    # per position: the length halfway between, the direction along the sum of the unit vectors
    la, lb = encoded.norm(dim=1), out["12"]["latent"].samples.norm(dim=1)
    assert torch.allclose(mixed.norm(dim=1), (la + lb) / 2, atol=1e-5)
    unit_sum = encoded / la[:, None] + out["12"]["latent"].samples / lb[:, None]
    cosine = torch.nn.functional.cosine_similarity(mixed, unit_sum, dim=1)
    assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-5)
    batch = out["14"]["latent"]
    assert torch.equal(batch.samples, torch.cat([encoded, mixed]))
    assert batch.batch_index == (0, 0)  # each part numbered as alone, as ComfyUI
    assert out["15"]["latent"].batch_index is None  # random: the usual draw
    assert out["21"]["latent"].batch_index == (0, 0)
    fixed = out["3"]["latent"].samples
    assert torch.allclose(fixed[0], fixed[1], atol=1e-5)  # the same noise, the same prompt: one image twice
    assert out["5"]["latent"].samples.shape == (2, 4, 16, 16)
    assert torch.equal(out["16"]["latent"].samples, torch.cat([flipped, encoded], dim=-1))  # -x: on the left
    assert torch.equal(out["17"]["latent"].samples, torch.cat([flipped[..., 8:], encoded[..., :8]], dim=-1))
    assert out["19"]["images"].shape == (1, 32, 32, 3)

    flow.set("21.seed_behavior", "random")
    again = flow.run(outputs=["3", "9"], output_dir=tmp_path / "out2", input_dir=input_dir, device="cpu", settings=models)
    assert again.ok, again.error or again.problems
    usual = again.outputs["3"]["latent"].samples
    assert (usual[0] - usual[1]).abs().mean() > 0.05  # two draws, two images
    assert torch.allclose(usual[0], fixed[0], atol=1e-5)  # fixed is the first latent's noise


def test_the_starting_noise_follows_the_batch_index_and_the_usual_draw_is_unchanged():
    shape = (4, 4, 8, 8)
    usual = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    for index in (None, (0, 1, 2, 3), (0, 1)):  # none, the usual numbers, or not this batch's: the usual draw
        drawn = starting_noise(shape, torch.Generator().manual_seed(5), torch.float32, index)
        assert torch.equal(drawn, usual), index
    assert torch.equal(starting_noise(shape, torch.Generator().manual_seed(5), torch.float32, (0, 0, 0, 0)),
                       usual[[0, 0, 0, 0]])
    # an image taken from the batch gets the noise it had there, even past the batch's own size
    taken = LatentFromBatch().run(CTX, Latent(torch.zeros(shape)), batch_index=2, length=2)
    assert taken.batch_index == (2, 3)
    assert torch.equal(starting_noise((2, 4, 8, 8), torch.Generator().manual_seed(5), torch.float32, taken.batch_index),
                       usual[2:4])
    repeated = RepeatLatentBatch().run(CTX, taken, amount=2)
    assert repeated.batch_index == (2, 3, 4, 5)  # each copy past the numbers before it, as ComfyUI
    assert RepeatLatentBatch().run(CTX, Latent(torch.zeros(shape)), amount=2).batch_index is None
    fixed = LatentBatchSeedBehavior().run(CTX, repeated, seed_behavior="fixed")
    assert fixed.batch_index == (2, 2, 2, 2) and fixed.samples is repeated.samples
    assert LatentBatchSeedBehavior().run(CTX, repeated, seed_behavior="random").batch_index is None
    both = LatentBatch().run(CTX, Latent(torch.zeros(2, 4, 8, 8)), taken)
    assert both.batch_index == (0, 1, 2, 3)


def test_latent_batch_resizes_the_second_from_its_centre_keeps_noise_masks_and_names_a_channel_mismatch():
    first = Latent(torch.zeros(1, 4, 8, 8), noise_mask=torch.zeros(1, 16, 16))
    wide = torch.zeros(1, 4, 8, 16)
    wide[..., 4:12] = 1.0  # the middle square is ones, the sides zeros
    out = LatentBatch().run(CTX, first, Latent(wide))
    assert out.samples.shape == (2, 4, 8, 8)
    assert torch.equal(out.samples[1], torch.ones(4, 8, 8))  # the sides were cut off, not squeezed in
    assert out.noise_mask.shape == (2, 8, 8)
    assert out.noise_mask[0].max() == 0 and out.noise_mask[1].min() == 1  # no mask: free everywhere
    assert LatentBatch().run(CTX, Latent(torch.zeros(1, 4, 8, 8)), Latent(wide)).noise_mask is None
    with pytest.raises(NodeError, match="16 channels") as error:
        LatentBatch().run(CTX, first, Latent(torch.zeros(1, 16, 8, 8)))
    assert error.value.field == "samples2"


def test_latent_interpolate_keeps_vector_lengths_where_a_blend_shrinks_them():
    a = torch.zeros(1, 4, 2, 2)
    b = torch.zeros(1, 4, 2, 2)
    a[:, 0], b[:, 1] = 2.0, 2.0  # orthogonal, length 2
    a[..., 0, 0], b[..., 0, 0] = 0.0, 0.0
    a[:, 2, 0, 0], b[:, 2, 0, 0] = 3.0, -3.0  # one position: opposite vectors
    run = LatentInterpolate().run
    assert torch.allclose(run(CTX, Latent(a), Latent(b), ratio=1.0).samples, a)
    assert torch.allclose(run(CTX, Latent(a), Latent(b), ratio=0.0).samples, b)
    half = run(CTX, Latent(a), Latent(b), ratio=0.5).samples
    assert torch.allclose(half[0, :, 1, 1], torch.tensor([2 ** 0.5, 2 ** 0.5, 0.0, 0.0]))  # length 2, not sqrt 2
    assert torch.equal(half[0, :, 0, 0], torch.zeros(4))  # opposite directions cancel: no direction left
    batch = run(CTX, Latent(torch.ones(3, 4, 2, 2)), Latent(b), ratio=0.5).samples
    assert batch.shape == (3, 4, 2, 2) and torch.allclose(batch[0], batch[2])  # samples2's batch cycled


def test_latent_flip_and_rotate_move_the_noise_mask_with_the_latent():
    samples = torch.arange(24, dtype=torch.float32).reshape(1, 1, 4, 6).expand(1, 4, 4, 6)
    mask = torch.zeros(1, 4, 6)
    mask[0, 0, 0] = 1.0
    latent = Latent(samples, noise_mask=mask, batch_index=(3,))
    up = LatentFlip().run(CTX, latent, flip_method="x-axis: vertically")
    assert torch.equal(up.samples, samples[..., torch.arange(3, -1, -1), :]) and up.noise_mask[0, 3, 0] == 1
    assert up.batch_index == (3,)
    turned = LatentRotate().run(CTX, latent, rotation="90 degrees")
    assert turned.samples.shape == (1, 4, 6, 4) and torch.equal(turned.samples, _clockwise(samples))
    assert turned.noise_mask[0, 0, 3] == 1  # the top-left corner is now top-right
    assert torch.equal(LatentRotate().run(CTX, latent, rotation="270 degrees").samples,
                       _clockwise(_clockwise(_clockwise(samples))))
    assert torch.equal(LatentRotate().run(CTX, latent, rotation="none").samples, samples)


def test_latent_concat_and_cut_join_and_slice_in_latent_cells_with_their_noise_masks():
    left = Latent(torch.zeros(2, 4, 4, 6), noise_mask=torch.zeros(1, 4, 6), batch_index=(5, 6))
    right = Latent(torch.ones(1, 4, 4, 3))
    joined = LatentConcat().run(CTX, left, right, dim="x")
    assert joined.samples.shape == (2, 4, 4, 9) and joined.batch_index == (5, 6)
    assert joined.samples[..., :6].max() == 0 and joined.samples[..., 6:].min() == 1  # right's one latent, cycled
    assert joined.noise_mask.shape == (2, 4, 9)
    assert joined.noise_mask[..., :6].max() == 0 and joined.noise_mask[..., 6:].min() == 1
    above = LatentConcat().run(CTX, Latent(torch.zeros(1, 4, 4, 3)), right, dim="-y")
    assert above.samples.shape == (1, 4, 8, 3) and above.samples[..., :4, :].min() == 1 and above.noise_mask is None
    with pytest.raises(NodeError, match="same channels and height") as error:
        LatentConcat().run(CTX, left, Latent(torch.ones(1, 4, 5, 3)), dim="-x")
    assert error.value.field == "samples2"
    ramp = Latent(torch.arange(10, dtype=torch.float32).expand(1, 4, 3, 10).contiguous(),
                  noise_mask=torch.arange(10, dtype=torch.float32).expand(1, 3, 10) / 10)
    cut = LatentCut().run(CTX, ramp, dim="x", index=7, amount=5)
    assert cut.samples[0, 0, 0].tolist() == [7.0, 8.0, 9.0]  # stops at the end
    assert torch.allclose(cut.noise_mask[0, 0], torch.tensor([0.7, 0.8, 0.9]))
    assert LatentCut().run(CTX, ramp, dim="x", index=-4, amount=2).samples[0, 0, 0].tolist() == [6.0, 7.0]
    assert LatentCut().run(CTX, ramp, dim="x", index=-40, amount=2).samples[0, 0, 0].tolist() == [0.0, 1.0]
    assert LatentCut().run(CTX, ramp, dim="x", index=99, amount=2).samples[0, 0, 0].tolist() == [9.0]
    assert LatentCut().run(CTX, ramp, dim="y", index=1, amount=9).samples.shape == (1, 4, 2, 10)


# ------------------------------------------------------------------------ images and masks
def test_image_and_mask_built_ins_run_from_a_ui_format_graph(input_dir, tmp_path):
    flow = api.open(FIXTURES / "image_transforms_ui_v04.json", device="cpu")
    assert flow.graph.nodes["6"].values == {"seed": 7, "strength": 0.1}  # the seed's "randomize" skipped
    ids = [str(i) for i in range(1, 19)]
    result = flow.run(outputs=ids, output_dir=tmp_path / "out", input_dir=input_dir, device="cpu")
    assert result.ok, result.error or result.problems
    out = result.outputs
    red, blue = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    small = out["2"]["image"]
    assert small.shape == (1, 16, 16, 3)
    assert torch.allclose(small[0, :, :7], red.expand(16, 7, 3), atol=2e-2)
    turned = out["3"]["image"]
    assert torch.equal(turned, _clockwise(small.movedim(-1, 1)).movedim(1, -1))  # the left side on top
    assert torch.allclose(turned[0, :7], red.expand(7, 16, 3), atol=2e-2)
    assert torch.allclose(turned[0, 9:], blue.expand(7, 16, 3), atol=2e-2)
    padded = out["4"]["image"]
    assert padded.shape == (1, 16, 24, 3)
    assert padded[0, :, :4].max() == 0 and padded[0, :, 20:].max() == 0  # black bands, 16x16 centred
    assert torch.allclose(padded[0, :, 4:20], turned[0], atol=1e-6)
    stitched = out["5"]["image"]
    assert stitched.shape == (1, 16, 24 + 4 + 16, 3)  # spacing 3 is rounded up to 4
    assert torch.equal(stitched[0, :, :24], padded[0])
    assert torch.equal(stitched[0, :, 24:28], red.expand(16, 4, 3))
    assert torch.equal(stitched[0, :, 28:], small[0])
    grain = torch.randn((1, 16, 44, 3), generator=torch.Generator().manual_seed(7))
    assert torch.allclose(out["6"]["image"], (stitched + 0.1 * grain).clamp(0, 1))
    grown = out["7"]["image"][0]  # dilate 5: each colour reaches 2 pixels further
    assert grown[:, :18, 0].min() == 1 and grown[:, 18:, 0].max() == 0
    assert grown[:, 14:, 2].min() == 1 and grown[:, :14, 2].max() == 0
    assert (out["8"]["width"], out["8"]["height"], out["8"]["batch_size"]) == (44, 16, 1)
    green = out["9"]["image"]  # its width and height wired from Image Size
    assert green.shape == (1, 16, 44, 3) and torch.equal(green[0, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(out["10"]["mask"][0, :, :16], torch.ones(32, 16))  # exactly 0xFF0000
    assert out["10"]["mask"][0, :, 16:].max() == 0
    cropped = out["11"]["mask"]
    assert cropped.shape == (1, 30, 12)
    assert torch.equal(cropped, out["10"]["mask"][:, 1:31, 10:22])
    assert out["15"]["images"].shape == (1, 30, 12, 3)
    y, u, v = (out["16"][name][0] for name in ("y", "u", "v"))
    assert torch.allclose(y[:, :16], torch.tensor(0.299).expand(32, 16, 3), atol=1e-3)  # red's brightness (BT.601)
    assert torch.allclose(y[:, 16:], torch.tensor(0.114).expand(32, 16, 3), atol=1e-3)  # blue's
    assert u[0, 0, 0] < 0.5 < u[0, 20, 0] and v[0, 0, 0] > 0.5 > v[0, 20, 0]  # red: Cr up; blue: Cb up
    assert torch.allclose(out["17"]["image"], out["1"]["image"], atol=1e-4)  # split and joined: the image again


def test_scale_to_max_dimension_and_resize_and_pad_keep_the_aspect_ratio():
    wide = torch.rand(2, 20, 30, 3)
    assert ImageScaleToMaxDimension().run(CTX, wide, method="bilinear", largest_size=15).shape == (2, 10, 15, 3)
    assert ImageScaleToMaxDimension().run(CTX, wide.transpose(1, 2), method="area", largest_size=60).shape == (2, 60, 40, 3)
    assert ImageScaleToMaxDimension().run(CTX, torch.rand(1, 8, 8, 3), method="nearest", largest_size=5).shape == (1, 5, 5, 3)
    with pytest.raises(NodeError, match="limit") as error:
        ImageScaleToMaxDimension().run(CTX, torch.rand(64, 8, 8, 3), method="nearest", largest_size=16384)
    assert error.value.field == "largest_size"
    flat = torch.zeros(1, 10, 20, 3)
    fitted = ResizeAndPadImage().run(CTX, flat, target_width=16, target_height=16, padding_color="white", method="area")
    assert fitted.shape == (1, 16, 16, 3)
    assert fitted[0, :4].min() == 1 and fitted[0, 12:].min() == 1 and fitted[0, 4:12].max() == 0  # 16x8 centred


def test_image_stitch_matches_sizes_orders_by_direction_and_pads_batches():
    first = torch.zeros(2, 16, 24, 3)
    first[1] = 0.25
    second = torch.ones(1, 8, 8, 3)
    down = ImageStitch().run(CTX, first, "down", True, 0, "white", second)
    assert down.shape == (2, 40, 24, 3)  # image2 resized to image1's width, square kept
    assert torch.equal(down[:, :16], first) and torch.allclose(down[:, 16:], torch.ones(2, 24, 24, 3), atol=1e-2)
    left = ImageStitch().run(CTX, first, "left", True, 2, "blue", second)
    assert left.shape == (2, 16, 16 + 2 + 24, 3)
    assert torch.equal(left[:, :, 16:18], torch.tensor([0.0, 0.0, 1.0]).expand(2, 16, 2, 3))
    assert torch.equal(left[:, :, 18:], first)
    loose = ImageStitch().run(CTX, first, "right", False, 0, "black", second)
    assert loose.shape == (2, 16, 32, 3)
    assert torch.equal(loose[:, 4:12, 24:], torch.ones(2, 8, 8, 3)) and loose[:, :4, 24:].max() == 0  # centred on black
    assert ImageStitch().run(CTX, first, "up", True, 0, "white") is first  # no image2: image1 as it is


def test_image_add_noise_rotate_and_mask_nodes_on_real_tensors():
    grey = torch.full((1, 32, 32, 3), 0.5)
    noisy = ImageAddNoise().run(CTX, grey, seed=3, strength=0.1)
    assert torch.equal(noisy, ImageAddNoise().run(CTX, grey, seed=3, strength=0.1))
    assert not torch.equal(noisy, ImageAddNoise().run(CTX, grey, seed=4, strength=0.1))
    assert abs(float((noisy - grey).std()) - 0.1) < 0.01
    assert torch.equal(ImageAddNoise().run(CTX, grey, seed=3, strength=0.0), grey)
    assert torch.equal(ImageAddNoise().run(CTX, torch.ones(1, 4, 4, 3), seed=1, strength=1.0).max(), torch.tensor(1.0))
    ramp = torch.arange(6, dtype=torch.float32).reshape(1, 2, 3, 1).expand(1, 2, 3, 3)
    assert torch.equal(ImageRotate().run(CTX, ramp, "180 degrees"), ramp.flip(1).flip(2))
    assert ImageRotate().run(CTX, ramp, "270 degrees").shape == (1, 3, 2, 3)
    mask = torch.rand(2, 10, 12)
    assert torch.equal(CropMask().run(CTX, mask, x=50, y=3, width=5, height=4), mask[:, 3:7, 11:])  # past the edge: the last column
    colours = torch.tensor([[[0x12, 0x34, 0x56], [0x12, 0x34, 0x57]]], dtype=torch.float32)[None] / 255.0
    assert ImageColorToMask().run(CTX, colours, color=0x123456).tolist() == [[[1.0, 0.0]]]
    with pytest.raises(NodeError, match="of one size") as error:
        ImageYUVToRGB().run(CTX, torch.rand(1, 4, 4, 3), torch.rand(1, 4, 5, 3), torch.rand(1, 4, 4, 3))
    assert error.value.field == "u"


def test_morphology_operations_on_a_speck_and_a_hole():
    speck = torch.zeros(1, 9, 9, 3)
    speck[0, 4, 4] = 1.0
    hole = 1.0 - speck
    run = Morphology().run
    dilated = run(CTX, speck, "dilate", 3)[0, ..., 0]
    assert dilated[3:6, 3:6].min() == 1 and dilated.sum() == 9
    assert run(CTX, speck, "erode", 3).max() == 0
    assert run(CTX, speck, "open", 3).max() == 0  # a bright speck smaller than the square goes
    assert torch.equal(run(CTX, speck, "top_hat", 3), speck)  # ... and is what top hat finds
    assert run(CTX, hole, "close", 3).min() == 1  # a dark hole is filled
    assert torch.equal(run(CTX, hole, "bottom_hat", 3), speck)
    block = torch.zeros(1, 9, 9, 3)
    block[0, 2:7, 2:7] = 1.0
    outline = run(CTX, block, "gradient", 3)[0, ..., 0]
    assert outline[4, 4] == 0 and outline[2, 2] == 1 and outline[1, 1] == 1 and outline[0, 0] == 0
    # a square wider than the image reaches every pixel: the same as one just as wide as needed
    assert torch.equal(run(CTX, speck, "dilate", 999), torch.ones(1, 9, 9, 3))
    assert torch.equal(run(CTX, speck, "dilate", 998), run(CTX, speck, "dilate", 18))


@pytest.mark.parametrize("side", [3, 4, 5, 8])
def test_morphology_is_kornias_pixel_for_pixel(side):
    """ComfyUI's Morphology calls kornia with a square of ones; ours is the separable max of a
    flat square, which must give exactly kornia's pixels, even-sided squares' origin included."""
    from kornia import morphology

    image = torch.rand(2, 13, 17, 3, generator=torch.Generator().manual_seed(side))
    planes, kernel = image.movedim(-1, 1), torch.ones(side, side)
    reference = {"erode": morphology.erosion, "dilate": morphology.dilation, "open": morphology.opening,
                 "close": morphology.closing, "gradient": morphology.gradient, "top_hat": morphology.top_hat,
                 "bottom_hat": morphology.bottom_hat}
    for operation, kornia_op in reference.items():
        ours = Morphology().run(CTX, image, operation, side)
        assert torch.equal(ours, kornia_op(planes, kernel).movedim(1, -1)), operation


def test_the_batch_numbers_and_the_noise_mask_go_on_through_sampling_and_upscaling(models):
    """As ComfyUI's KSampler and LatentUpscale keep the latent's other keys: a second pass
    after a "fixed" first one still draws the first latent's noise for every latent."""
    from nodes.diffusion.latent import LatentUpscale
    from nodes.diffusion.loaders import Checkpoint
    from nodes.diffusion.sampling import BasicGuider, Noise, Sampler
    from nodes.diffusion.text import TextEncoder

    loaded = Checkpoint().run(RunContext(device="cpu", settings=models), checkpoint="tiny-sd", dtype="fp32",
                              prediction="auto")
    mask = torch.ones(1, 8, 8)
    fixed = Latent(torch.zeros(2, 4, 8, 8), noise_mask=mask, batch_index=(0, 0))
    guider = BasicGuider().run(CTX, loaded["model"], TextEncoder().run(CTX, clip=loaded["clip"], text="a circle",
                                                                       clip_skip=1))
    sampled = Sampler().run(CTX, noise=Noise().run(CTX, seed=3), guider=guider, latent=fixed, sampler="euler",
                            schedule="normal", steps=2, denoise=1.0, eta=0.0)
    assert sampled.batch_index == (0, 0) and sampled.noise_mask is mask
    upscaled = LatentUpscale().run(CTX, latent=sampled, method="nearest", width=0, height=0, scale_by=2.0)
    assert upscaled.batch_index == (0, 0) and upscaled.noise_mask is mask
