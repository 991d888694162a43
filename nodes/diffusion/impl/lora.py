"""LoRA weights: read once into the shared models as PEFT adapters, switched on per run.

A checkpoint's UNet and text encoders are cached link values shared by every node that
uses them, so a LoRA must never change them for the others. It is loaded into them
as a named PEFT adapter (diffusers' LoRA loaders convert kohya/A1111 ``lora_unet_*`` /
``lora_te*_`` files and read diffusers/PEFT files), which leaves the base weights
untouched; the LoRA node's output is a *new* model record that lists the adapters it
wants and their strengths. Whoever runs a model (the sampler, the text encoder) does it
inside :func:`active`, which, under one lock, switches on exactly the record's adapters
at its strengths, or all of them off for a plain model. Changing a strength is then only
a new list: no file is read again, the base runs exactly as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import warnings
import weakref
from pathlib import Path
from typing import Any, Iterator, Sequence

from nodes.diffusion.impl.ldm import CheckpointError

# One lock for every adapter switch and the model calls made under it: two runs sharing
# a UNet must not see each other's adapters.
_LOCK = threading.RLock()
Adapters = tuple[tuple[str, float], ...]  # (adapter name, strength), in stacking order
# Adapters injected into transformers text encoders with peft directly (see _load_text).
_TEXT_ADAPTERS: "weakref.WeakKeyDictionary[Any, set[str]]" = weakref.WeakKeyDictionary()


def adapter_name(path: Path, stamp: str) -> str:
    """One adapter per file version (a replaced file is a new adapter)."""
    return "lora_" + hashlib.sha256(f"{path.resolve()}|{stamp}".encode()).hexdigest()[:16]


def read_lora(path: Path, family: str, unet_config: Any) -> tuple[dict[str, Any], dict[str, float] | None]:
    """The file's LoRA weights in diffusers naming (``unet.*``, ``text_encoder*.*``) and
    the kohya network alphas, through diffusers' converters."""
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    from nodes.diffusion.impl.loading import read_state_dict

    state = read_state_dict(path)
    if not state:
        raise CheckpointError("the file holds no tensors")
    if not any(("lora" in k or "alpha" in k) for k in state):
        raise CheckpointError("not a LoRA file: no lora_* / *.lora_A / *.lora_down weights")
    mixin = StableDiffusionXLLoraLoaderMixin if family == "sdxl" else StableDiffusionLoraLoaderMixin
    try:
        weights, alphas = mixin.lora_state_dict(state, unet_config=unet_config)
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"not a LoRA diffusers can read ({error})") from None
    return weights, alphas


def load_into(
    name: str, weights: dict[str, Any], alphas: dict[str, float] | None, unet: Any, encoders: Sequence[Any]
) -> tuple[bool, bool]:
    """Load adapter ``name`` into the UNet and the text encoders unless already there;
    whether the UNet and any text encoder now have it."""
    with _LOCK:
        if unet is not None and name not in _names(unet) and any(k.startswith("unet.") for k in weights):
            unet.load_lora_adapter(weights, prefix="unet", network_alphas=alphas, adapter_name=name)
        for index, encoder in enumerate(encoders):
            prefix = "text_encoder" if index == 0 else f"text_encoder_{index + 1}"
            if name not in _names(encoder) and any(k.startswith(prefix + ".") for k in weights):
                _load_text(name, weights, alphas, encoder, prefix)
        in_unet = unet is not None and name in _names(unet)
        in_text = any(name in _names(e) for e in encoders)
    return in_unet, in_text


def loaded_in(name: str, unet: Any, encoders: Sequence[Any]) -> tuple[bool, bool] | None:
    """Where adapter ``name`` is when it was loaded for these models before (so its file
    need not be read again), else None."""
    with _LOCK:
        in_unet, in_text = name in _names(unet), any(name in _names(e) for e in encoders)
    if not in_unet or (encoders and not in_text):
        return None  # (a LoRA without text-encoder weights is read again: a small file)
    return in_unet, in_text


def _load_text(name: str, weights: dict[str, Any], alphas: dict[str, float] | None, encoder: Any, prefix: str) -> None:
    """The text-encoder part of a LoRA, injected with peft itself: the steps of diffusers'
    text-encoder loader (its key conversions and LoRA config) without transformers' adapter
    integration, which asks for a newer peft than the registries have."""
    from diffusers.utils.peft_utils import _create_lora_config
    from diffusers.utils.state_dict_utils import StateDictType, convert_state_dict_to_diffusers, convert_state_dict_to_peft
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    state = {k.removeprefix(prefix + "."): v for k, v in weights.items() if k.startswith(prefix + ".")}
    # Kohya files come out of diffusers' converter in its old naming (to_q_lora.down), which
    # its own detection recognises only when out_proj is among the layers: say so.
    old = any(re.search(r"\.to_(q|k|v|out)_lora\.(down|up)\.", k) for k in state)
    state = convert_state_dict_to_diffusers(state, original_type=StateDictType.DIFFUSERS_OLD if old else None)
    state = convert_state_dict_to_peft(state)
    if not hasattr(encoder, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    rank = {k: v.shape[1] for k, v in state.items() if k.endswith("lora_B.weight")}
    if alphas is not None:
        alphas = {k.removeprefix(prefix + "."): v for k, v in alphas.items() if k.split(".")[0] == prefix}
    config = _create_lora_config(state, alphas, None, rank, is_unet=False)
    with warnings.catch_warnings():  # "multiple adapters in the model": stacking them is the point
        warnings.simplefilter("ignore", UserWarning)
        inject_adapter_in_model(config, encoder, adapter_name=name)
    result = set_peft_model_state_dict(encoder, state, adapter_name=name)
    unexpected = list(getattr(result, "unexpected_keys", None) or ())
    if unexpected:
        raise CheckpointError(f"text-encoder LoRA weights fit no layer: {unexpected[:3]}")
    encoder.to(device=encoder.device, dtype=encoder.dtype)
    _TEXT_ADAPTERS.setdefault(encoder, set()).add(name)


@contextlib.contextmanager
def active(modules: Sequence[Any], adapters: Adapters) -> Iterator[None]:
    """Run the block with exactly ``adapters`` on in ``modules`` (UNet or text encoders);
    a module that never had an adapter is run as it is, without the lock."""
    if not any(_names(m) for m in modules):
        yield
        return
    with _LOCK:
        for module in modules:
            _switch(module, adapters)
        yield


def switch(module: Any, adapters: Adapters) -> None:
    """Switch exactly ``adapters`` on in ``module``, a copy of a model's modules that shares
    its LoRA layers' weights (impl/gligen.py), inside the run's :func:`active` block."""
    with _LOCK:
        _switch(module, adapters)


def adapter_names(module: Any) -> set[str]:
    """The adapters loaded into ``module``."""
    return _names(module)


def _switch(module: Any, adapters: Adapters) -> None:
    from diffusers.utils.peft_utils import set_adapter_layers, set_weights_and_activate_adapters

    have = _names(module)
    if not have:
        return
    strengths: dict[str, float] = {}
    for name, strength in adapters:  # the same file stacked twice adds up (LoRA is linear in its weight)
        if name in have:
            strengths[name] = strengths.get(name, 0.0) + strength
    if not strengths:
        set_adapter_layers(module, enabled=False)
        return
    set_adapter_layers(module, enabled=True)
    if hasattr(module, "set_adapters"):  # a diffusers model
        module.set_adapters(list(strengths), list(strengths.values()))
    else:  # a transformers text encoder
        set_weights_and_activate_adapters(module, list(strengths), list(strengths.values()))


def _names(module: Any) -> set[str]:
    if module is None:
        return set()
    return set(getattr(module, "peft_config", None) or ()) | _TEXT_ADAPTERS.get(module, set())
