"""The text encoder node: a prompt becomes the embeddings the UNet cross-attends to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from nodeflow import Int, Node, NodeError, Output, RunContext, Socket, String

from nodes.diffusion.types import CLIP, CONDITIONING

if TYPE_CHECKING:
    import torch

    from nodes.diffusion.impl.prompt import Window
    from nodes.diffusion.types import Conditioning, TextEncoders


class TextEncoder(Node):
    type = "TextEncoder"
    display_name = "Text Encoder"
    category = "conditioning"
    description = (
        "Encodes a prompt with the model's CLIP text encoder(s). Supports emphasis: (word) x1.1, "
        "[word] /1.1, (word:1.3), \\( for a literal bracket; prompts longer than 75 tokens are "
        "encoded in 75-token windows (BREAK starts a new one) and joined."
    )

    clip = Socket(CLIP, tooltip="Text encoder(s) from a checkpoint")
    text = String("", multiline=True, tooltip="The prompt; (word:1.2) to emphasise, [word] to soften")
    clip_skip = Int(
        1,
        min=1,
        max=12,
        tooltip="Which encoder layer to read: 1 = the last, 2 = the one before (as many SD 1.x anime models expect)",
    )
    outputs = (Output("conditioning", CONDITIONING, "Token embeddings (and SDXL's pooled embedding)"),)

    def run(self, ctx: RunContext, clip: "TextEncoders", text: str, clip_skip: int) -> "Conditioning":
        return encode_text(clip, text, clip_skip, ctx.check_interrupted)


def encode_text(
    clip: "TextEncoders", text: str, clip_skip: int = 1, check: "Callable[[], None]" = lambda: None
) -> "Conditioning":
    """Embeddings [1, 77 * windows, dim] for ``text``; for SDXL the two encoders' penultimate
    layers side by side (768 + 1280) and the pooled embedding of the second encoder.

    Emphasis multiplies each token's embedding by its weight, then rescales the window so
    its mean is what it was before weighting (the A1111 method); unweighted windows are
    left untouched, so a plain prompt encodes exactly as diffusers' pipelines encode it."""
    import torch

    from nodes.diffusion.impl.prompt import weighted_tokens, windows
    from nodes.diffusion.types import Conditioning

    sdxl = clip.family.name == "sdxl"
    layers = min(encoder.config.num_hidden_layers for encoder in clip.encoders)
    if clip_skip > layers:
        raise NodeError(f'{clip_skip} is more than the text encoder\'s {layers} layers', field="clip_skip")

    per_encoder: list[list[Window]] = []
    for index, tokenizer in enumerate(clip.tokenizers):
        pad = clip.pad_token_ids[index] if index < len(clip.pad_token_ids) else tokenizer.pad_token_id
        per_encoder.append(windows(weighted_tokens(tokenizer, text, check), tokenizer.bos_token_id, tokenizer.eos_token_id, pad))
    if len({len(w) for w in per_encoder}) != 1:
        raise NodeError("the model's tokenizers split this prompt differently; cannot combine its encoders")

    chunks, pooled = [], None
    with torch.no_grad():
        for position, group in enumerate(zip(*per_encoder)):
            parts = []
            for index, (encoder, window) in enumerate(zip(clip.encoders, group)):
                hidden, pooled_here = _encode_window(encoder, window.ids, clip_skip, sdxl)
                parts.append(hidden)
                if position == 0 and pooled_here is not None:
                    pooled = pooled_here
            embeds = torch.cat(parts, dim=-1)
            chunks.append(_apply_weights(embeds, group[0].weights))
    return Conditioning(torch.cat(chunks, dim=1), pooled if sdxl else None, {})


def _encode_window(encoder: Any, ids: list[int], clip_skip: int, sdxl: bool) -> tuple["torch.Tensor", "torch.Tensor | None"]:
    """Hidden states [1, 77, dim] of one window, and the projected pooled output when the
    encoder has a projection."""
    import torch

    input_ids = torch.tensor([ids], dtype=torch.long, device=encoder.device)
    needs_layers = sdxl or clip_skip > 1
    out = encoder(input_ids=input_ids, output_hidden_states=needs_layers)
    pooled = getattr(out, "text_embeds", None)
    if sdxl:  # SDXL reads the penultimate layer, without the final layer norm
        return out.hidden_states[-(clip_skip + 1)], pooled
    if clip_skip == 1:
        return out.last_hidden_state, pooled
    # transformers >= 5.6: CLIPTextModel is flat, CLIPTextModelWithProjection still wraps text_model.
    final_norm = getattr(encoder, "text_model", encoder).final_layer_norm
    return final_norm(out.hidden_states[-clip_skip]), pooled


def _apply_weights(embeds: "torch.Tensor", weights: list[float]) -> "torch.Tensor":
    import torch

    if all(w == 1.0 for w in weights):
        return embeds
    scale = torch.tensor(weights, dtype=embeds.dtype, device=embeds.device).reshape(1, -1, 1)
    before = embeds.float().mean()
    weighted = embeds * scale
    after = weighted.float().mean()
    if after.abs() <= 1e-6 * weighted.float().abs().mean():  # no mean to restore
        return weighted
    return weighted * (before / after).to(embeds.dtype)
