"""`nodeflow serve` driven by real clients: requests, a WebSocket client, and the
third-party ComfyUI client library comfy-api-simplified, unchanged."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import requests
import websocket
from PIL import Image

from tests.support.server_harness import ROOT, Server, comfy_prompt, default_workflow

FINISHED = ("job.finished", "job.failed", "job.cancelled", "job.interrupted")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("server")).start()
    yield srv
    srv.stop()


class Listener:
    """A WebSocket client collecting messages in a thread until ``until`` says stop."""

    def __init__(self, url: str, until, timeout: float = 120):
        self.messages: list[Any] = []
        self.ws = websocket.create_connection(url, timeout=timeout)
        self.until = until
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                raw = self.ws.recv()
                message = raw if isinstance(raw, bytes) else json.loads(raw)
                self.messages.append(message)
                if self.until(message):
                    return
        except Exception as exc:  # a timeout or a close: the test sees what arrived
            self.messages.append(exc)
        finally:
            self.ws.close()

    def join(self, timeout: float = 120) -> list[Any]:
        self.thread.join(timeout)
        return self.messages


def _png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_started_server_has_not_imported_torch(tmp_path):
    srv = Server(tmp_path).start()
    try:
        stats = srv.get("/system_stats").json()
        assert stats["system"]["pytorch_version"] == "not loaded yet"
        health = srv.get("/v1/health").json()
        assert (health["status"], health["queue_remaining"], health["running"]) == ("ok", 0, [])
        assert health["cache"]["entries"] == 0
    finally:
        srv.stop()


def test_third_party_comfyui_client_submits_waits_and_downloads(server, tmp_path):
    from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

    path = tmp_path / "workflow_api.json"
    path.write_text(json.dumps(comfy_prompt(steps=2, seed=5)))
    api = ComfyApiWrapper(server.url)
    workflow = ComfyWorkflowWrapper(str(path))
    workflow.set_node_param("KSampler", "seed", 77)
    images = api.queue_and_wait_images(workflow, "Save Image")
    assert len(images) == 1
    (name, data), = images.items()
    assert name.startswith("ComfyUI_") and _png(data).size == (32, 32)
    assert (server.data_dir / "output" / name).read_bytes() == data
    assert api.get_queue() == {"queue_running": [], "queue_pending": []}


def test_native_job_events_arrive_complete_and_in_order(server):
    listener = Listener(server.ws_url + "/v1/events", lambda m: isinstance(m, dict) and m["type"] in FINISHED)
    response = server.post("/v1/jobs", json={"workflow": default_workflow(steps=3), "overrides": {"5.seed": 123}})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    events = [m for m in listener.join() if isinstance(m, dict) and m["job_id"] == job_id]
    assert [e["seq"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    assert types[:2] == ["job.queued", "job.started"] and types[-1] == "job.finished"
    progress = [(e["value"], e["max"]) for e in events if e["type"] == "progress"]
    assert progress == [(1, 3), (2, 3), (3, 3)]
    ran = [e["node"] for e in events if e["type"] == "node.finished"]
    assert "7" in ran and "9" in ran  # the sampler and the save node
    job = server.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "done" and job["overrides"] == {"5.seed": 123}
    assert set(job["node_times"]) == set(ran)
    (image,) = server.get(f"/v1/jobs/{job_id}/outputs").json()["9"]["images"]
    assert _png(server.get(image["url"]).content).size == (32, 32)


def test_comfyui_events_name_the_nodes_the_client_sent(server):
    listener = Listener(server.ws_url + "/ws?clientId=ids-test",
                        lambda m: isinstance(m, dict) and m["type"] == "executing" and m["data"]["node"] is None)
    time.sleep(0.2)
    response = server.post("/prompt", json={"prompt": comfy_prompt(steps=2, seed=991), "client_id": "ids-test"})
    prompt_id = response.json()["prompt_id"]
    messages = [m for m in listener.join() if isinstance(m, dict)]
    assert messages[0]["type"] == "status" and messages[0]["data"]["sid"] == "ids-test"
    mine = [m for m in messages if m["data"].get("prompt_id") == prompt_id]
    types = [m["type"] for m in mine]
    assert types[0] == "execution_start" and types[-2:] == ["execution_success", "executing"]
    ids = {m["data"].get("node") for m in mine if m["type"] in ("executing", "progress", "executed")}
    ids |= {n for m in mine if m["type"] == "execution_cached" for n in m["data"]["nodes"]}
    assert ids - {None} <= set(comfy_prompt())  # "3", never nodeflow's "3.noise" / "3.cfg"
    assert {"3", "8", "9"} <= ids
    executed = [m["data"] for m in mine if m["type"] == "executed"]
    assert executed[0]["node"] == "9" and executed[0]["output"]["images"][0]["type"] == "output"
    history = server.get(f"/history/{prompt_id}").json()[prompt_id]
    assert history["status"]["completed"] is True
    assert history["outputs"]["9"]["images"] == executed[0]["output"]["images"]
    assert history["prompt"][1] == prompt_id and history["prompt"][4] == ["9"]


def test_a_job_changing_only_the_seed_reuses_the_rest(server):
    first = server.post("/v1/jobs", json={"workflow": default_workflow(steps=2, seed=10)}).json()["id"]
    server.wait_job(first)
    listener = Listener(server.ws_url + "/v1/events", lambda m: isinstance(m, dict) and m["type"] in FINISHED)
    second = server.post("/v1/jobs", json={"workflow": default_workflow(steps=2, seed=11)}).json()["id"]
    events = [m for m in listener.join() if isinstance(m, dict) and m["job_id"] == second]
    cached = {e["node"] for e in events if e["type"] == "node.cached"}
    ran = {e["node"] for e in events if e["type"] == "node.finished"}
    assert {"1", "2", "3", "4"} <= cached  # checkpoint, prompts, latent: not loaded or encoded again
    assert ran == {"5", "7", "8", "9"}  # noise, sampler, decode, save


def test_invalid_comfyui_prompt_gets_node_errors_and_is_not_queued(server):
    prompt = comfy_prompt()
    prompt["3"]["inputs"]["cfg"] = "lots"
    response = server.post("/prompt", json={"prompt": prompt})
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    (error,) = body["node_errors"]["3"]["errors"]
    assert body["node_errors"]["3"]["class_type"] == "KSampler"
    assert error["extra_info"]["input_name"] == "scale" and "lots" in error["details"]

    prompt = comfy_prompt()
    prompt["3"]["class_type"] = "NoSuchSampler"
    response = server.post("/prompt", json={"prompt": prompt})
    assert response.status_code == 400 and "NoSuchSampler" in response.json()["error"]["message"]
    assert server.post("/prompt", json={"nothing": 1}).json()["error"]["type"] == "no_prompt"
    assert server.post("/prompt", data=b"{not json").status_code == 400
    assert server.get("/queue").json() == {"queue_running": [], "queue_pending": []}


def test_a_missing_model_file_is_refused_at_submission_not_after_queueing(server):
    """A job naming a checkpoint the server does not have would only fail once its turn
    came; it is refused when submitted, naming node and field and the nearest name."""
    prompt = comfy_prompt()
    prompt["4"]["inputs"]["ckpt_name"] = "shapez"
    response = server.post("/prompt", json={"prompt": prompt})
    assert response.status_code == 400
    (error,) = response.json()["node_errors"]["4"]["errors"]
    assert error["extra_info"]["input_name"] == "checkpoint"
    assert "shapez" in error["details"] and "shapes" in error["details"].replace("shapez", "")

    workflow = default_workflow()
    checkpoint = next(n for n in workflow["nodes"] if n["type"] == "Checkpoint")
    checkpoint["values"]["checkpoint"] = "missing.safetensors"
    response = server.post("/v1/jobs", json={"workflow": workflow})
    assert response.status_code == 400
    (problem,) = response.json()["problems"]
    assert (problem["node_id"], problem["field"]) == (checkpoint["id"], "checkpoint")
    assert server.get("/queue").json() == {"queue_running": [], "queue_pending": []}


def test_native_refusal_lists_every_problem(server):
    workflow = default_workflow()
    response = server.post("/v1/jobs", json={"workflow": workflow, "overrides": {"7.steps": 0, "Nope.seed": 1}})
    assert response.status_code == 400
    problems = response.json()["problems"]
    assert {p["field"] for p in problems} >= {"steps"}
    assert any("Nope" in p["message"] for p in problems)


def test_cancel_is_by_id_and_touches_no_other_job(server):
    long = server.post("/v1/jobs", json={"workflow": default_workflow(steps=400, seed=1)}).json()["id"]
    queued = server.post("/v1/jobs", json={"workflow": default_workflow(steps=2, seed=2)}).json()["id"]
    after = server.post("/v1/jobs", json={"workflow": default_workflow(steps=2, seed=3)}).json()["id"]
    server.wait_job(long, ("running",))
    cancelled = server.post(f"/v1/jobs/{queued}/cancel").json()
    assert cancelled == {"id": queued, "was": "queued", "status": "cancelled"}
    assert server.post(f"/v1/jobs/{long}/cancel").json()["status"] == "cancelling"
    assert server.wait_job(long)["status"] == "cancelled"
    assert server.wait_job(after)["status"] == "done"
    job = server.get(f"/v1/jobs/{queued}").json()
    assert job["status"] == "cancelled" and job["started"] is None
    assert server.post(f"/v1/jobs/{queued}/cancel").status_code == 409
    assert server.post("/v1/jobs/no-such-job/cancel").status_code == 404


def test_history_tells_unknown_from_unfinished_natively(server):
    assert server.get("/history/no-such-id").json() == {}
    assert server.get("/v1/jobs/no-such-id").status_code == 404
    job_id = server.post("/v1/jobs", json={"workflow": default_workflow(steps=300)}).json()["id"]
    assert server.get(f"/history/{job_id}").json() == {}  # ComfyUI's answer while not finished
    assert server.get(f"/v1/jobs/{job_id}").json()["status"] in ("queued", "running")
    assert server.get(f"/v1/jobs/{job_id}/outputs").status_code == 409
    server.post("/interrupt", json={"prompt_id": job_id})
    server.wait_job(job_id, ("running", "interrupted"))
    server.post("/interrupt", json={"prompt_id": job_id})
    assert server.wait_job(job_id)["status"] == "interrupted"


def test_upload_then_view_then_use_in_a_workflow(server, tmp_path):
    picture = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(picture, format="PNG")
    response = server.post("/upload/image", files={"image": ("red.png", picture.getvalue(), "image/png")},
                           data={"subfolder": "mine"})
    assert response.json() == {"name": "red.png", "subfolder": "mine", "type": "input"}
    view = server.get("/view", params={"filename": "red.png", "subfolder": "mine", "type": "input"})
    assert view.content == picture.getvalue()
    assert server.post("/api/upload/image", files={"image": ("notes.png", b"not an image")}).status_code == 400
    assert server.post("/upload/image", files={"image": ("x.txt", picture.getvalue())}).status_code == 400

    workflow = {"format": "nodeflow.workflow", "version": 1, "nodes": [
        {"id": "1", "type": "LoadImage", "values": {"image": "mine/red.png"}},
        {"id": "2", "type": "PreviewImage", "values": {}}],
        "links": [{"from": {"node": "1", "output": "image"}, "to": {"node": "2", "input": "images"}}]}
    job_id = server.post("/v1/jobs", json={"workflow": workflow}).json()["id"]
    job = server.wait_job(job_id)
    assert job["status"] == "done", job
    (ref,) = job["outputs"]["2"]["images"]
    assert ref["type"] == "temp"
    assert _png(server.get(ref["url"]).content).getpixel((5, 5)) == (200, 30, 30)


def test_object_info_and_node_list(server):
    info = server.get("/object_info").json()
    sampler = info["Sampler"]
    assert sampler["input"]["required"]["steps"][0] == "INT"
    assert sampler["input"]["required"]["steps"][1]["min"] == 1
    assert sampler["output"] == ["LATENT"] and sampler["python_module"] == "nodeflow"
    assert "KSampler" in info and "seed" in info["KSampler"]["input"]["required"]
    assert server.get("/api/object_info/KSampler").json()["KSampler"]["name"] == "KSampler"
    printed = subprocess.run([sys.executable, "-m", "nodeflow.cli", "nodes", "--json"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    assert server.get("/v1/nodes").json() == json.loads(printed)


def test_openapi_schema_and_docs_page(server):
    schema = server.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/prompt", "/view"} <= set(schema["paths"])
    assert "JobRequest" in schema["components"]["schemas"]
    page = server.get("/docs")
    assert page.status_code == 200 and "/v1/jobs/{job_id}/cancel" in page.text and "<script" not in page.text


def test_previews_arrive_as_comfyui_binary_frames_and_native_data_urls(tmp_path):
    import base64
    import struct

    srv = Server(tmp_path, "--previews").start()
    try:
        comfy = Listener(srv.ws_url + "/ws?clientId=pv",
                         lambda m: isinstance(m, dict) and m["type"] == "executing" and m["data"]["node"] is None)
        native = Listener(srv.ws_url + "/v1/events", lambda m: isinstance(m, dict) and m["type"] in FINISHED)
        time.sleep(0.2)
        srv.post("/prompt", json={"prompt": comfy_prompt(steps=2, seed=3), "client_id": "pv"})
        frames = [m for m in comfy.join() if isinstance(m, bytes)]
        assert len(frames) == 2  # one per step
        assert struct.unpack(">II", frames[0][:8]) == (1, 1)  # preview image, JPEG
        assert _png(frames[0][8:]).format == "JPEG"
        previews = [m["preview"] for m in native.join() if isinstance(m, dict) and m["type"] == "progress"]
        assert len(previews) == 2 and previews[0].startswith("data:image/jpeg;base64,")
        assert _png(base64.b64decode(previews[0].split(",", 1)[1])).format == "JPEG"
    finally:
        srv.stop()
