"""The one place a host's :class:`~nodeflow.model.context.RunSettings` are built.

The CLI, the scripting API, the editor and the server all call
:func:`build_run_settings`, so they agree on where models are found (the user's folders,
then what the packs ship) and on which paths a workflow may reach: only those the user
named themselves. :func:`user_named_files` decides, once for every host, whether a
value set from outside the workflow (``--set``, ``Flow.set``, a file dialog) is such a path.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

from nodeflow.host.config import load_models_config
from nodeflow.model.context import RunSettings
from nodeflow.model.fields import FileChoice
from nodeflow.model.registry import NodeRegistry


def build_run_settings(
    registry: NodeRegistry,
    models: Iterable[str | os.PathLike[str]] = (),
    allow_paths: Iterable[str | os.PathLike[str]] = (),
    environ: Mapping[str, str] = os.environ,
    **options: Any,
) -> RunSettings:
    """Settings for runs of ``registry``'s nodes: the user's model locations (``models``,
    ``$NODEFLOW_MODELS``, the config file; see :mod:`nodeflow.host.config`) followed by the
    packs' own model folders, the paths the user allowed, and any other
    :class:`RunSettings` field given in ``options`` (``workflow=``, ``previews=`` ...).
    Raises :class:`~nodeflow.host.config.ConfigError` for an unreadable config."""
    config = load_models_config(models, environ)
    kinds = set(config.folders) | {kind for pack in registry.packs for kind in pack.model_folders}
    folders = {kind: [*config.folders.get(kind, ()), *registry.model_folders(kind)] for kind in sorted(kinds)}
    return RunSettings(model_folders=folders, model_names=config.names, trusted_paths=tuple(allow_paths), **options)


def user_named_files(registry: NodeRegistry, node_type: str, values: Mapping[str, Any]) -> list[str]:
    """The values in ``values`` (set by the user on a node of ``node_type``) that name files:
    those the host should trust, since the user typed or picked them, not a shared file."""
    cls = registry.get(node_type)
    if cls is None:
        return []
    return [str(value) for name, value in values.items()
            if isinstance(cls.inputs.get(name), FileChoice) and isinstance(value, str) and value]
