"""Names of the per-step views a Sampler can preview (no torch: the node declaration reads it)."""

# What a Sampler's live preview can show (its ``preview`` field) -> what it draws.
PREVIEW_KINDS = {
    "x0": "estimate of the final image (predicted x0)",
    "noise": "predicted noise",
    "latent": "the noisy latent x_t",
    "cond": "prediction with the prompt",
    "uncond": "prediction without it (negative)",
    "cfg_difference": "cond - uncond (what CFG amplifies)",
    "added_noise": "noise added back this step",
}
