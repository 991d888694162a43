"""Starting a real ``nodeflow serve`` for the server tests (and benchmarks/bench_server.py): a subprocess on a free loopback
port, its own data folder, stopped (or killed) by the test. No tests here."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.support import FIXTURES, ROOT, WORKFLOWS

DEFAULT_WORKFLOW = WORKFLOWS / "default.json"
COMFY_API = FIXTURES / "comfyui" / "txt2img_api.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the server's process before it starts: on Linux, ask for SIGTERM when the test
    process dies, so a killed or crashed pytest leaves no server running on its port."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class Server:
    def __init__(self, data_dir: Path, *args: str, host: str = "127.0.0.1"):
        self.data_dir = data_dir
        self.port = free_port()
        self.host = host
        self.args = args
        self.process: subprocess.Popen[str] | None = None
        self.log = data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> "Server":
        """Start the server (and wait until it answers). A port another process took between
        :func:`free_port` and the server's bind (Ray's workers bind ports too) is replaced by
        a fresh one, at most twice: that is the machine, not the server under test."""
        for attempt in range(3):
            self._launch()
            if not wait:
                return self
            try:
                self.wait_up()
                return self
            except RuntimeError as error:
                if "address already in use" not in str(error) or attempt == 2:
                    raise
                self.port = free_port()
        return self

    def _launch(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "NODEFLOW_CONFIG_DIR": str(self.data_dir)}
        env.pop("NODEFLOW_MODELS", None)
        command = [sys.executable, "-m", "nodeflow.cli", "serve", "--host", self.host, "--port", str(self.port),
                   "--data-dir", str(self.data_dir), *self.args]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                        stderr=open(self.log, "a"), text=True, preexec_fn=_die_with_parent)

    def wait_up(self, timeout: float = 30.0, **request_options: Any) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                if requests.get(self.url + "/v1/health", timeout=1, **request_options).status_code in (200, 401):
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the server did not come up: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no clean-up of any kind
        self.process.wait()

    def banner(self) -> str:
        return self.log.read_text()

    # ------------------------------------------------------------------ helpers
    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=30, **kw)

    def wait_job(self, job_id: str, statuses: tuple[str, ...] = ("done", "failed", "cancelled", "interrupted"),
                 timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in statuses:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not reach {statuses}: {job}")


def default_workflow(steps: int = 2, seed: int = 1) -> dict[str, Any]:
    """The bundled model's default workflow at 32x32 with few steps."""
    workflow = json.loads(DEFAULT_WORKFLOW.read_text())
    for node in workflow["nodes"]:
        if node["type"] == "Sampler":
            node["values"]["steps"] = steps
        if node["type"] == "Noise":
            node["values"]["seed"] = seed
        if node["type"] == "EmptyLatent":
            node["values"].update(width=32, height=32)
    return workflow


def comfy_prompt(steps: int = 2, seed: int = 1) -> dict[str, Any]:
    """ComfyUI's txt2img API-format workflow on the bundled model."""
    prompt = json.loads(COMFY_API.read_text())
    prompt["4"]["inputs"]["ckpt_name"] = "shapes"
    prompt["3"]["inputs"].update(steps=steps, seed=seed)
    return prompt
