"""How well an image matches a text, measured by a CLIP that carries a vision tower."""

from __future__ import annotations

from typing import Any


from nodeflow import FLOAT, Node, NodeError, Output, RunContext, Socket, String

from nodes.diffusion.types import CLIP, IMAGE, TextEncoders

# The pixel normalisation every OpenAI-style CLIP vision tower is trained with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def vision_pixels(image: Any, size: int) -> Any:
    """IMAGE [B, H, W, 3] in [0, 1] -> normalised [B, 3, size, size] vision-tower input."""
    import torch
    import torch.nn.functional as F

    pixels = image.permute(0, 3, 1, 2).float()
    if pixels.shape[-2:] != (size, size):
        pixels = F.interpolate(pixels, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (pixels.clamp(0, 1) - mean) / std


class CLIPSimilarity(Node):
    type = "CLIPSimilarity"
    display_name = "CLIP Similarity"
    category = "image"
    description = (
        "Cosine similarity between an image and a text in CLIP's shared embedding space: "
        "around 1 when the text describes the image, lower otherwise. Needs a CLIP with a "
        "vision tower, such as the bundled \"shapes\" model's; a batch gives its mean."
    )

    image = Socket(IMAGE, tooltip="the image(s) to score")
    clip = Socket(CLIP, tooltip="a CLIP with a vision tower (e.g. from the Checkpoint \"shapes\")")
    text = String("a red circle on a blue background", multiline=True, tooltip="the description to compare with")
    outputs = (Output("similarity", FLOAT),)

    def run(self, ctx: RunContext, image: Any, clip: TextEncoders, text: str) -> float:
        import torch

        if clip.vision is None:
            raise NodeError(
                'input "clip": this CLIP has no vision tower, so it cannot embed images; '
                "use a model that carries one (e.g. the bundled \"shapes\" checkpoint)"
            )
        tokenizer, encoder, vision = clip.tokenizers[0], clip.encoders[0], clip.vision
        device = next(vision.parameters()).device
        with torch.no_grad():
            ids = tokenizer([text], padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids
            out = encoder(input_ids=ids.to(next(encoder.parameters()).device))
            # CLIPTextModelWithProjection has text_embeds; a plain CLIPTextModel's pooled
            # output is the embedding when its projection is the identity (the bundled model).
            text_embed = getattr(out, "text_embeds", None)
            if text_embed is None:
                text_embed = out.pooler_output
            pixels = vision_pixels(image.cpu(), vision.config.image_size).to(device, vision.dtype)
            image_embeds = vision(pixel_values=pixels).image_embeds
        if image_embeds.shape[-1] != text_embed.shape[-1]:
            raise NodeError(
                f'input "clip": the vision tower embeds into {image_embeds.shape[-1]} dimensions but '
                f"the text encoder into {text_embed.shape[-1]}; they are not one CLIP model"
            )
        similarity = torch.nn.functional.cosine_similarity(
            image_embeds.float(), text_embed.float().to(image_embeds.device), dim=-1)
        return float(similarity.mean())
