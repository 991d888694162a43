"""Sweeps as a server job: submitted over ``/v1``, planned at once, run point by point with
events, outputs downloadable, cancellable, and resumed after ``kill -9`` without re-running
the points already on disk. A real ``nodeflow serve`` on loopback, the bundled model."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from tests.faces.test_server import FINISHED, Listener
from tests.support.server_harness import Server, default_workflow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("server")).start()
    yield srv
    srv.stop()


def _pixels(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    image.load()
    return np.asarray(image.convert("RGB"))


def test_a_sweep_job_is_planned_streams_points_and_steps_and_serves_its_files(server):
    listener = Listener(server.ws_url + "/v1/events", lambda m: isinstance(m, dict) and m["type"] in FINISHED)
    response = server.post("/v1/sweeps", json={"workflow": default_workflow(steps=2),
                                               "vary": {"5.seed": "1..2", "7.steps": [2, 3]}})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["kind"] == "sweep" and job["status"] == "queued"
    plan = job["sweep"]["plan"]
    # Two seeds x two step counts: checkpoint, prompts, latent and CFG once; noise per seed; the rest per point.
    assert plan["points"] == 4 and plan["without_sharing"] == 36
    assert plan["executions_by_type"] == {"CFG": 1, "Checkpoint": 1, "EmptyLatent": 1, "Noise": 2, "Sampler": 4,
                                          "SaveImage": 4, "TextEncoder": 2, "VAEDecode": 4}
    events = [m for m in listener.join() if isinstance(m, dict) and m.get("job_id") == job["id"]]
    assert [e["seq"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    assert types[:3] == ["job.queued", "job.started", "sweep.planned"] and types[-1] == "job.finished"
    finished = [e for e in events if e["type"] == "point.finished"]
    assert [e["done"] for e in finished] == [1, 2, 3, 4] and all(e["status"] == "ok" for e in finished)
    assert sorted(e["point"] for e in finished) == [0, 1, 2, 3]
    # Step progress says which point it belongs to: each point's sampler counts to its own steps.
    steps = {e["point"]: e["max"] for e in events if e["type"] == "progress"}
    assert steps == {0: 2, 1: 3, 2: 2, 3: 3}
    assert all("point" in e for e in events if e["type"].startswith("node."))

    done = server.wait_job(job["id"])
    assert done["status"] == "done", done
    sweep = done["sweep"]
    assert (sweep["points_done"], sweep["ran"], sweep["skipped"], sweep["failed"]) == (4, 4, 0, {})
    manifest = server.get(sweep["manifest"]["url"]).json()
    assert manifest["format"] == "nodeflow.sweep" and len(manifest["points"]) == 4
    outputs = server.get(f"/v1/jobs/{job['id']}/outputs").json()
    assert set(outputs) == {"sheet", "0", "1", "2", "3"}
    for entry in manifest["points"]:
        (ref,) = outputs[str(entry["index"])]["images"]
        assert ref["filename"] == entry["files"][0]
        assert [e for e in finished if e["point"] == entry["index"]][0]["files"] == [
            {k: v for k, v in ref.items() if k != "url"}]
    # Point 3 (seed 2, 3 steps) has the pixels a plain job with those values makes.
    single = server.post("/v1/jobs", json={"workflow": default_workflow(steps=3, seed=2)}).json()
    (plain,) = server.wait_job(single["id"])["outputs"]["9"]["images"]
    point_3 = _pixels(server.get(outputs["3"]["images"][0]["url"]).content)
    assert point_3.shape == (32, 32, 3)
    assert np.array_equal(point_3, _pixels(server.get(plain["url"]).content))
    sheet = _pixels(server.get(outputs["sheet"]["images"][0]["url"]).content)
    layout = manifest["sheet"]
    (cell,) = [c for c in layout["cells"] if c["point"] == 3]
    x0, y0 = cell["box"][0] + layout["border"], cell["box"][1] + layout["border"]
    factor = layout["scale"]
    assert np.array_equal(sheet[y0:y0 + 32 * factor:factor, x0:x0 + 32 * factor:factor], point_3)


def test_a_bad_axis_is_refused_naming_node_and_field(server):
    workflow = default_workflow()
    jobs_before = len(server.get("/v1/jobs").json()["jobs"])
    refused = server.post("/v1/sweeps", json={"workflow": workflow, "vary": {"5.seed": "-3..2"}})
    assert refused.status_code == 400
    (problem,) = refused.json()["problems"]
    assert (problem["node_id"], problem["node_type"], problem["field"]) == ("5", "Noise", "seed")
    assert "-3" in problem["message"] and "minimum" in problem["message"]
    read = server.post("/v1/sweeps", json={"workflow": workflow, "vary": {"Prompt.text": "@/etc/passwd"}})
    assert read.status_code == 400 and "@FILE" in read.json()["error"]
    outside = server.post("/v1/sweeps", json={"workflow": workflow, "vary": {"1.checkpoint": ["shapes", "/etc/x.ckpt"]}})
    assert outside.status_code == 400, outside.text
    (problem,) = outside.json()["problems"]
    assert (problem["node_id"], problem["field"]) == ("1", "checkpoint") and "absolute" in problem["message"]
    zipped = server.post("/v1/sweeps", json={"workflow": workflow, "mode": "zip",
                                             "vary": {"5.seed": [1, 2], "7.steps": [2, 3, 4]}})
    assert zipped.status_code == 400 and "one length" in zipped.json()["error"]
    assert len(server.get("/v1/jobs").json()["jobs"]) == jobs_before  # nothing refused was queued


def test_cancelling_a_sweep_stops_it_between_points(server):
    job = server.post("/v1/sweeps", json={"workflow": default_workflow(steps=30), "vary": {"5.seed": "1..20"}}).json()
    deadline = time.monotonic() + 120
    while server.get(f"/v1/jobs/{job['id']}").json()["sweep"]["points_done"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelling"
    ended = server.wait_job(job["id"])
    assert ended["status"] == "cancelled", ended
    done = ended["sweep"]["points_done"]
    assert 1 <= done < 20 and "cancelled" in ended["error"]["message"]
    time.sleep(1.0)
    assert server.get(f"/v1/jobs/{job['id']}").json()["sweep"]["points_done"] == done  # nothing runs after


def test_openapi_describes_sweeps(server):
    schema = server.get("/openapi.json").json()
    assert "post" in schema["paths"]["/v1/sweeps"]
    assert {"vary", "mode", "workflow"} <= set(schema["components"]["schemas"]["SweepRequest"]["properties"])
    assert {"plan", "points_done", "manifest", "sheet"} <= set(schema["components"]["schemas"]["SweepOut"]["properties"])


@pytest.mark.slow
def test_a_sweep_killed_mid_way_resumes_after_restart_without_rerunning_done_points(tmp_path):
    server = Server(tmp_path).start()
    job = server.post("/v1/sweeps", json={"workflow": default_workflow(steps=12), "vary": {"5.seed": "1..6"}}).json()
    deadline = time.monotonic() + 120
    while server.get(f"/v1/jobs/{job['id']}").json()["sweep"]["points_done"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    server.kill()
    import sqlite3  # the server is gone: what it had done is in its store

    with sqlite3.connect(tmp_path / "jobs.db") as db:
        extra = json.loads(db.execute("SELECT extra FROM jobs WHERE id=?", (job["id"],)).fetchone()[0])
    done_before = extra["sweep"]["points_done"]
    assert 2 <= done_before < 6

    restarted = Server(tmp_path)
    restarted.start()
    try:
        assert "1 sweep(s) were running when the server stopped; queued again" in restarted.banner()
        ended = restarted.wait_job(job["id"])
        assert ended["status"] == "done", ended
        sweep = ended["sweep"]
        assert (sweep["skipped"], sweep["ran"], sweep["points_done"]) == (done_before, 6 - done_before, 6)
        manifest = restarted.get(sweep["manifest"]["url"]).json()
        assert sorted(p["index"] for p in manifest["points"]) == list(range(6))
        assert len(restarted.get(f"/v1/jobs/{job['id']}/outputs").json()) == 7  # the sheet and six points
    finally:
        restarted.stop()
