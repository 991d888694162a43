"""`nodeflow run --server URL` against a real `nodeflow serve` on loopback: the same files,
names, messages and exit codes as a run in the process, and never a silent local run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support import FIXTURES, ROOT, WORKFLOWS
from tests.support.server_harness import Server

USER_NODES = FIXTURES / "user_nodes"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("server")).start()
    yield srv
    srv.stop()


def nodeflow(*args: str, cwd: Path, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "nodeflow.cli", "--user-nodes", str(USER_NODES), *args]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    if "NODEFLOW_SERVER" not in (env or {}):
        full_env.pop("NODEFLOW_SERVER", None)
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300, **kwargs)


def user_workflow(path: Path, nodes: list[dict], links: list[tuple[str, str, str, str]]) -> Path:
    path.write_text(json.dumps({
        "format": "nodeflow.workflow", "version": 1, "nodes": nodes,
        "links": [{"from": {"node": s, "output": o}, "to": {"node": t, "input": i}} for s, o, t, i in links],
    }))
    return path


def test_the_default_workflow_through_a_server_writes_what_a_local_run_writes(server, tmp_path):
    here = nodeflow("run", str(WORKFLOWS / "default.json"), "--set", "7.steps=4", "-o", "here", "--local",
                    cwd=tmp_path, env={"NODEFLOW_SERVER": server.url})
    assert here.returncode == 0, here.stderr
    assert "server" not in here.stderr  # --local: this process, even with NODEFLOW_SERVER set

    first = nodeflow("run", str(WORKFLOWS / "default.json"), "--set", "7.steps=4", "-o", "there",
                     "--server", server.url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"running on the server at {server.url}" in first.stderr
    # The same name, and the same bytes: pixels and the workflow stored in the PNG.
    assert "wrote there/nodeflow_00001.png" in first.stdout
    (mine,), (theirs,) = sorted((tmp_path / "here").iterdir()), sorted((tmp_path / "there").iterdir())
    assert mine.name == theirs.name and theirs.read_bytes() == mine.read_bytes()

    # Again, through NODEFLOW_SERVER: everything but the save is cached on the server, and
    # the image is saved again under the next local number, as a second local run would.
    again = nodeflow("run", str(WORKFLOWS / "default.json"), "--set", "7.steps=4", "-o", "there", "--report", "json",
                     cwd=tmp_path, env={"NODEFLOW_SERVER": server.url})
    assert again.returncode == 0, again.stderr
    assert "(NODEFLOW_SERVER; --local runs here)" in again.stderr
    report = json.loads(again.stdout)
    assert report["status"] == "ok" and report["executed"] == ["9"] and "7" in report["cached"]
    assert report["output_files"] == ["there/nodeflow_00002.png"]
    assert (tmp_path / "there" / "nodeflow_00002.png").read_bytes() == (tmp_path / "here" / "nodeflow_00001.png").read_bytes()

    no_metadata = nodeflow("run", str(WORKFLOWS / "default.json"), "--set", "7.steps=4", "-o", "bare", "--no-metadata",
                           "--server", server.url, cwd=tmp_path)
    assert no_metadata.returncode == 0, no_metadata.stderr
    from PIL import Image

    assert "nodeflow" not in Image.open(tmp_path / "bare" / "nodeflow_00001.png").info


def test_errors_and_exit_codes_are_those_of_a_local_run(tmp_path, monkeypatch):
    monkeypatch.setenv("NODEFLOW_USER_NODES", str(USER_NODES))  # a server that knows the user nodes too
    srv = Server(tmp_path / "server").start()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    try:
        failing = user_workflow(tmp_path / "fail.json", [
            {"id": "1", "type": "UNumber", "values": {"value": 2}},
            {"id": "9", "type": "UFail", "values": {"fail": True}},
            {"id": "3", "type": "UWrite", "values": {"prefix": "sum"}},
        ], [("1", "value", "9", "value"), ("9", "value", "3", "value")])
        for where in (["--local"], ["--server", srv.url]):
            proc = nodeflow("run", str(failing), "-o", "out", *where, cwd=tmp_path)
            assert proc.returncode == 1, proc.stderr
            assert "node 9 (UFail) failed" in proc.stderr and "failing on purpose" in proc.stderr

        # A model file that is not there: found when the job is about to run, reported as a
        # local run reports it (the problem with node and field, exit 2).
        proc = nodeflow("run", str(WORKFLOWS / "default.json"), "--set", "1.checkpoint=nope", "--server", srv.url,
                        cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert 'not runnable, 1 problem(s)' in proc.stderr and 'node 1 (Checkpoint) field "checkpoint"' in proc.stderr

        # Options that only a local run can honour are refused, not ignored.
        proc = nodeflow("run", str(failing), "--device", "cpu", "--server", srv.url, cwd=tmp_path)
        assert proc.returncode == 2 and "--device" in proc.stderr and "--local" in proc.stderr

        # Ctrl+C cancels the job on the server and exits 130, as it interrupts a local run.
        slow = user_workflow(tmp_path / "slow.json", [
            {"id": "1", "type": "UNumber", "values": {"value": 2}},
            {"id": "5", "type": "USlow", "values": {"steps": 10_000, "delay": 0.01}},
            {"id": "3", "type": "UWrite", "values": {"prefix": "sum"}},
        ], [("1", "value", "5", "value"), ("5", "value", "3", "value")])
        command = [sys.executable, "-m", "nodeflow.cli", "--user-nodes", str(USER_NODES), "run", str(slow), "-o", "out",
                   "--server", srv.url]
        run = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not requests.get(srv.url + "/v1/jobs?status=running").json()["jobs"]:
            time.sleep(0.1)
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
        assert run.returncode == 130, err
        assert "interrupted" in err
        jobs = requests.get(srv.url + "/v1/jobs").json()["jobs"]
        assert jobs[-1]["status"] == "cancelled"
        assert not (tmp_path / "out" / "sum.txt").exists()
    finally:
        srv.stop()


def test_an_unreachable_server_is_an_error_never_a_silent_local_run(tmp_path):
    from tests.support.server_harness import free_port

    url = f"http://127.0.0.1:{free_port()}"
    for how in (["--server", url], []):
        proc = nodeflow("run", str(WORKFLOWS / "default.json"), "-o", "out", *how, cwd=tmp_path,
                        env={"NODEFLOW_SERVER": url})
        assert proc.returncode == 1
        assert f"cannot reach a nodeflow server at {url}" in proc.stderr
        assert not (tmp_path / "out").exists()


def test_help_states_the_hand_off():
    proc = subprocess.run([sys.executable, "-m", "nodeflow.cli", "run", "--help"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    text = " ".join(proc.stdout.split())
    assert "--server URL" in text and "NODEFLOW_SERVER" in text and "never falls back" in text and "--local" in text


def test_an_input_image_found_here_is_uploaded_and_the_image_is_the_local_runs(server, tmp_path):
    args = ["run", str(WORKFLOWS / "img2img.json"), "--input-dir", str(WORKFLOWS / "input"), "--set", "8.steps=3"]
    here = nodeflow(*args, "-o", "here", cwd=tmp_path)
    assert here.returncode == 0, here.stderr
    assert not (server.data_dir / "input" / "example.png").exists()
    there = nodeflow(*args, "-o", "there", "--server", server.url, cwd=tmp_path)
    assert there.returncode == 0, there.stderr
    assert (server.data_dir / "input" / "example.png").read_bytes() == (WORKFLOWS / "input" / "example.png").read_bytes()
    (mine,), (theirs,) = sorted((tmp_path / "here").iterdir()), sorted((tmp_path / "there").iterdir())
    assert mine.name == theirs.name and theirs.read_bytes() == mine.read_bytes()
