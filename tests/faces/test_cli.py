"""The command line as a user runs it: real processes, real files, real exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.support import FIXTURES, ROOT

USER_NODES = FIXTURES / "user_nodes"


def nodeflow(*args: str, cwd: Path, user_nodes: bool = True, entry: str = "cli", **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "main.py")] if entry == "main.py" else [sys.executable, "-m", "nodeflow.cli"]
    if user_nodes:
        command += ["--user-nodes", str(USER_NODES)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kwargs)


def write_workflow(path: Path, nodes: list[dict], links: list[tuple[str, str, str, str]]) -> Path:
    doc = {
        "format": "nodeflow.workflow",
        "version": 1,
        "nodes": nodes,
        "links": [{"from": {"node": s, "output": o}, "to": {"node": t, "input": i}} for s, o, t, i in links],
    }
    path.write_text(json.dumps(doc))
    return path


def adder(path: Path, value: float = 2.0, b: float = 3.0, extra: list[dict] | None = None, links=()) -> Path:
    nodes = [
        {"id": "1", "type": "UNumber", "values": {"value": value}},
        {"id": "2", "type": "UAdd", "title": "adder", "values": {"b": b}},
        {"id": "3", "type": "UWrite", "values": {"prefix": "sum"}},
    ] + (extra or [])
    return write_workflow(path, nodes, [("1", "value", "2", "a"), ("2", "sum", "3", "value"), *links])


def test_run_writes_output_and_reports_json(tmp_path):
    wf = adder(tmp_path / "add.json")
    proc = nodeflow("run", str(wf), "-o", str(tmp_path / "out"), "--report", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "ok"
    assert sorted(report["executed"]) == ["1", "2", "3"]
    assert set(report["timings"]) == {"1", "2", "3"}
    written = Path(report["output_files"][0])
    assert written.read_text() == "5\n"


def test_set_overrides_a_value_by_id_and_by_title(tmp_path):
    wf = adder(tmp_path / "add.json")
    out = tmp_path / "out"
    proc = nodeflow("run", str(wf), "-o", str(out), "--set", "1.value=10", "--set", "adder.b=0.5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "sum.txt").read_text() == "10.5\n"
    assert "wrote" in proc.stdout


def test_bad_override_is_a_usage_error_naming_the_field(tmp_path):
    wf = adder(tmp_path / "add.json")
    proc = nodeflow("run", str(wf), "--set", "1.value=1000", cwd=tmp_path)
    assert proc.returncode == 2
    assert "value" in proc.stderr and "maximum" in proc.stderr
    proc = nodeflow("run", str(wf), "--set", "nosuchnode.value=1", cwd=tmp_path)
    assert proc.returncode == 2 and "nosuchnode" in proc.stderr


def test_invalid_workflow_lists_every_problem_and_exits_2(tmp_path):
    wf = write_workflow(
        tmp_path / "bad.json",
        [
            {"id": "1", "type": "UNumber", "values": {"value": 500}},  # above the maximum
            {"id": "2", "type": "UAdd", "values": {}},  # required socket `a` unlinked
            {"id": "3", "type": "UWrite", "values": {}},
            {"id": "4", "type": "NoSuchType", "values": {}},
        ],
        [("2", "sum", "3", "value")],
    )
    proc = nodeflow("run", str(wf), cwd=tmp_path)
    assert proc.returncode == 2
    # Run checks what the outputs need (node 1 feeds nothing), and a node of an unknown type,
    # which might be an output; `validate` checks every node.
    for needle in ("node 2", '"a"', "NoSuchType"):
        assert needle in proc.stderr, (needle, proc.stderr)
    assert "node 1" not in proc.stderr

    proc = nodeflow("validate", str(wf), "--json", cwd=tmp_path)
    assert proc.returncode == 2
    problems = json.loads(proc.stdout)["problems"]
    where = {(p["node_id"], p.get("field")) for p in problems}
    assert ("1", "value") in where and ("2", "a") in where
    assert any(p["node_type"] == "NoSuchType" for p in problems)


def test_validate_accepts_a_good_workflow(tmp_path):
    proc = nodeflow("validate", str(adder(tmp_path / "add.json")), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout


def test_malformed_and_missing_files_are_usage_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "nodeflow.workflow", "version": 1, "nodes": [')
    proc = nodeflow("run", str(broken), cwd=tmp_path)
    assert proc.returncode == 2 and "broken.json" in proc.stderr and "Traceback" not in proc.stderr
    proc = nodeflow("run", str(tmp_path / "missing.json"), cwd=tmp_path)
    assert proc.returncode == 2 and "missing.json" in proc.stderr


def test_failing_node_exits_1_and_names_the_node(tmp_path):
    wf = adder(tmp_path / "f.json", extra=[{"id": "9", "type": "UFail", "values": {"fail": True}}])
    doc = json.loads(wf.read_text())
    doc["links"] = [
        {"from": {"node": "1", "output": "value"}, "to": {"node": "9", "input": "value"}},
        {"from": {"node": "9", "output": "value"}, "to": {"node": "2", "input": "a"}},
        {"from": {"node": "2", "output": "sum"}, "to": {"node": "3", "input": "value"}},
    ]
    wf.write_text(json.dumps(doc))
    proc = nodeflow("run", str(wf), cwd=tmp_path)
    assert proc.returncode == 1
    assert "9" in proc.stderr and "UFail" in proc.stderr and "failing on purpose" in proc.stderr


def test_ctrl_c_interrupts_at_the_next_step_with_exit_130(tmp_path):
    wf = adder(tmp_path / "slow.json", extra=[{"id": "5", "type": "USlow", "values": {"steps": 10_000, "delay": 0.01}}])
    doc = json.loads(wf.read_text())
    doc["links"] = [
        {"from": {"node": "1", "output": "value"}, "to": {"node": "5", "input": "value"}},
        {"from": {"node": "5", "output": "value"}, "to": {"node": "2", "input": "a"}},
        {"from": {"node": "2", "output": "sum"}, "to": {"node": "3", "input": "value"}},
    ]
    wf.write_text(json.dumps(doc))
    command = [sys.executable, "-m", "nodeflow.cli", "--user-nodes", str(USER_NODES), "run", str(wf), "-o", "out"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)  # well into the 100 s slow node
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not (tmp_path / "out" / "sum.txt").exists()


def test_nodes_lists_declarations_and_user_nodes_only_when_enabled(tmp_path):
    with_user = nodeflow("nodes", "--json", cwd=tmp_path)
    assert with_user.returncode == 0, with_user.stderr
    declared = {d["type"]: d for d in json.loads(with_user.stdout)}
    assert declared["UAdd"]["inputs"][1] == {"name": "b", "kind": "float", "type": "FLOAT", "default": 1.0, "min": -100, "max": 100, "step": 0.01}
    without = nodeflow("nodes", "--json", cwd=tmp_path, user_nodes=False)
    assert "UAdd" not in {d["type"] for d in json.loads(without.stdout)}
    text = nodeflow("nodes", cwd=tmp_path)
    assert "UAdd" in text.stdout and "user" in text.stdout


def test_main_py_is_the_same_cli(tmp_path):
    wf = adder(tmp_path / "add.json")
    proc = nodeflow("run", str(wf), "-o", "out", cwd=tmp_path, entry="main.py")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "sum.txt").read_text() == "5\n"


def test_a_half_wired_node_that_feeds_no_output_does_not_block_run(tmp_path):
    path = adder(tmp_path / "add.json", extra=[{"id": "99", "type": "UAdd", "values": {}}])  # unwired
    proc = nodeflow("run", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "not run, they feed no output node: 99 (UAdd)" in proc.stderr
    proc = nodeflow("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 2 and "node 99" in proc.stderr + proc.stdout
