"""CLIP space: prompts (and pictures) as points, where similarity is closeness.

A CLIP text encoder maps a prompt to one vector (its pooled embedding; with a vision
tower, pictures land in the same space). This node embeds a list of prompts, draws
their cosine similarity matrix and a 2-D map (the first two principal components of
the unit vectors), moves a base prompt along the direction a - b (base + (a - b)),
marks where that lands, and names the prompt nearest to it.
"""

from __future__ import annotations

from typing import Any

from nodeflow import STRING, Node, NodeError, Output, RunContext, Socket, String

from nodes.diffusion.types import CLIP, IMAGE, TextEncoders

# Colour words get their colour on the map (so a palette's prompts read at a glance).
COLOUR_WORDS = {"red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30),
                "purple": (140, 60, 190), "orange": (240, 140, 20), "white": (250, 250, 250), "black": (20, 20, 20)}


def text_embeddings(clip: TextEncoders, prompts: list[str]) -> Any:
    """The pooled CLIP embedding of each prompt [N, dim] (the first encoder's), unit length."""
    import torch

    tokenizer, encoder = clip.tokenizers[0], clip.encoders[0]
    with torch.inference_mode():
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        out = encoder(input_ids=ids.to(next(encoder.parameters()).device))
        embeds = getattr(out, "text_embeds", None)
        if embeds is None:
            embeds = out.pooler_output
    return torch.nn.functional.normalize(embeds.float().cpu(), dim=-1)


def image_embeddings(clip: TextEncoders, images: Any) -> Any:
    import torch

    from nodes.diffusion.clip_similarity import vision_pixels

    vision = clip.vision
    with torch.inference_mode():
        pixels = vision_pixels(images.cpu(), vision.config.image_size).to(next(vision.parameters()).device, vision.dtype)
        embeds = vision(pixel_values=pixels).image_embeds
    return torch.nn.functional.normalize(embeds.float().cpu(), dim=-1)


def pca_2d(vectors: Any) -> tuple[Any, Any, Any]:
    """(the 2-D coordinates of ``vectors`` [N, dim], the mean, the two axes [dim, 2])."""
    import numpy as np

    data = np.asarray(vectors, dtype=np.float64)
    mean = data.mean(axis=0)
    _, _, vt = np.linalg.svd(data - mean, full_matrices=False)
    axes = vt[:2].T
    if axes.shape[1] < 2:
        axes = np.concatenate([axes, np.zeros((axes.shape[0], 2 - axes.shape[1]))], axis=1)
    return (data - mean) @ axes, mean, axes


def colour_of(prompt: str) -> tuple[int, int, int] | None:
    words = prompt.lower().replace(",", " ").split()
    return next((COLOUR_WORDS[w] for w in words if w in COLOUR_WORDS), None)


class CLIPSpace(Node):
    type = "CLIPSpace"
    display_name = "CLIP Space"
    category = "explain"
    description = (
        "Embeds prompts (one per line; and pictures, when the CLIP has a vision tower) and "
        "shows CLIP's space: the cosine similarity of every pair, and a 2-D map (principal "
        "components) where similar prompts lie close. With base, a and b set, it also moves "
        "base along the direction from b to a (base + (a - b)), draws that arrow on the map "
        "and names the prompt nearest to where it lands (Conditioning Direction makes images "
        "from the same move)."
    )

    clip = Socket(CLIP)
    images = Socket(IMAGE, optional=True, tooltip="pictures to place on the map too (needs a vision tower)")
    prompts = String("a red circle\na blue circle\na red square\na blue square", multiline=True,
                     tooltip="one prompt per line")
    base = String("", tooltip="the prompt to move (empty: no direction)")
    a = String("", tooltip="where the direction points to")
    b = String("", tooltip="where the direction starts")
    outputs = (Output("map", IMAGE, tooltip="the 2-D map"),
               Output("similarity", IMAGE, tooltip="the cosine similarity matrix"),
               Output("nearest", STRING, tooltip="the prompt nearest to base + (a - b)"))

    def run(self, ctx: RunContext, clip: TextEncoders, images: Any, prompts: str, base: str, a: str, b: str) -> tuple:
        import numpy as np
        import torch

        from nodes.diffusion.explain import draw

        lines = [line.strip() for line in prompts.splitlines() if line.strip()]
        if len(lines) < 2:
            raise NodeError("give at least two prompts, one per line", field="prompts")
        labels = list(lines)
        vectors = text_embeddings(clip, lines)
        colours = [colour_of(p) or draw.PALETTE[i % len(draw.PALETTE)] for i, p in enumerate(lines)]
        if images is not None:
            if clip.vision is None:
                raise NodeError("this CLIP has no vision tower, so it cannot place pictures; leave images unlinked",
                                field="images")
            pictures = image_embeddings(clip, images)
            if pictures.shape[-1] != vectors.shape[-1]:
                raise NodeError(f"the vision tower embeds into {pictures.shape[-1]} dimensions, the text encoder "
                                f"into {vectors.shape[-1]}", field="images")
            vectors = torch.cat([vectors, pictures])
            labels += [f"[picture {i + 1}]" for i in range(len(pictures))]
            colours += [tuple(int(c * 255) for c in images[i].reshape(-1, 3).mean(0).tolist()) for i in range(len(pictures))]
        similarity = (vectors @ vectors.T).numpy()
        points, mean, axes = pca_2d(vectors.numpy())
        arrows, nearest = [], ""
        if base.strip() and a.strip() and b.strip():
            moved_from, towards, away = text_embeddings(clip, [base, a, b])
            moved = moved_from + (towards - away)
            moved = moved / moved.norm()
            scores = (vectors[: len(lines)] @ moved).numpy()
            nearest = lines[int(np.argmax(scores))]
            start = (moved_from.numpy() - mean) @ axes
            end = (moved.numpy() - mean) @ axes
            arrows.append((start, end, f"{base} + ({a} - {b}) ~ {nearest}"))
        spread = np.var(points, axis=0).sum() / max(np.var(vectors.numpy() - mean, axis=0).sum(), 1e-12)
        mapped = draw.scatter_map(points, labels, colours, arrows, title="CLIP space (PCA of unit embeddings)",
                                  size=460, x_label=f"first two principal components: {spread:.0%} of the variance")
        matrix = draw.heat_map(similarity, labels, title="Cosine similarity")
        return draw.as_image(mapped), draw.as_image(matrix), nearest
