"""Sweeps on a local Ray started here with two CPU actors: the same files as a local sweep,
and no point lost when an actor is killed mid-sweep."""

from __future__ import annotations

import json
import os
import signal
import tempfile
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install nodeflow[ray])")

import nodeflow.api  # noqa: E402
from nodeflow.host.settings import build_run_settings  # noqa: E402
from nodeflow.sweep import Sweep, axes_from_mapping  # noqa: E402
from tests.faces.test_sweep import quick_workflow  # noqa: E402

pytestmark = pytest.mark.slow
SEEDS = list(range(1, 9))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    return quick_workflow(tmp_path_factory.mktemp("wf"), steps=3)


@pytest.fixture(scope="module")
def local_files(workflow, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    result = nodeflow.api.open(workflow, device="cpu").sweep({"5.seed": SEEDS}, output_dir=out)
    assert result.ok
    return {path.name: path.read_bytes() for path in out.glob("0*.png")}


def images(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.glob("0*.png")}


def test_a_sweep_on_two_ray_actors_writes_the_local_sweeps_files_bit_for_bit(local_ray, workflow, local_files, tmp_path):
    result = nodeflow.api.open(workflow, device="cpu").sweep({"5.seed": SEEDS}, output_dir=tmp_path, ray=True, actors=2)
    assert result.ok, result.failed
    assert images(tmp_path) == local_files and len(local_files) == len(SEEDS)
    workers = {p["worker"].split(" pid")[0] for p in json.loads((tmp_path / "sweep.json").read_text())["points"]}
    assert workers == {"actor 0", "actor 1"}  # both did work
    assert result.executed["Checkpoint"] == 2  # the model loads once per actor
    assert result.executed["Sampler"] == len(SEEDS)


def test_killing_an_actor_mid_sweep_still_completes_every_point_once(local_ray, workflow, local_files, tmp_path):
    from nodeflow.sweep.ray_backend import RayBackend

    flow = nodeflow.api.open(workflow, device="cpu")
    settings = build_run_settings(flow.graph.registry)
    sweep = Sweep(flow.graph, axes_from_mapping(flow.graph, {"5.seed": SEEDS}), output_dir=tmp_path,
                  settings=settings, device="cpu")
    backend = RayBackend(sweep.document(), device="cpu", actors=2)
    victim = backend.pids()[0]
    killed = []

    def on_point(outcome):
        if not killed:  # the first point is back: both actors are busy; kill one of them
            assert list(Path(tempfile.gettempdir()).glob(f"nodeflow-sweep-{victim}-*"))  # its staging folder
            os.kill(victim, signal.SIGKILL)
            killed.append(outcome.worker)

    try:
        result = sweep.run(backend, on_point=on_point)
    finally:
        backend.close()
    assert result.ok, (result.failed, result.error)
    points = json.loads((tmp_path / "sweep.json").read_text())["points"]
    assert sorted(p["index"] for p in points) == list(range(len(SEEDS)))  # every point, each once
    assert images(tmp_path) == local_files  # the same outputs, none written twice
    assert backend.retried  # the killed actor's points in flight were lost and run elsewhere
    by_victim = [p for p in points if p["worker"].endswith(f"pid {victim}")]
    assert len(by_victim) <= 1 and not set(backend.retried) & {p["index"] for p in by_victim}
    # The dead actor was replaced by a new one, and the staging folder the killed process
    # could not remove is gone.
    assert backend.pool.restarts == 1 and victim not in backend.pids()
    assert not list(Path(tempfile.gettempdir()).glob(f"nodeflow-sweep-{victim}-*"))
