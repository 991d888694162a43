"""validate reports a model file that is not there, before anything runs.

The problem names the node, the field, the folders searched and the nearest name found,
so a workflow shared with another file name (``v1-5-pruned.safetensors`` vs
``v1-5-pruned-emaonly.safetensors``) is fixed in one go rather than by a failed run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import nodeflow.api as api
from nodeflow import RunContext, RunSettings
from nodeflow.model.problems import ProblemCode
from nodeflow.model.validation import validate
from tests.support import ROOT


def _checkpoint_flow(name: str) -> api.Flow:
    flow = api.new(device="cpu")
    flow.add("Checkpoint", "ckpt", checkpoint=name)
    flow.add("TextEncoder", "pos", text="x")
    flow.add("PreviewImage", "show")
    flow.add("VAEDecode", "decode")
    flow.add("EmptyLatent", "latent")
    flow.add("Sampler", "s")
    flow.add("Noise", "n")
    flow.add("BasicGuider", "g")
    for source, target in [("ckpt.clip", "pos.clip"), ("ckpt.model", "g.model"), ("pos.conditioning", "g.conditioning"),
                           ("g.guider", "s.guider"), ("n.noise", "s.noise"), ("latent.latent", "s.latent"),
                           ("s.latent", "decode.latent"), ("ckpt.vae", "decode.vae"), ("decode.image", "show.images")]:
        flow.connect(source, target)
    return flow


def test_a_missing_checkpoint_is_a_validation_problem_with_the_nearest_name(tmp_path):
    (tmp_path / "v1-5-pruned-emaonly.safetensors").write_bytes(b"not read by validate")
    settings = RunSettings(model_folders={"checkpoints": [tmp_path]})
    flow = _checkpoint_flow("v1-5-pruned.safetensors")
    problems = [p for p in validate(flow.graph, context=RunContext(settings=settings)) if p.code == ProblemCode.MISSING_FILE]
    assert len(problems) == 1
    problem = problems[0]
    assert (problem.node_id, problem.node_type, problem.field) == ("ckpt", "Checkpoint", "checkpoint")
    assert str(tmp_path) in problem.message and "'v1-5-pruned-emaonly.safetensors'" in problem.message

    flow.set("ckpt", "checkpoint", "v1-5-pruned-emaonly.safetensors")
    assert not [p for p in validate(flow.graph, context=RunContext(settings=settings)) if p.code == ProblemCode.MISSING_FILE]


def test_the_validate_command_reports_the_missing_file(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "dreamshaper_8.safetensors").write_bytes(b"x")
    workflow = tmp_path / "flow.json"
    _checkpoint_flow("dreamshaper_7.safetensors").save(workflow)
    done = subprocess.run(
        [sys.executable, "-m", "nodeflow.cli", "validate", str(workflow), "--models", str(tmp_path), "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert done.returncode != 0
    problems = json.loads(done.stdout)["problems"]
    missing = [p for p in problems if p["code"] == "missing_file"]
    assert missing and missing[0]["node_id"] == "ckpt" and missing[0]["field"] == "checkpoint"
    assert "dreamshaper_8.safetensors" in missing[0]["message"]
