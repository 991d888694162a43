"""Small files with values at the edges of what JSON spells: every one ends in a clear
error saying where, never a traceback, and what loads saves and embeds unchanged."""

from __future__ import annotations

import json

import pytest

from nodeflow.files.open import workflow_from_dict, workflow_from_json
from nodeflow.files.workflow import WorkflowError
from nodeflow.host.config import ConfigError, load_models_config
from nodeflow.model.registry import default_registry
from nodeflow.model.validation import validate
from nodes.diffusion.impl.metadata import workflow_text
from tests.support import ROOT

BASE = json.loads((ROOT / "workflows" / "txt2img.json").read_text())


@pytest.fixture(scope="module")
def registry():
    return default_registry()


def _with_value(node_type: str, field: str, literal: str) -> str:
    """txt2img.json as text with ``node_type``'s ``field`` replaced by the raw JSON ``literal``."""
    document = json.loads(json.dumps(BASE))
    node = next(n for n in document["nodes"] if n["type"] == node_type)
    node["values"][field] = "@@here@@"
    return json.dumps(document).replace('"@@here@@"', literal)


@pytest.mark.parametrize("literal", ["9" * 5000, "-" + "9" * 4301, "1e999", "-1e999", "NaN", "Infinity"])
def test_numbers_json_cannot_hold_are_refused_when_read(registry, literal):
    with pytest.raises(WorkflowError) as caught:
        workflow_from_json(_with_value("Sampler", "steps", literal), registry)
    assert "digits" in str(caught.value) or "finite" in str(caught.value)


@pytest.mark.parametrize("node_type, field, value", [
    ("CFG", "scale", 10**400),   # past float range: float() overflows
    ("Sampler", "steps", 10**400),
    ("Noise", "seed", -(10**300)),
])
def test_huge_numbers_are_field_problems(registry, node_type, field, value):
    workflow = workflow_from_json(_with_value(node_type, field, str(value)), registry)
    problems = [p for p in validate(workflow.graph, extra_problems=workflow.problems) if p.field == field]
    assert problems and "digits" in problems[0].message


def test_numbers_python_cannot_print_are_refused_in_documents_built_in_code(registry):
    document = json.loads(json.dumps(BASE))
    document["nodes"][0]["values"]["checkpoint"] = 10**5000
    with pytest.raises(WorkflowError, match=r"nodes\[0\]\.values\.checkpoint.*digits"):
        workflow_from_dict(document, registry)
    document["nodes"][0]["values"]["checkpoint"] = float("nan")
    with pytest.raises(WorkflowError, match="finite"):
        workflow_from_dict(document, registry)


@pytest.mark.parametrize("position", ["1" + "0" * 400, "1e999", "1e300"])
def test_positions_that_would_not_reopen_are_refused(registry, position):
    document = json.loads(json.dumps(BASE))
    document["ui"] = {"nodes": {"1": {"pos": ["@@x@@", 0]}}}
    with pytest.raises(WorkflowError, match=r"ui\.nodes\['1'\]\.pos|finite"):
        workflow_from_json(json.dumps(document).replace('"@@x@@"', position), registry)


def test_a_huge_node_id_orders_without_error(registry):
    document = json.loads(json.dumps(BASE))
    document["nodes"].append({"id": "9" * 5000, "type": "PreviewImage", "values": {}})
    workflow = workflow_from_dict(document, registry)
    validate(workflow.graph, extra_problems=workflow.problems)
    assert workflow_from_dict(workflow.to_dict(), registry).to_dict() == workflow.to_dict()


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "\udc80\udc80"])
def test_lone_surrogates_survive_the_png_copy_exactly(registry, text):
    document = json.loads(json.dumps(BASE))
    next(n for n in document["nodes"] if n["type"] == "TextEncoder")["values"]["text"] = text
    document["meta"] = {text: text}
    workflow = workflow_from_dict(document, registry)
    embedded = workflow_text(workflow.to_dict()).encode("utf-8")  # what SaveImage writes: UTF-8 text
    assert workflow_from_json(embedded, registry).to_dict() == workflow.to_dict()


@pytest.mark.parametrize("steps", [10**20, 10**400, 10**5000], ids=["1e20", "1e400", "1e5000"])
def test_comfyui_ksampler_advanced_with_huge_steps_is_a_clear_problem(registry, steps):
    api = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "shapes"}},
        "3": {"class_type": "KSamplerAdvanced", "inputs": {
            "model": ["4", 0], "add_noise": "enable", "noise_seed": 1, "steps": steps, "cfg": 7.0,
            "sampler_name": "euler", "scheduler": "normal", "positive": ["4", 1], "negative": ["4", 1],
            "latent_image": ["4", 2], "start_at_step": 3, "end_at_step": 10000, "return_with_leftover_noise": "disable"}},
    }
    try:
        workflow = workflow_from_dict(api, registry)
    except WorkflowError as error:
        assert str(error)
        return
    problems = validate(workflow.graph, extra_problems=workflow.problems)
    assert any(p.field == "steps" for p in problems)


@pytest.mark.parametrize("content", [
    '{"model_folders": {"checkpoints": 5}}',
    '{"model_folders": {"checkpoints": [1, 2]}}',
    '{"models": {"a": 1}}',
    '{"models": ' + "9" * 5000 + '}',
    '{"model_folders": 1e999}',
])
def test_a_bad_config_file_is_a_config_error(tmp_path, content):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_models_config(environ={"NODEFLOW_CONFIG_DIR": str(tmp_path)})
    assert "config.json" in str(caught.value)
