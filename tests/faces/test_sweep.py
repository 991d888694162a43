"""Sweeps of the bundled model as a user runs them: real runs, real files, real pixels."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import nodeflow.api
from nodeflow.cli import main
from nodeflow.files.pngmeta import WORKFLOW_KEY
from nodeflow.sweep import sheet as sheet_module
from nodeflow.sweep.models import ModelFile
from tests.support import ROOT

DEFAULT = ROOT / "workflows" / "default.json"


def quick_workflow(folder: Path, steps: int = 3) -> Path:
    """The default workflow with few sampler steps: the same nodes, less waiting."""
    doc = json.loads(DEFAULT.read_text())
    next(n for n in doc["nodes"] if n["id"] == "7")["values"]["steps"] = steps
    path = folder / "quick.json"
    path.write_text(json.dumps(doc))
    return path


def sweep_cli(capsys, *args: str) -> tuple[int, dict]:
    code = main(["sweep", *args, "--report", "json", "--quiet"])
    out = capsys.readouterr().out
    return code, (json.loads(out) if out.strip() else {})


def manifest(folder: Path) -> dict:
    return json.loads((folder / "sweep.json").read_text())


def test_a_seed_sweep_runs_the_shared_upstream_work_once(tmp_path, capsys):
    out = tmp_path / "seeds"
    code, report = sweep_cli(capsys, str(quick_workflow(tmp_path)), "--vary", "5.seed=1..16", "-o", str(out))
    assert code == 0, report
    shared = {"Checkpoint": 1, "TextEncoder": 2, "EmptyLatent": 1, "CFG": 1}  # TextEncoder: the two prompts
    per_point = {"Noise": 16, "Sampler": 16, "VAEDecode": 16, "SaveImage": 16}
    assert report["executed_by_type"] == {**shared, **per_point}  # what the runs report
    assert report["plan"]["executions_by_type"] == report["executed_by_type"]  # what the plan said before
    assert report["plan"]["node_executions"] == 69 and report["plan"]["without_sharing"] == 16 * 9

    points = manifest(out)["points"]
    assert [p["overrides"][0]["value"] for p in points] == list(range(1, 17))
    assert len({p["signatures"]["7"] for p in points}) == 16 and len({p["signatures"]["1"] for p in points}) == 1
    pictures = [Image.open(out / p["files"][0]) for p in points]
    assert len({im.tobytes() for im in pictures}) == 16  # each seed its own image
    embedded = json.loads(pictures[6].text[WORKFLOW_KEY])
    assert next(n for n in embedded["nodes"] if n["id"] == "5")["values"]["seed"] == 7


def test_an_image_of_a_sweep_reruns_alone_to_the_same_pixels(tmp_path, capsys):
    out = tmp_path / "seeds"
    code, _ = sweep_cli(capsys, str(quick_workflow(tmp_path)), "--vary", "5.seed=3,9", "-o", str(out))
    assert code == 0
    image = out / manifest(out)["points"][1]["files"][0]
    assert main(["run", str(image), "-o", str(tmp_path / "again"), "--quiet"]) == 0
    (again,) = (tmp_path / "again").glob("*.png")
    assert Image.open(again).tobytes() == Image.open(image).tobytes()


def rendered_label(text: str) -> Image.Image:
    """The text as Pillow's default font draws it, black on white: what a label must look like."""
    canvas = Image.new("RGB", (400, 40), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 10), text, fill=(0, 0, 0), font=sheet_module.font())
    return canvas.crop(draw.textbbox((10, 10), text, font=sheet_module.font()))


def test_a_prompt_by_scale_grid_has_a_labelled_cell_per_point(tmp_path, capsys, monkeypatch):
    prompts = ["a red circle", "a blue square", "a green circle", "a white square"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n\n")
    out = tmp_path / "grid"
    monkeypatch.chdir(tmp_path)  # @prompts.txt is relative to the current folder
    code, report = sweep_cli(capsys, str(quick_workflow(tmp_path, steps=2)), "--vary", "2.text=@prompts.txt",
                             "--vary", "6.scale=2,4,6,8", "-o", str(out))
    assert code == 0, report
    assert report["executed_by_type"]["TextEncoder"] == 4 + 1  # each prompt once, and the negative prompt
    assert report["executed_by_type"]["CFG"] == 16

    record = manifest(out)
    layout = record["sheet"]
    sheet = Image.open(out / "sheet.png").convert("RGB")
    cells = {c["point"]: c for c in layout["cells"]}
    assert len(cells) == 16
    scale, border = layout["scale"], layout["border"]
    for point in record["points"]:
        row, col = point["coords"]
        x0, y0, x1, y1 = cells[point["index"]]["box"]
        picture = Image.open(out / point["files"][0]).convert("RGB")
        inner = sheet.crop((x0 + border, y0 + border, x1 - border, y1 - border))
        assert inner.tobytes() == picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST).tobytes()
        assert sheet.getpixel((x0, y0)) == sheet_module.FRAME and sheet.getpixel((x1 - 1, y1 - 1)) == sheet_module.FRAME
        same_row = [cells[p["index"]]["box"] for p in record["points"] if p["coords"][0] == row]
        same_col = [cells[p["index"]]["box"] for p in record["points"] if p["coords"][1] == col]
        assert {b[1] for b in same_row} == {y0} and {b[0] for b in same_col} == {x0}
    xs = sorted({c["box"][0] for c in cells.values()})
    ys = sorted({c["box"][1] for c in cells.values()})
    assert len(xs) == len(ys) == 4
    labels = {(l["role"], l["text"]): l["box"] for l in layout["labels"]}
    scales = ("2.0", "4.0", "6.0", "8.0")  # as the Float field holds them
    assert set(labels) == {("row", f"text={p}") for p in prompts} | {("column", f"scale={s}") for s in scales}
    for (role, text), box in labels.items():
        assert sheet.crop(tuple(box)).tobytes() == rendered_label(text).tobytes(), text
        if role == "row":  # beside its row of cells
            row = prompts.index(text.removeprefix("text="))
            assert box[2] < xs[0] and ys[row] <= box[1] < ys[row] + (ys[1] - ys[0])
        else:
            col = [l for (r, l) in labels if r == "column"].index(text)
            assert box[3] < ys[0] and xs[col] - 2 <= box[0] < xs[col] + (xs[1] - xs[0]) // 2  # over its column


def test_ctrl_c_stops_a_sweep_and_running_it_again_runs_only_the_missing_points(tmp_path):
    workflow, out = quick_workflow(tmp_path, steps=6), tmp_path / "half"
    command = [sys.executable, "-m", "nodeflow.cli", "sweep", str(workflow), "--vary", "5.seed=1..8", "-o", str(out),
               "--quiet", "--report", "json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(manifest(out)["points"]) >= 2:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    first = manifest(out)
    done = {p["index"] for p in first["points"] if p["status"] == "ok"}
    assert 2 <= len(done) < 8 and first["complete"] is False
    assert all((out / f).is_file() for p in first["points"] for f in p["files"])

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["skipped"] == len(done) and report["ran"] == 8 - len(done)
    assert report["executed_by_type"]["Sampler"] == 8 - len(done)
    final = manifest(out)
    assert final["complete"] is True and sorted(p["index"] for p in final["points"]) == list(range(8))
    assert len(list(out.glob("0*.png"))) == 8  # nothing written twice


def test_the_scripting_api_sweeps_on_the_flows_own_cache(tmp_path):
    flow = nodeflow.api.open(quick_workflow(tmp_path, steps=2), device="cpu")
    flow.run(output_dir=tmp_path / "single")  # loads the model and encodes the prompts
    plan = flow.sweep({"5.seed": [10, 11, 12]}, output_dir=tmp_path / "api", dry_run=True)
    assert plan.executions["Checkpoint"] == 0 and plan.cached["Checkpoint"] == 1
    result = flow.sweep({"5.seed": [10, 11, 12]}, output_dir=tmp_path / "api")
    assert result.ok and sorted(result.ran) == [0, 1, 2]
    assert "Checkpoint" not in result.executed and result.executed["Sampler"] == 3
    assert result.sheet is not None and result.sheet.is_file()


def test_a_point_fails_naming_the_model_file_whose_hash_differs(tmp_path):
    from nodeflow.engine.executor import Executor
    from nodeflow.host.settings import build_run_settings
    from nodeflow.sweep import Sweep, axes_from_mapping
    from nodeflow.sweep.worker import PointRunner

    flow = nodeflow.api.open(quick_workflow(tmp_path, steps=2))
    settings = build_run_settings(flow.graph.registry)
    sweep = Sweep(flow.graph, axes_from_mapping(flow.graph, {"5.seed": [1]}), output_dir=tmp_path, settings=settings)
    (model,) = sweep.models
    assert (model.node_id, model.value) == ("1", "shapes") and model.size > 1_000_000
    other = ModelFile(model.node_id, model.node_type, model.field, model.value, model.size, "0" * 32)
    runner = PointRunner(sweep.document(), Executor(flow.graph.registry, device="cpu"), settings)
    outcome = runner.run(sweep.points[0], [other])
    runner.close()
    assert outcome.status == "error" and not outcome.files
    assert "'shapes'" in outcome.error and model.hash in outcome.error and other.hash in outcome.error


@pytest.mark.parametrize("vary, expected", [
    (["5.seed=abc"], "5"),
    (["5.sed=1..3"], "'sed'"),
    (["5.seed=5..1"], "empty"),
    (["7.latent=1,2"], "link"),
    (["5.seed=1,2", "6.scale=1,2,3", "--zip"], "--zip needs axes of one length"),
])
def test_bad_axes_are_refused_before_anything_runs(tmp_path, capsys, vary, expected):
    args = [a for v in vary for a in (["--vary", v] if not v.startswith("--") else [v])]
    code = main(["sweep", str(DEFAULT), *args, "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert not (tmp_path / "x").exists()


def test_a_dry_run_prints_the_cost_and_writes_nothing(tmp_path, capsys):
    code = main(["sweep", str(DEFAULT), "--vary", "5.seed=1..64", "--vary", "6.scale=4,6,8", "-o", str(tmp_path / "d"),
                 "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "192 point(s)" in out and "Sampler 192" in out and "Checkpoint 1" in out and "CFG 3" in out
    assert not (tmp_path / "d").exists()


def test_nodeflow_and_its_command_line_do_not_import_ray():
    code = ("import sys, nodeflow, nodeflow.api, nodeflow.cli; nodeflow.cli._parser();"
            "from nodeflow.sweep import Sweep; assert 'ray' not in sys.modules, 'ray imported'")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_points_sharing_a_prompt_run_together_and_go_to_one_worker(tmp_path):
    from nodeflow.sweep.plan import assign

    flow = nodeflow.api.open(DEFAULT)
    plan = flow.sweep({"6.scale": [4, 6, 8], "Prompt.text": ["a fox", "a cat"]}, output_dir=tmp_path, dry_run=True)
    asked = [(p.point.overrides[0][2], p.point.overrides[1][2]) for p in plan.points]
    assert asked == [(4.0, "a fox"), (6.0, "a fox"), (8.0, "a fox"), (4.0, "a cat"), (6.0, "a cat"), (8.0, "a cat")]
    assert plan.executions["TextEncoder"] == 3 and plan.executions["CFG"] == 6
    workers = assign(plan.points, 2)
    assert sorted({p.point.overrides[1][2] for p in w} == {"a fox"} or {p.point.overrides[1][2] for p in w} == {"a cat"}
                  for w in workers) == [True, True]
    seeds = flow.sweep({"5.seed": range(6)}, output_dir=tmp_path, dry_run=True)
    assert [len(w) for w in assign(seeds.points, 2)] == [3, 3]  # nothing to keep together: an even split
