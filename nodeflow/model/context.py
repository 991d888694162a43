"""What a running node gets from its host besides its inputs: typed settings and a context.

:class:`RunSettings` is frozen and typed, so a pack reads ``ctx.settings.previews``
rather than a string key that falls back silently when misspelt; every host (CLI,
scripting API, editor, server) builds it through one function,
:func:`nodeflow.host.settings.build_run_settings`. Settings are not part of a node's
cache signature (see :mod:`nodeflow.engine.plan`); what a node reads through them that
changes its result (a model file) goes into its ``fingerprint``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from nodeflow.model.errors import NodeflowError


class Interrupted(NodeflowError):
    """Raised inside a run when the user asked to stop; the executor turns it into exit 130."""


ProgressCallback = Callable[[int, int, Any], None]
FileCallback = Callable[[Path], None]


def _paths(values: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> tuple[Path, ...]:
    if isinstance(values, (str, os.PathLike)):
        values = [values]
    return tuple(Path(v).expanduser() for v in values)


@dataclass(frozen=True)
class RunSettings:
    """The host's configuration of a run, the same for every node in it.

    - ``model_folders``: model kind (``"checkpoints"``, ``"loras"`` ...) -> folders searched
      in order: the user's own, then those the packs ship;
    - ``model_names``: kind -> name -> folder, for models named rather than found (a
      Hugging Face cache's ``org/name``);
    - ``trusted_paths``: files and folders the user named themselves (``--set``,
      ``--allow-path``, a file dialog), which a workflow may then reach (nodeflow.host.paths);
    - ``workflow``: the document saved images embed, and ``embed_workflow`` whether they do;
    - ``previews``: False when nobody looks at step previews, so nodes skip computing them;
    - ``max_batch_pixels``: the pixel budget of one batch (None: the default in nodeflow.host.limits);
    - ``memory_budget``: bytes of working memory a node may ask for (None: see nodeflow.model.memory).
    """

    model_folders: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)
    model_names: Mapping[str, Mapping[str, Path]] = field(default_factory=dict)
    trusted_paths: tuple[Path, ...] = ()
    workflow: Mapping[str, Any] | None = None
    embed_workflow: bool = True
    previews: bool = True
    max_batch_pixels: int | None = None
    memory_budget: int | None = None

    def __post_init__(self) -> None:
        folders = {str(kind): _paths(paths) for kind, paths in dict(self.model_folders).items()}
        names = {str(kind): MappingProxyType({str(n): Path(p) for n, p in dict(m).items()})
                 for kind, m in dict(self.model_names).items()}
        object.__setattr__(self, "model_folders", MappingProxyType(folders))
        object.__setattr__(self, "model_names", MappingProxyType(names))
        object.__setattr__(self, "trusted_paths", _paths(self.trusted_paths))

    def folders(self, kind: str) -> tuple[Path, ...]:
        return self.model_folders.get(kind, ())

    def trusting(self, *paths: str | os.PathLike[str]) -> "RunSettings":
        """These settings with ``paths`` (named by the user) added to the trusted paths."""
        return replace(self, trusted_paths=(*self.trusted_paths, *_paths(paths)))

    def replace(self, **changes: Any) -> "RunSettings":
        return replace(self, **changes)


@dataclass
class RunContext:
    """What the executor hands a running node besides its inputs: where it runs, the
    folders it reads and writes, the host's :class:`RunSettings`, and the channels back
    to the host (progress with a preview, files written, the stop request)."""

    node_id: str = ""
    device: str = "cpu"
    output_dir: Path = field(default_factory=lambda: Path("output"))
    input_dir: Path = field(default_factory=lambda: Path("input"))
    settings: RunSettings = field(default_factory=RunSettings)
    on_progress: ProgressCallback | None = None
    on_file_written: FileCallback | None = None
    is_interrupted: Callable[[], bool] = lambda: False

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        """Report step ``step`` of ``total`` (1-based), with an optional preview image;
        also the natural place to stop, so it checks for interruption first."""
        self.check_interrupted()
        if self.on_progress is not None:
            self.on_progress(step, total, preview)

    def report_written(self, path: Path) -> None:
        """Tell the host a file was written (the CLI lists them, the editor shows them)."""
        if self.on_file_written is not None:
            self.on_file_written(Path(path))

    def check_interrupted(self) -> None:
        if self.is_interrupted():
            raise Interrupted(f"interrupted in node {self.node_id}")
