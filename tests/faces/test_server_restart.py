"""After ``kill -9`` the server comes back with its queue: nothing lost, the job that was
running marked interrupted, the rest run, the database intact."""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.support.server_harness import Server, comfy_prompt, default_workflow


@pytest.mark.slow
def test_kill_9_during_the_second_job_then_restart(tmp_path):
    server = Server(tmp_path).start()
    ids = []
    for seed in range(5):
        body = ({"workflow": default_workflow(steps=40, seed=seed)} if seed % 2 == 0
                else {"workflow": comfy_prompt(steps=40, seed=seed)})  # both sources survive
        ids.append(server.post("/v1/jobs", json=body).json()["id"])
    server.wait_job(ids[1], ("running",))
    time.sleep(0.3)  # well inside the second job's sampling
    server.kill()

    restarted = Server(tmp_path)
    restarted.port = server.port
    restarted.start()
    try:
        assert "1 job(s) were running when the server stopped" in restarted.banner()
        statuses = [restarted.wait_job(job_id)["status"] for job_id in ids]
        assert statuses == ["done", "interrupted", "done", "done", "done"]
        jobs = restarted.get("/v1/jobs").json()["jobs"]
        assert [j["id"] for j in jobs] == ids
        interrupted = jobs[1]
        assert "stopped while this job was running" in interrupted["error"]["message"]
        history = restarted.get("/history").json()
        assert set(history) == set(ids) and history[ids[1]]["status"]["status_str"] == "error"
        for job in jobs[:1] + jobs[2:]:
            (ref,) = next(iter(job["outputs"].values()))["images"]
            assert restarted.get(ref["url"]).content.startswith(b"\x89PNG")
    finally:
        restarted.stop()
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 5
