"""The real editor window on a virtual screen (Xvfb): it draws the graph, runs it to a
picture, and obeys the real mouse and keyboard (xdotool).

The editor runs as a subprocess (one Dear PyGui context per process) started by
tests/editor_gui_app.py and is remote-controlled through its test hook.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.editor_gui_app import registry
from nodeflow.editor.theme import STATE_COLORS
from nodeflow.model.graph import Graph
from nodeflow.files.workflow import save_workflow

pytestmark = pytest.mark.gui
ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "tests" / "editor_gui_app.py"


@pytest.fixture(scope="module")
def display():
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb xdotool); the window tests need a virtual screen")
    number = 90 + os.getpid() % 9
    while Path(f"/tmp/.X11-unix/X{number}").exists():
        number += 1
    server = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            pytest.fail("Xvfb did not start")
        time.sleep(0.05)
    yield f":{number}"
    server.terminate()
    server.wait(5)


class Editor:
    """A running editor process and its remote control."""

    def __init__(self, display: str, workflow: Path | None, folder: Path):
        self.display = display
        self.hook = folder / "hook"
        self.config = folder / "config"
        self._serial = 0
        env = {**os.environ, "DISPLAY": display, "NODEFLOW_EDITOR_HOOK": str(self.hook),
               "NODEFLOW_CONFIG_DIR": str(self.config), "HF_HUB_OFFLINE": "1"}
        self.log = open(folder / "editor.log", "w")
        args = [sys.executable, str(APP)] + ([str(workflow)] if workflow else [])
        self.process = subprocess.Popen(args, env=env, cwd=folder, stdout=self.log, stderr=subprocess.STDOUT)

    def request(self, cmd: str, timeout: float = 30, **options) -> dict:
        self._serial += 1
        self.hook.mkdir(parents=True, exist_ok=True)
        tmp = self.hook / f".request-{self._serial}"
        tmp.write_text(json.dumps({"cmd": cmd, **options}))
        os.replace(tmp, self.hook / f"request-{self._serial}.json")
        answer = self.hook / f"response-{self._serial}.json"
        deadline = time.monotonic() + timeout
        while not answer.exists():
            if self.process.poll() is not None:
                raise AssertionError(f"the editor exited with {self.process.returncode}: {self.log_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer to {cmd}: {self.log_text()}")
            time.sleep(0.05)
        return json.loads(answer.read_text())

    def state(self) -> dict:
        return self.request("state")

    def wait_for(self, condition, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if condition(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met; last state: {json.dumps(state)[:2000]}")
            time.sleep(0.1)

    def screenshot(self, path: Path) -> Image.Image:
        path.unlink(missing_ok=True)
        self.request("screenshot", path=str(path))
        deadline = time.monotonic() + 10
        while True:
            try:
                image = Image.open(path)
                image.load()
                return image.convert("RGB")
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def xdotool(self, *args: str) -> str:
        if shutil.which("xdotool") is None:
            pytest.skip("xdotool is not installed (apt-get install xdotool); it drives the real mouse and keyboard")
        return subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": self.display},
                              capture_output=True, text=True, check=True).stdout

    def frames_pass(self, count: int) -> None:
        """Wait until the editor has drawn ``count`` more frames: on a loaded machine a
        frame can take longer than any fixed sleep, and a gesture must span frames."""
        start = self.state()["frames"]
        while self.state()["frames"] < start + count:
            time.sleep(0.02)

    def drag(self, start: list[float], end: list[float]) -> None:
        """Press at ``start``, glide to ``end`` over several frames, release: a user's drag."""
        self.xdotool("mousemove", str(int(start[0])), str(int(start[1])))
        self.frames_pass(3)
        self.xdotool("mousedown", "1")
        self.frames_pass(3)
        for t in np.linspace(0.1, 1.0, 8):
            x = start[0] + (end[0] - start[0]) * t
            y = start[1] + (end[1] - start[1]) * t
            self.xdotool("mousemove", str(int(x)), str(int(y)))
            self.frames_pass(1)
        self.frames_pass(2)
        self.xdotool("mouseup", "1")
        self.frames_pass(3)

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-3000:]

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.request("quit", timeout=30)
                self.process.wait(10)
            except (TimeoutError, AssertionError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def start_editor(display, tmp_path):
    editors: list[Editor] = []

    def start(workflow: Path | None) -> Editor:
        editor = Editor(display, workflow, tmp_path)
        editors.append(editor)
        editor.wait_for(lambda s: s["frames"] > 5, timeout=60)
        return editor

    yield start
    for editor in editors:
        editor.close()


def picture_workflow(path: Path) -> Path:
    graph = Graph(registry())
    sunset = graph.add_node("Sunset", {"steps": 6, "delay": 0.05, "size": 128}, pos=(40, 60))
    show = graph.add_node("ShowImage", pos=(340, 60))
    graph.connect(sunset.id, "image", show.id, "image")
    number = graph.add_node("Number", {"value": 2.0}, pos=(40, 320))
    graph.add_node("Add", {"b": 3.0}, pos=(340, 320))
    text = graph.add_node("Format", pos=(640, 320))
    graph.connect(number.id, "value", text.id, "value")
    save_workflow(path, graph)
    return path


def colour_near(pixel, rgb, tolerance=12) -> bool:
    return all(abs(int(p) - c) <= tolerance for p, c in zip(pixel, rgb))


def test_window_draws_the_graph_and_runs_it_to_a_picture(start_editor, tmp_path):
    editor = start_editor(picture_workflow(tmp_path / "pictures.json"))
    state = editor.state()
    assert set(state["nodes"]) == {"1", "2", "3", "4", "5"}
    assert sorted(state["links"]) == [["1", "image", "2", "image"], ["3", "value", "5", "value"]]

    before = np.asarray(editor.screenshot(tmp_path / "before.png"))
    x, y, w, h = state["node_rects"]["1"]
    title_pixel = before[int(y) + 6, int(x + w / 2)]
    assert colour_near(title_pixel, STATE_COLORS["idle"]), title_pixel

    assert editor.request("run")["refused"] is None
    done = editor.wait_for(lambda s: s["run"]["status"] != "running", timeout=60)
    assert done["run"]["status"] == "ok", done["run"]
    assert done["run"]["states"] == {"1": "done", "2": "done"}
    assert done["run"]["images"] == 1 and done["run"]["steps_previewed"] == 6

    editor.frames_pass(5)  # pictures set in the frame the run ended reach the screen a few frames later
    after = np.asarray(editor.screenshot(tmp_path / "after.png"))
    for node_id in ("1", "2"):
        x, y, w, h = done["node_rects"][node_id]
        assert colour_near(after[int(y) + 6, int(x + w / 2)], STATE_COLORS["done"]), node_id
    # The preview shows the sunset: warm sky at the top, the sun near the centre.
    px, py, pw, ph = done["preview_rect"]
    sky = after[int(py + ph * 0.1), int(px + pw * 0.2)]
    assert sky[0] > 180 and sky[0] > sky[2], sky
    sun = after[int(py + ph * 0.62), int(px + pw * 0.5)]
    assert sun[0] > 230 and sun[1] > 200, sun
    assert "finished" in done["status"]


def test_real_mouse_drags_a_link_and_ctrl_z_undoes_it(start_editor, tmp_path):
    editor = start_editor(picture_workflow(tmp_path / "pictures.json"))
    state = editor.state()
    pins = state["pins"]
    title = editor.xdotool("search", "--name", "nodeflow", "getwindowname").strip()
    assert title == "pictures.json - nodeflow"

    editor.drag(pins["3.value.out"], pins["4.a.in"])
    linked = editor.wait_for(lambda s: ["3", "value", "4", "a"] in s["links"], timeout=30)
    assert linked["dirty"]
    deadline = time.monotonic() + 5
    while not editor.xdotool("search", "--name", "nodeflow", "getwindowname").startswith("*"):
        assert time.monotonic() < deadline, "the title shows no unsaved-changes marker"
        time.sleep(0.1)

    # A link the types forbid (Add's FLOAT sum into... Number has no inputs; use Format's STRING text
    # into Add.b) is refused with the reason in the status bar, and the graph is unchanged.
    editor.drag(pins["5.text.out"], pins["4.b.in"])
    refused = editor.wait_for(lambda s: "cannot link" in s["status"], timeout=30)
    assert "gives STRING" in refused["status"] and ["5", "text", "4", "b"] not in refused["links"]

    # Ctrl+Z with the mouse over the canvas undoes the link.
    editor.xdotool("mousemove", "700", "700")
    editor.xdotool("key", "ctrl+z")
    undone = editor.wait_for(lambda s: ["3", "value", "4", "a"] not in s["links"], timeout=30)
    assert sorted(undone["links"]) == [["1", "image", "2", "image"], ["3", "value", "5", "value"]]
    assert not undone["dirty"]
    editor.xdotool("key", "ctrl+y")
    editor.wait_for(lambda s: ["3", "value", "4", "a"] in s["links"], timeout=30)


def test_a_crash_leaves_unsaved_work_that_the_next_start_restores(start_editor, tmp_path):
    workflow = picture_workflow(tmp_path / "pictures.json")
    editor = start_editor(workflow)
    pins = editor.state()["pins"]
    editor.drag(pins["3.value.out"], pins["4.a.in"])
    editor.wait_for(lambda s: ["3", "value", "4", "a"] in s["links"], timeout=30)
    recovery = editor.config / "recovery.json"
    deadline = time.monotonic() + 15
    while not recovery.exists():  # autosave after a few quiet seconds
        assert time.monotonic() < deadline, "no recovery file was written"
        time.sleep(0.2)
    editor.process.kill()  # a crash: no clean exit removes the recovery copy
    editor.process.wait()

    again = start_editor(workflow)
    offered = again.wait_for(lambda s: s["recovery_offered"], timeout=30)
    assert ["3", "value", "4", "a"] not in offered["links"]  # the file as saved, until the user says restore
    again.request("answer_recovery", restore=True)
    restored = again.wait_for(lambda s: ["3", "value", "4", "a"] in s["links"], timeout=30)
    assert restored["dirty"] and restored["path"] == str(workflow)


def test_palette_and_keyboard_shortcuts(start_editor, tmp_path):
    editor = start_editor(picture_workflow(tmp_path / "pictures.json"))
    state = editor.state()
    count = len(state["nodes"])

    # Type in the palette's search box; Enter places the best match.
    x, y, w, h = state["palette_filter_rect"]
    editor.xdotool("mousemove", str(int(x + w / 2)), str(int(y + h / 2)))
    editor.xdotool("click", "1")
    editor.frames_pass(3)
    editor.xdotool("type", "--delay", "60", "multip")
    editor.frames_pass(3)
    editor.xdotool("key", "Return")
    added = editor.wait_for(lambda s: len(s["nodes"]) == count + 1, timeout=30)
    new_id = max(added["nodes"], key=int)
    assert added["nodes"][new_id]["type"] == "Multiply"
    drawn = editor.wait_for(lambda s: s["node_rects"][new_id][2] > 0, timeout=30)
    nx, ny, nw, nh = drawn["node_rects"][new_id]
    px, _, pw, _ = added["preview_rect"]
    assert x + w < nx and nx + nw < px and ny + nh < added["viewport"][1]  # placed in view on the canvas

    # Leave the text box: click empty canvas, then work with shortcuts.
    editor.xdotool("mousemove", "900", "850")
    editor.xdotool("click", "1")
    editor.frames_pass(3)
    editor.xdotool("key", "ctrl+a")
    editor.wait_for(lambda s: len(s["selection"]) == count + 1, timeout=30)
    editor.xdotool("key", "ctrl+b")
    editor.wait_for(lambda s: all(n["mode"] == "bypass" for n in s["nodes"].values()), timeout=30)
    editor.xdotool("key", "ctrl+z")
    editor.wait_for(lambda s: all(n["mode"] == "normal" for n in s["nodes"].values()), timeout=30)
    editor.xdotool("key", "ctrl+c")
    editor.xdotool("key", "ctrl+v")
    pasted = editor.wait_for(lambda s: len(s["nodes"]) == 2 * (count + 1), timeout=30)
    assert len(pasted["links"]) == 2 * len(added["links"])  # links among the copied nodes came along
    editor.xdotool("key", "Delete")  # the pasted nodes are selected: delete them
    editor.wait_for(lambda s: len(s["nodes"]) == count + 1, timeout=30)
    editor.xdotool("key", "ctrl+z")
    editor.wait_for(lambda s: len(s["nodes"]) == 2 * (count + 1), timeout=30)
    editor.xdotool("key", "ctrl+s")  # the workflow has a file: saved in place, marker gone
    saved = editor.wait_for(lambda s: not s["dirty"], timeout=30)
    from nodeflow.files.open import load_workflow

    on_disk = load_workflow(tmp_path / "pictures.json", registry())
    assert set(on_disk.graph.nodes) == set(saved["nodes"]) and len(on_disk.graph.nodes) == 2 * (count + 1)

    # Pan the canvas (middle-button drag): positions in the graph do not change.
    editor.xdotool("mousemove", "700", "760")
    editor.frames_pass(2)
    editor.xdotool("mousedown", "2")
    editor.frames_pass(2)
    for step in range(1, 6):
        editor.xdotool("mousemove", str(700 - 12 * step), str(760 - 8 * step))
        editor.frames_pass(1)
    editor.xdotool("mouseup", "2")
    editor.frames_pass(3)
    panned = editor.state()
    assert panned["node_rects"]["1"][0] == saved["node_rects"]["1"][0] - 60
    assert {k: n["pos"] for k, n in panned["nodes"].items()} == {k: n["pos"] for k, n in saved["nodes"].items()}
    assert not panned["dirty"]

    # Right-click on the canvas: node types by category; the chosen one lands there.
    before = len(saved["nodes"])
    editor.xdotool("mousemove", "700", "720")
    editor.frames_pass(2)
    editor.xdotool("click", "3")
    editor.frames_pass(3)
    editor.xdotool("mousemove", "740", "757")  # the "pictures" category
    editor.frames_pass(3)
    editor.xdotool("mousemove", "840", "757")  # into its submenu, along the row
    editor.frames_pass(3)
    editor.xdotool("mousemove", "850", "775")  # "Sunset"
    editor.frames_pass(3)
    editor.xdotool("click", "1")
    placed = editor.wait_for(lambda s: len(s["nodes"]) == before + 1, timeout=30)
    new_id = max(placed["nodes"], key=int)
    assert placed["nodes"][new_id]["type"] == "Sunset"
    # Where the canvas's origin is on screen, read off a drawn node: screen = canvas + offset.
    ox = placed["node_rects"]["1"][0] - placed["nodes"]["1"]["pos"][0]
    oy = placed["node_rects"]["1"][1] - placed["nodes"]["1"]["pos"][1]
    assert placed["nodes"][new_id]["pos"] == [700 - ox, 720 - oy]
