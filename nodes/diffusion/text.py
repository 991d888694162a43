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

    @classmethod
    def check_host(cls, values: dict[str, Any], ctx: RunContext) -> dict[str, str]:
        """Before the run: the ``embedding:NAME`` files the prompt names exist (Node.check_host)."""
        from nodes.diffusion.impl.paths import missing_model
        from nodes.diffusion.impl.prompt import embedding_names

        text = values.get("text")
        for name in dict.fromkeys(embedding_names(text)) if isinstance(text, str) else ():
            candidates = [name] if "." in name.rsplit("/", 1)[-1] else [f"{name}{ext}" for ext in (".safetensors", ".pt", ".bin")]
            messages = [missing_model(c, "embeddings", ctx.settings) for c in candidates]
            if all(messages):
                return {"text": f"'embedding:{name}': {messages[0]}"}
        return {}

    def run(self, ctx: RunContext, clip: "TextEncoders", text: str, clip_skip: int) -> "Conditioning":
        from nodes.diffusion.impl.embeddings import EmbeddingError, EmbeddingFiles

        try:
            return encode_text(clip, text, clip_skip, ctx.check_interrupted, EmbeddingFiles(ctx.settings))
        except EmbeddingError as exc:
            raise NodeError(str(exc), field="text") from None


def encode_text(
    clip: "TextEncoders", text: str, clip_skip: int = 1, check: "Callable[[], None]" = lambda: None,
    embeddings: Any = None,
    texts: "list[str] | None" = None,
) -> "Conditioning":
    """:func:`_encode_text` with the CLIP record's LoRA adapters (and only those) on.
    ``texts``: one prompt per encoder instead (SDXL's text_l and text_g)."""
    from nodes.diffusion.impl.lora import active

    with active(clip.encoders, clip.adapters):
        return _encode_text(clip, text, clip_skip, check, embeddings, texts)


def _encode_text(
    clip: "TextEncoders", text: str, clip_skip: int = 1, check: "Callable[[], None]" = lambda: None,
    embeddings: Any = None, texts: "list[str] | None" = None,
) -> "Conditioning":
    """Embeddings [1, 77 * windows, dim] for ``text``; for SDXL the two encoders' penultimate
    layers side by side (768 + 1280) and the pooled embedding of the second encoder.

    Emphasis multiplies each token's embedding by its weight, then rescales the window so
    its mean is what it was before weighting (the A1111 method); unweighted windows are
    left untouched, so a plain prompt encodes exactly as diffusers' pipelines encode it.

    ``embeddings`` (an :class:`~nodes.diffusion.impl.embeddings.EmbeddingFiles`) reads the
    ``embedding:NAME`` textual inversions of the prompt; without it they are plain text."""
    import torch

    from nodes.diffusion.impl.prompt import weighted_tokens, windows
    from nodes.diffusion.types import Conditioning

    sdxl = clip.family.name in ("sdxl", "sdxl_refiner")  # the refiner: SDXL's second encoder alone
    layers = min(encoder.config.num_hidden_layers for encoder in clip.encoders)
    if clip_skip > layers:
        raise NodeError(f'{clip_skip} is more than the text encoder\'s {layers} layers', field="clip_skip")

    per_encoder: list[list[Window]] = []
    for index, tokenizer in enumerate(clip.tokenizers):
        pad = clip.pad_token_ids[index] if index < len(clip.pad_token_ids) else tokenizer.pad_token_id
        width = clip.encoders[index].get_input_embeddings().embedding_dim
        lookup = (lambda name, width=width: embeddings.vectors(name, width)) if embeddings is not None else None
        prompt = texts[index] if texts is not None else text
        per_encoder.append(windows(weighted_tokens(tokenizer, prompt, check, lookup), tokenizer.bos_token_id,
                                   tokenizer.eos_token_id, pad))
    if len({len(w) for w in per_encoder}) != 1:
        if texts is not None:
            raise NodeError("text_g and text_l are of different lengths in 75-token windows; make them the same number of windows")
        raise NodeError("the model's tokenizers split this prompt differently; cannot combine its encoders")

    chunks, pooled = [], None
    with torch.no_grad():
        for position, group in enumerate(zip(*per_encoder)):
            parts = []
            for index, (encoder, window) in enumerate(zip(clip.encoders, group)):
                hidden, pooled_here = _encode_window(encoder, window.ids, clip_skip, sdxl, window.vectors)
                parts.append(hidden)
                if position == 0 and pooled_here is not None:
                    pooled = pooled_here
            embeds = torch.cat(parts, dim=-1)
            chunks.append(_apply_weights(embeds, group[0].weights))
    return Conditioning(torch.cat(chunks, dim=1), pooled if sdxl else None, {})


def _encode_window(
    encoder: Any, ids: list[int], clip_skip: int, sdxl: bool, vectors: dict[int, Any] | None = None
) -> tuple["torch.Tensor", "torch.Tensor | None"]:
    """Hidden states [1, 77, dim] of one window, and the projected pooled output when the
    encoder has a projection. ``vectors`` replace the input embeddings at their positions
    (textual inversion), through a hook for this call only: the cached encoder is unchanged."""
    import torch

    input_ids = torch.tensor([ids], dtype=torch.long, device=encoder.device)
    needs_layers = sdxl or clip_skip > 1
    hook = None
    if vectors:
        def replace(module: Any, args: Any, output: "torch.Tensor") -> "torch.Tensor":
            output = output.clone()
            for position, vector in vectors.items():
                output[0, position] = vector.to(device=output.device, dtype=output.dtype)
            return output

        hook = encoder.get_input_embeddings().register_forward_hook(replace)
    try:
        out = encoder(input_ids=input_ids, output_hidden_states=needs_layers)
    finally:
        if hook is not None:
            hook.remove()
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
