"""The server's security model, tested from outside like an attacker would try it:
cross-site requests, DNS rebinding, path traversal, oversized bodies, untrusted files in
workflows, and a non-loopback bind without the token."""

from __future__ import annotations

import http.client
import os
import re

import pytest
import requests
import websocket

from tests.support.server_harness import Server, comfy_prompt, default_workflow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("secure"), "--max-body-mb", "0.05").start()
    yield srv
    srv.stop()


def _raw(server: Server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """A request with exactly the headers given (requests would fix up Host)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for key, value in (headers or {}).items():
        connection.putheader(key, value)
    if body is not None and "Transfer-Encoding" not in (headers or {}):
        connection.putheader("Content-Length", str(len(body)))
    connection.endheaders()
    if body is not None:
        connection.send(body)
    response = connection.getresponse()
    return response.status, response.read()


def test_a_foreign_web_page_cannot_queue_a_job_or_open_the_socket(server):
    evil = {"Origin": "http://evil.example"}
    response = server.post("/prompt", json={"prompt": comfy_prompt()}, headers=evil)
    assert response.status_code == 403 and "evil.example" in response.json()["error"]["message"]
    assert server.post("/api/prompt", json={"prompt": comfy_prompt()}, headers={"Origin": "null"}).status_code == 403
    assert server.get("/queue").json()["queue_pending"] == [] and server.get("/history").json() == {}
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(server.ws_url + "/ws?clientId=x", origin="http://evil.example", timeout=10)
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(server.ws_url + "/v1/events", origin="https://evil.example", timeout=10)
    # The server's own pages (same origin) and non-browser clients (no Origin) pass.
    assert server.get("/v1/health", headers={"Origin": server.url}).status_code == 200
    websocket.create_connection(server.ws_url + "/ws", origin=server.url, timeout=10).close()


def test_dns_rebinding_is_refused_by_the_host_check(server):
    status, body = _raw(server, "GET", "/queue", headers={"Host": f"evil.example:{server.port}"})
    assert status == 403 and b"evil.example" in body
    status, _ = _raw(server, "GET", "/queue", headers={"Host": f"localhost:{server.port}"})
    assert status == 200
    status, _ = _raw(server, "GET", "/queue", headers={})
    assert status == 400  # no Host at all


@pytest.mark.parametrize("params", [
    {"filename": "../../etc/passwd"},
    {"filename": "/etc/passwd"},
    {"filename": "passwd", "subfolder": "../../../../etc"},
    {"filename": "passwd", "subfolder": "/etc"},
    {"filename": "..\\..\\etc\\passwd"},
    {"filename": "C:\\Windows\\win.ini"},
    {"filename": "hosts", "type": "../../etc"},
])
def test_view_serves_nothing_outside_its_folders(server, params):
    response = server.get("/view", params=params)
    assert response.status_code in (400, 403) and b"root:" not in response.content


def test_view_does_not_follow_a_symlink_out(server):
    output = server.data_dir / "output"
    link = output / "escape"
    if not link.exists():
        os.symlink("/etc", link)
    assert server.get("/view", params={"filename": "passwd", "subfolder": "escape"}).status_code == 403
    assert server.get("/view", params={"filename": "escape/passwd"}).status_code == 403


def test_an_upload_cannot_leave_the_input_folder(server):
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
                        "0000000c4944415408d763f8cfc000000301010018dd8db40000000049454e44ae426082")
    for name, form in [("../evil.png", {}), ("ok.png", {"subfolder": "../../"}), ("ok.png", {"type": "output"}),
                       ("ok.png", {"subfolder": "/tmp"})]:
        response = server.post("/upload/image", files={"image": (name, png)}, data=form)
        assert response.status_code in (400, 403), (name, form, response.text)
    assert not (server.data_dir / "evil.png").exists() and not (server.data_dir / "output" / "ok.png").exists()


def test_oversized_bodies_are_refused(server):
    big = b'{"prompt": "' + b"x" * 100_000 + b'"}'
    assert server.post("/prompt", data=big).status_code == 413
    status, _ = _raw(server, "POST", "/prompt", headers={"Host": f"127.0.0.1:{server.port}",
                                                         "Content-Length": str(10**12)})
    assert status == 413

    def chunks():  # no Content-Length: the server counts while it reads
        for _ in range(100):
            yield b"x" * 10_000

    assert requests.post(server.url + "/v1/jobs", data=chunks(), timeout=30).status_code == 413
    assert server.get("/v1/health").status_code == 200


def test_a_workflow_naming_a_file_outside_the_folders_is_refused_with_node_and_field(server):
    workflow = default_workflow()
    next(n for n in workflow["nodes"] if n["id"] == "1")["values"]["checkpoint"] = "/etc/passwd"
    response = server.post("/v1/jobs", json={"workflow": workflow})
    assert response.status_code == 400
    (problem,) = response.json()["problems"]
    assert (problem["node_id"], problem["node_type"], problem["field"]) == ("1", "Checkpoint", "checkpoint")
    assert "absolute path" in problem["message"]

    prompt = comfy_prompt()
    prompt["4"]["inputs"]["ckpt_name"] = "../../../.ssh/id_rsa"
    body = server.post("/prompt", json={"prompt": prompt}).json()
    (error,) = body["node_errors"]["4"]["errors"]
    assert error["extra_info"]["input_name"] == "checkpoint" and "'..'" in error["message"]
    override = server.post("/v1/jobs", json={"workflow": default_workflow(), "overrides": {"1.checkpoint": "/etc"}})
    assert override.status_code == 400 and override.json()["problems"][0]["field"] == "checkpoint"


def test_a_server_bound_beyond_loopback_requires_its_token(tmp_path):
    srv = Server(tmp_path, host="0.0.0.0")
    srv.start(wait=False)
    try:
        srv.wait_up()
        token = re.search(r"token \(generated for this run\): (\S+)", srv.banner())[1]
        assert srv.get("/v1/health").status_code == 401
        assert srv.get("/queue", headers={"Authorization": "Bearer wrong-token-123456"}).status_code == 401
        assert srv.get("/queue", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert srv.get("/queue", auth=("anyone", token)).status_code == 200  # ComfyUI clients' user:password
        assert srv.get("/view", params={"filename": "x.png", "token": token}).status_code == 404
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(srv.ws_url + "/ws", timeout=10)
        websocket.create_connection(srv.ws_url + f"/ws?token={token}", timeout=10).close()
    finally:
        srv.stop()


def test_a_short_token_is_refused_at_start(tmp_path):
    srv = Server(tmp_path, "--token", "short")
    srv.start(wait=False)
    assert srv.process.wait(timeout=30) == 2
    assert "at least 16" in srv.banner()
