"""``embedding:NAME`` in a prompt: textual-inversion vectors read from the embeddings folder.

The test embedding is the tiny CLIP's own input embedding of the word "red", so a prompt
with ``embedding:red_vec`` in place of "red" must encode exactly as the word does, from
a .safetensors file and from an A1111-style .pt file (read weights-only) alike.
"""

from __future__ import annotations

import os
import pickle

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodeflow import NodeError, RunContext, RunSettings  # noqa: E402
from nodes.diffusion.impl.embeddings import EmbeddingFiles  # noqa: E402
from nodes.diffusion.text import TextEncoder, encode_text  # noqa: E402
from tests.support.tiny_models import shared_tiny_sd  # noqa: E402


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from nodes.diffusion.loaders import Checkpoint

    model = shared_tiny_sd(tmp_path_factory)
    ctx = RunContext(settings=RunSettings(model_folders={"checkpoints": [model.parent]}))
    return Checkpoint().run(ctx, model.name, "fp32", "auto")["clip"]


@pytest.fixture
def folder(tmp_path, tiny_clip):
    from safetensors.torch import save_file

    tokenizer, encoder = tiny_clip.tokenizers[0], tiny_clip.encoders[0]
    ids = tokenizer("red", add_special_tokens=False).input_ids
    assert len(ids) == 1
    vector = encoder.get_input_embeddings().weight[ids].detach().clone()
    embeddings = tmp_path / "embeddings"
    embeddings.mkdir()
    save_file({"emb_params": vector}, str(embeddings / "red_vec.safetensors"))
    torch.save({"string_to_param": {"*": vector}, "name": "red_pt", "step": 100}, embeddings / "red_pt.pt")
    return embeddings


def test_an_embedding_encodes_as_the_word_its_vectors_are(tiny_clip, folder):
    files = EmbeddingFiles(RunSettings(model_folders={"embeddings": [folder]}))
    word = encode_text(tiny_clip, "a red circle").embeds
    assert torch.equal(encode_text(tiny_clip, "a embedding:red_vec circle", 1, embeddings=files).embeds, word)
    assert torch.equal(encode_text(tiny_clip, "a embedding:red_pt.pt circle", 1, embeddings=files).embeds, word)
    # without the embedding the prompt means something else
    assert not torch.equal(encode_text(tiny_clip, "a blue circle").embeds, word)


def test_a_missing_or_unsafe_embedding_is_refused_naming_the_file(tiny_clip, folder):
    settings = RunSettings(model_folders={"embeddings": [folder]})
    node = TextEncoder()
    with pytest.raises(NodeError) as error:
        node.run(RunContext(settings=settings), tiny_clip, "a embedding:nothere circle", 1)
    assert error.value.field == "text" and "'nothere'" in str(error.value) and str(folder) in str(error.value)

    class Payload:
        def __reduce__(self):
            return (print, ("this must not run",))

    (folder / "evil.pt").write_bytes(pickle.dumps({"string_to_param": {"*": Payload()}}))
    with pytest.raises(NodeError, match="cannot read embedding 'evil.pt'"):
        node.run(RunContext(settings=settings), tiny_clip, "embedding:evil", 1)

    # validate finds the missing one before a run (Node.check_host)
    assert "'embedding:nothere'" in TextEncoder.check_host({"text": "a embedding:nothere"}, RunContext(settings=settings))["text"]
    assert TextEncoder.check_host({"text": "a embedding:red_vec"}, RunContext(settings=settings)) == {}


def test_a_weighted_embedding_is_found_before_the_run_and_encodes_as_the_weighted_word(tiny_clip, folder):
    # ComfyUI's published workflows write "(embedding:NAME:1.2)"; the check read the raw
    # text and looked for a file named "NAME:1.2)", so validate refused a present file
    settings = RunSettings(model_folders={"embeddings": [folder]})
    for text in ("(embedding:red_vec:1.2), a circle", "[embedding:red_vec]", "((embedding:red_pt.pt))", "x BREAK (embedding:red_vec:0.8)"):
        assert TextEncoder.check_host({"text": text}, RunContext(settings=settings)) == {}, text
    assert "'embedding:nothere'" in TextEncoder.check_host({"text": "(embedding:nothere:1.2)"}, RunContext(settings=settings))["text"]

    files = EmbeddingFiles(settings)
    word = encode_text(tiny_clip, "a (red:1.2) circle").embeds
    assert torch.equal(encode_text(tiny_clip, "a (embedding:red_vec:1.2) circle", 1, embeddings=files).embeds, word)
