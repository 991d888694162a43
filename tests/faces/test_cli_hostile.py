"""The command line refuses hostile or impossible requests with a message, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.faces.test_cli import nodeflow
from tests.support import FIXTURES, ROOT

COMFY = sorted((FIXTURES / "comfyui").glob("*.json"))[0]


def _clean_failure(proc) -> str:
    assert proc.returncode not in (0, 1) or "Traceback" not in proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


def test_import_into_a_missing_folder_blames_the_target(tmp_path):
    proc = nodeflow("import", str(COMFY), "-o", str(tmp_path / "no" / "such" / "out.json"), cwd=tmp_path)
    message = _clean_failure(proc)
    assert proc.returncode != 0 and "cannot write" in message and "no/such/out.json" in message
    assert "no such file: " + str(COMFY) not in message


def test_import_onto_a_full_disk_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import os

    from nodeflow.cli import main

    def full_disk(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    code = main(["import", str(COMFY), "-o", str(tmp_path / "out.json")])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code != 0 and "cannot write" in err and "No space left" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no torn file, no temporary


@pytest.mark.parametrize("text", [
    '{"format": "nodeflow.workflow", "version": ' + "9" * 5000 + "}",
    '{"format": "nodeflow.workflow", "version": 1, "nodes": [], "ui": {"nodes": {"1": {"pos": [1e999, 0]}}}}',
    '{"3": {"class_type": "KSamplerAdvanced", "inputs": {"steps": ' + "1" + "0" * 400 + ', "start_at_step": 2}}}',
])
def test_validate_and_run_of_small_hostile_files_end_in_a_message(tmp_path, text):
    (tmp_path / "bad.json").write_text(text)
    for command in (["validate", "bad.json"], ["run", "bad.json"]):
        proc = nodeflow(*command, cwd=tmp_path)
        assert proc.returncode != 0 and _clean_failure(proc).strip()


def test_validate_finds_files_that_a_run_would_miss(tmp_path):
    document = json.loads((ROOT / "workflows" / "img2img.json").read_text())
    (tmp_path / "input").mkdir()
    (tmp_path / "wf.json").write_text(json.dumps(document))
    (tmp_path / "output").write_text("not a folder")
    proc = nodeflow("validate", "wf.json", "--json", cwd=tmp_path)
    assert proc.returncode != 0
    problems = json.loads(proc.stdout)["problems"]
    fields = {(p.get("node_type"), p.get("field")) for p in problems}
    assert ("LoadImage", "image") in fields
    assert any("not a folder" in p["message"] for p in problems)
