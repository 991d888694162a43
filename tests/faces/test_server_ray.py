"""``nodeflow serve --ray ADDRESS``: the queue's jobs and a sweep's points run on Ray actors
(a local Ray with 2 CPUs started by this test) and give the bytes a local server gives."""

from __future__ import annotations

import base64
import io
import json

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install nodeflow[ray])")

from PIL import Image  # noqa: E402

from tests.support.server_harness import Server, comfy_prompt, default_workflow  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_address():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def previewed(workflow: dict) -> dict:
    """``workflow`` showing its image in a Preview Image node instead of saving it."""
    for node in workflow["nodes"]:
        if node["type"] == "SaveImage":
            node.update(type="PreviewImage", values={})
    return workflow


def run_all(server: Server) -> tuple[list[bytes], list[bytes], dict]:
    """Five jobs (two native, one ComfyUI, one that only previews its image, one saving its
    image without the workflow in it) and a 4-point sweep; their images' bytes."""
    bodies = [{"workflow": default_workflow(steps=3, seed=1)}, {"workflow": comfy_prompt(steps=3, seed=2)},
              {"workflow": default_workflow(steps=3, seed=3)}, {"workflow": previewed(default_workflow(steps=3, seed=4))},
              {"workflow": default_workflow(steps=3, seed=5), "embed_workflow": False}]
    ids = [server.post("/v1/jobs", json=body).json()["id"] for body in bodies]
    sweep = server.post("/v1/sweeps", json={"workflow": default_workflow(steps=3), "vary": {"5.seed": "1..4"}}).json()
    jobs = [server.wait_job(job_id) for job_id in ids]
    assert [job["status"] for job in jobs] == ["done"] * 5, jobs
    images = []
    for job in jobs:
        (output,) = job["outputs"].values()
        (ref,) = output["images"]
        images.append(server.get(ref["url"]).content)
    swept = server.wait_job(sweep["id"], timeout=300)
    assert swept["status"] == "done", swept
    points = [server.get(swept["outputs"][str(i)]["images"][0]["url"]).content for i in range(4)]
    return images, points, swept


def test_jobs_and_sweep_points_on_ray_actors_give_the_local_servers_bytes(ray_address, tmp_path):
    local = Server(tmp_path / "local").start()
    try:
        local_images, local_points, _ = run_all(local)
    finally:
        local.stop()
    on_ray = Server(tmp_path / "ray", "--ray", ray_address, "--ray-actors", "2").start()
    try:
        health = on_ray.get("/v1/health").json()
        assert health["status"] == "ok"
        devices = on_ray.get("/system_stats").json()["devices"]
        assert [d["name"] for d in devices] == ["ray actor 0", "ray actor 1"]
        ray_images, ray_points, swept = run_all(on_ray)
        manifest = on_ray.get(swept["sweep"]["manifest"]["url"]).json()
        # The jobs ran in the actors' processes: the server itself never loaded torch.
        assert on_ray.get("/system_stats").json()["system"]["pytorch_version"] == "not loaded yet"
    finally:
        on_ray.stop()
    assert ray_images == local_images
    with_workflow, without = (Image.open(io.BytesIO(ray_images[i])).info for i in (0, 4))
    assert "nodeflow" in with_workflow and "nodeflow" not in without
    assert ray_points == local_points and len(set(ray_points)) == 4
    assert manifest["backend"] == "ray"
    assert {p["worker"].split(" pid")[0] for p in manifest["points"]} <= {"actor 0", "actor 1"}


def first_progress(events, job_id: str) -> dict:
    """The first step-progress message of ``job_id`` on a /v1/events connection."""
    while True:
        raw = events.recv()
        message = json.loads(raw) if isinstance(raw, str) else {}
        if message.get("job_id") == job_id and message["type"] == "progress":
            return message


def test_a_job_on_a_ray_actor_streams_its_steps_and_previews_and_cancelling_kills_the_actor(ray_address, tmp_path):
    websocket = pytest.importorskip("websocket")
    server = Server(tmp_path, "--ray", ray_address, "--ray-actors", "1", "--previews").start()
    events = websocket.create_connection(server.ws_url + "/v1/events", timeout=120)
    try:
        long = server.post("/v1/jobs", json={"workflow": default_workflow(steps=400, seed=1)}).json()["id"]
        after = server.post("/v1/jobs", json={"workflow": default_workflow(steps=2, seed=2)}).json()["id"]
        step = first_progress(events, long)
        # The step arrived while the actor was still sampling, not with the finished job.
        assert step["max"] == 400 and step["value"] < 400
        preview = base64.b64decode(step["preview"].removeprefix("data:image/jpeg;base64,"))
        assert Image.open(io.BytesIO(preview)).format == "JPEG"  # the actor's x0 estimate, as a local job's
        assert server.get(f"/v1/jobs/{long}").json()["status"] == "running"
        assert server.post(f"/v1/jobs/{long}/cancel").json()["status"] == "cancelling"
        assert server.wait_job(long, timeout=60)["status"] == "cancelled"
        assert server.wait_job(after, timeout=120)["status"] == "done"  # on the actor put in the killed one's place
    finally:
        events.close()
        server.stop()
