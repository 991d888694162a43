"""What one ``nodeflow serve`` process is configured with: where it listens, who may talk
to it, where its files and its job database live, and how large a request may be.

Kept as one frozen record built by the CLI (or a test) so every part of the server reads
the same values and none reads the command line or the environment itself.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from nodeflow.model.context import RunContext, RunSettings

MiB = 1024 * 1024


class ServeError(ValueError):
    """A configuration the server refuses to start with (the message says why)."""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8188
    data_dir: Path = Path("nodeflow-server")  # jobs.db, and the default input/output/temp folders
    input_dir: Path | None = None
    output_dir: Path | None = None
    devices: tuple[str, ...] = ("auto",)  # one worker thread per entry
    token: str | None = None  # required on every route when set
    allowed_hosts: tuple[str, ...] = ()  # extra Host names (e.g. a LAN name), besides the bind address
    allowed_origins: tuple[str, ...] = ()  # extra browser origins (e.g. "http://localhost:3000")
    max_body_bytes: int = 16 * MiB  # JSON requests (a workflow)
    max_upload_bytes: int = 64 * MiB  # /upload/image
    previews: bool = False  # step previews (ComfyUI's default "--preview-method none" is off too)
    cache_budget_bytes: int | None = None
    run_settings: RunSettings = field(default_factory=RunSettings)  # model folders, --allow-path (host.settings)
    ray: str | None = None  # run jobs on Ray actors: "local" (a Ray started here) or a cluster's address
    ray_actors: int | None = None  # default: one per GPU, else one per CPU of the cluster
    model_dirs: tuple[str, ...] = ()  # --models and --allow-path as given: each Ray actor builds its settings from them
    allow_paths: tuple[str, ...] = ()

    @property
    def inputs(self) -> Path:
        return (self.input_dir or self.data_dir / "input").resolve()

    @property
    def outputs(self) -> Path:
        return (self.output_dir or self.data_dir / "output").resolve()

    @property
    def temp(self) -> Path:
        return (self.data_dir / "temp").resolve()

    @property
    def run_context(self) -> RunContext:
        """The folders and settings a job runs with, for checking a workflow at submission."""
        return RunContext(output_dir=self.outputs, input_dir=self.inputs, settings=self.run_settings)

    @property
    def database(self) -> Path:
        return self.data_dir / "jobs.db"

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def with_token(config: ServerConfig) -> tuple[ServerConfig, bool]:
    """``config`` with a token when it needs one: any bind other than loopback does. Returns
    the config and whether the token was generated here (so the CLI prints it)."""
    from dataclasses import replace

    if config.token is not None and len(config.token) < 16:
        raise ServeError("the token must be at least 16 characters long")
    if config.loopback or config.token:
        return config, False
    return replace(config, token=secrets.token_urlsafe(24)), True
