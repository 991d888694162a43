"""unCLIP: steering an SD 2.1 unCLIP UNet with CLIP image embeddings.

The unCLIP UNet has a class embedding (diffusers' ``class_embed_type="projection"``, the
original's ``label_emb``) that takes, as class labels, an image embedding after noise
augmentation, diffusers' StableUnCLIP way: the embedding is normalised with the
embedder's statistics, noised to ``noise_level`` on a squared-cosine schedule, put back
to its own scale, and the sinusoidal embedding of the noise level is appended. Published
single files carry no statistics (the original kept them out of the state dict), so for
them the normalisation is the identity, as in ComfyUI; a diffusers folder's
``image_normalizer`` holds them, and they are used.

Several images (unCLIPConditioning nodes chained, or a batch of images in one encoding)
combine as in ComfyUI: each is augmented at its own level and weighted by its strength;
with more than one, the weighted embeddings are summed and augmented once more at level
``MERGE_AUGMENTATION``. A conditioning without images gets zeros, as the pipelines'
unconditional half does. SDXL models take no class labels; there, as in ComfyUI
("Revision"), the augmented embedding replaces the pooled text embedding (merge level 0).
The noise is drawn from a CPU generator seeded with the
sampler's seed minus 10 (ComfyUI's choice; its merge step draws unseeded noise, here it
is seeded too so runs repeat).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from nodes.diffusion.types import Conditioning, DiffusionModel

MERGE_AUGMENTATION = 0.05
SEED_OFFSET = -10
NOISE_STEPS = 1000


@dataclass(frozen=True, eq=False)
class UnclipImage:
    """One image embedding attached to conditioning (``Conditioning.extras["unclip"]``)."""

    image_embeds: torch.Tensor  # [B, D]: B images, each its own entry
    strength: float
    noise_augmentation: float  # 0 keeps the embedding; 1 leaves nothing of it


def takes_images(model: "DiffusionModel") -> bool:
    return getattr(model.unet.config, "class_embed_type", None) == "projection"


def embedding_width(model: "DiffusionModel") -> int:
    """D, the image embedding's width: the class input holds it and its noise level's embedding."""
    return int(model.unet.config.projection_class_embeddings_input_dim) // 2


def class_labels(cond: "Conditioning", model: "DiffusionModel", seed: int | None) -> torch.Tensor:
    """The UNet's class labels [1, 2D] for ``cond``: its images' augmented embeddings, or zeros."""
    width = embedding_width(model)
    images = cond.extras.get("unclip", ())
    if not images:
        return torch.zeros(1, 2 * width)
    if model.image_stats is not None and model.image_stats[0].shape[-1] != width:
        raise ValueError(f"the model's image normaliser is {model.image_stats[0].shape[-1]} wide, its UNet takes {width}")
    return combined(images, width, seed, MERGE_AUGMENTATION, model.image_stats, "this unCLIP model")


def pooled_embeds(cond: "Conditioning", width: int, seed: int | None) -> torch.Tensor | None:
    """SDXL with image embeddings ("Revision", as ComfyUI does it): the augmented image
    embedding [1, width] in place of the pooled text embedding; None without images."""
    images = cond.extras.get("unclip", ())
    if not images:
        return None
    return combined(images, width, seed, 0.0, None, "the SDXL pooled embedding")[:, :width]


def combined(images: tuple[UnclipImage, ...], width: int, seed: int | None, merge: float,
             stats: tuple[torch.Tensor, torch.Tensor] | None, taker: str) -> torch.Tensor:
    """Each image of ``images`` augmented at its level and weighted by its strength; more
    than one: the weighted sum's embedding part augmented again at level ``merge``."""
    generator_seed = (seed if seed is not None else 0) + SEED_OFFSET
    parts = []
    for image in images:
        embeds = image.image_embeds.float().cpu()
        if embeds.ndim != 2 or embeds.shape[-1] != width:
            raise ValueError(f"the image embedding is {embeds.shape[-1]} wide; {taker} takes {width} "
                             "(use the CLIP vision model made for it)")
        for row in embeds:
            level = noise_level(image.noise_augmentation)
            parts.append(augment(row[None], level, generator_seed, stats) * image.strength)
    if len(parts) == 1:
        return parts[0]
    summed = torch.stack(parts).sum(0)
    return augment(summed[:, :width], noise_level(merge), generator_seed, stats)


def read_image_stats(folder: Any, files: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The (mean, std) of a diffusers unCLIP folder's ``image_normalizer`` (StableUnCLIPImageNormalizer)."""
    from nodes.diffusion.impl.ldm import CheckpointError
    from nodes.diffusion.impl.loading import _folder_weights

    weights = _folder_weights(folder, files)
    mean, std = weights.get("mean"), weights.get("std")
    if mean is None or std is None or mean.ndim != 2 or mean.shape[0] != 1 or mean.shape != std.shape:
        raise CheckpointError(f"{folder.name}/: expected 'mean' and 'std' weights of shape [1, width]")
    if not bool((std != 0).all()):
        raise CheckpointError(f"{folder.name}/: the image normaliser's std has zeros")
    return mean.float(), std.float()


def noise_level(augmentation: float) -> int:
    return round((NOISE_STEPS - 1) * float(augmentation))


def augment(embeds: torch.Tensor, level: int, seed: int,
            stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """[N, D] -> [N, 2D]: normalised with ``stats`` (mean, std; None: as it is), noised to
    ``level``, put back to its own scale, and the level's sinusoidal embedding appended
    (diffusers' StableUnCLIP noise_image_embeddings)."""
    from diffusers.models.embeddings import get_timestep_embedding

    mean, std = stats if stats is not None else (torch.zeros(1), torch.ones(1))
    mean, std = mean.float().cpu(), std.float().cpu()
    noise = torch.randn(embeds.shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=embeds.dtype)
    levels = torch.full((embeds.shape[0],), level, dtype=torch.long)
    noised = _schedule().add_noise((embeds - mean) / std, noise, levels) * std + mean
    level_embedding = get_timestep_embedding(levels, embeds.shape[-1], flip_sin_to_cos=True, downscale_freq_shift=0)
    return torch.cat([noised, level_embedding.to(noised.dtype)], dim=1)


_SCHEDULE: list[Any] = []


def _schedule() -> Any:
    """The noising schedule of SD 2.1 unCLIP's image embeddings (1000 squared-cosine steps)."""
    if not _SCHEDULE:
        from diffusers import DDPMScheduler

        _SCHEDULE.append(DDPMScheduler(num_train_timesteps=NOISE_STEPS, beta_schedule="squaredcos_cap_v2"))
    return _SCHEDULE[0]
