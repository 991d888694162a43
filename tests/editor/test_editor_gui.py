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
ROOT = Path(__file__).resolve().parents[2]
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

    def __init__(self, display: str, workflow: Path | None, folder: Path, env: dict[str, str] | None = None):
        self.display = display
        self.hook = folder / "hook"
        self.config = folder / "config"
        self._serial = 0
        env = {**os.environ, "DISPLAY": display, "NODEFLOW_EDITOR_HOOK": str(self.hook),
               "NODEFLOW_CONFIG_DIR": str(self.config), "HF_HUB_OFFLINE": "1", **(env or {})}
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

    def start(workflow: Path | None, **env: str) -> Editor:
        editor = Editor(display, workflow, tmp_path, env)
        editors.append(editor)
        editor.wait_for(lambda s: s["frames"] > 5 and s["settled"], timeout=60)
        editor.frames_pass(2)
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


def overlap(a, b) -> bool:
    """Whether two on-screen rectangles ``[x, y, w, h]`` overlap."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def colour_near(pixel, rgb, tolerance=12) -> bool:
    return all(abs(int(p) - c) <= tolerance for p, c in zip(pixel, rgb))


def test_window_draws_the_graph_and_runs_it_to_a_picture(start_editor, tmp_path):
    editor = start_editor(picture_workflow(tmp_path / "pictures.json"))
    state = editor.state()
    assert set(state["nodes"]) == {"1", "2", "3", "4", "5"}
    assert sorted(state["links"]) == [["1", "image", "2", "image"], ["3", "value", "5", "value"]]

    before = np.asarray(editor.screenshot(tmp_path / "before.png"))
    x, y, w, h = state["node_rects"]["1"]
    title_pixel = before[int(y) + 4, int(x + w - 12)]
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
        assert colour_near(after[int(y) + 4, int(x + w - 12)], STATE_COLORS["done"]), node_id
    # The preview shows the sunset: warm sky at the top, the sun near the centre.
    px, py, pw, ph = done["preview_rect"]
    sky = after[int(py + ph * 0.1), int(px + pw * 0.2)]
    assert sky[0] > 180 and sky[0] > sky[2], sky
    sun = after[int(py + ph * 0.62), int(px + pw * 0.5)]
    assert sun[0] > 230 and sun[1] > 200, sun
    assert "finished" in done["status"]
    # The picture is also drawn inside the ShowImage node itself.
    shown = editor.wait_for(lambda s: "2" in s["thumb_rects"] and s["thumb_rects"]["2"][2] > 0, timeout=30)
    editor.frames_pass(3)
    inside_node = np.asarray(editor.screenshot(tmp_path / "thumb.png"))
    tx, ty, tw, th = shown["thumb_rects"]["2"]
    nx, ny, nw, nh = shown["node_rects"]["2"]
    assert nx <= tx and tx + tw <= nx + nw + 2 and ny <= ty and ty + th <= ny + nh + 2
    sky = inside_node[int(ty + th * 0.1), int(tx + tw * 0.2)]
    assert sky[0] > 180 and sky[0] > sky[2], sky
    sun = inside_node[int(ty + th * 0.62), int(tx + tw * 0.5)]
    assert sun[0] > 230 and sun[1] > 200, sun


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
    assert not any(overlap(drawn["node_rects"][new_id], r) for k, r in drawn["node_rects"].items() if k != new_id)

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

    # Pan the canvas (middle-button drag from empty canvas): positions in the graph do not change.
    assert not any(overlap([330, 900, 1, 1], r) for r in saved["node_rects"].values())
    editor.xdotool("mousemove", "330", "900")
    editor.frames_pass(2)
    editor.xdotool("mousedown", "2")
    editor.frames_pass(2)
    for step in range(1, 6):
        editor.xdotool("mousemove", str(330 - 12 * step), str(900 - 8 * step))
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
    editor.xdotool("mousemove", "740", "775")  # the "pictures" category (under the core's "layout")
    editor.frames_pass(3)
    editor.xdotool("mousemove", "840", "775")  # into its submenu, along the row
    editor.frames_pass(3)
    editor.xdotool("mousemove", "850", "793")  # "Sunset"
    editor.frames_pass(3)
    editor.xdotool("click", "1")
    placed = editor.wait_for(lambda s: len(s["nodes"]) == before + 1, timeout=30)
    new_id = max(placed["nodes"], key=int)
    assert placed["nodes"][new_id]["type"] == "Sunset"
    # It lands where the menu was opened, or the nearest free spot when a node is there.
    drawn = editor.wait_for(lambda s: s["node_rects"][new_id][2] > 0, timeout=30)
    x, y, w, h = drawn["node_rects"][new_id]
    assert ((x - 700) ** 2 + (y - 720) ** 2) ** 0.5 < 300, (x, y)  # at the cursor, or moved aside a little
    assert not any(overlap(drawn["node_rects"][new_id], r) for k, r in drawn["node_rects"].items() if k != new_id)


def inside(rect, area) -> bool:
    x, y, w, h = rect
    ax, ay, aw, ah = area
    return w > 0 and ax <= x and ay <= y and x + w <= ax + aw and y + h <= ay + ah


@pytest.mark.slow
def test_fit_view_shows_the_whole_default_workflow_at_two_window_sizes(start_editor, tmp_path):
    default = ROOT / "workflows" / "default.json"
    editor = start_editor(default, NODEFLOW_TEST_REGISTRY="installed")
    for width, height in ((1600, 1000), (1280, 720)):
        editor.request("resize", width=width, height=height)
        editor.frames_pass(3)
        editor.xdotool("mousemove", str(width // 2), str(height // 2))
        editor.xdotool("key", "Home")  # fit all (also done on open)
        state = editor.wait_for(lambda s: s["settled"] and s["viewport"] == [width, height], timeout=30)
        editor.frames_pass(4)
        state = editor.state()
        assert len(state["nodes"]) == 9
        cx, cy, cw, ch = state["canvas_rect"]
        editor.xdotool("mousemove", str(int(cx + 5)), str(int(cy + ch - 5)))  # hover no node
        editor.frames_pass(3)
        for node_id, rect in state["node_rects"].items():
            assert inside(rect, state["canvas_rect"]), (width, node_id, rect, state["canvas_rect"])
        # ... and the pixels agree: every node's title bar is drawn where the editor says.
        shot = np.asarray(editor.screenshot(tmp_path / f"fit-{width}.png"))
        for node_id, (x, y, w, h) in state["node_rects"].items():
            assert colour_near(shot[int(y) + 2, int(x + w * 0.8)], STATE_COLORS["idle"], 16), node_id


def test_zoom_in_and_out_changes_node_size_on_screen(start_editor, tmp_path):
    editor = start_editor(picture_workflow(tmp_path / "pictures.json"))
    before = editor.state()
    x, y, w, h = before["canvas_rect"]
    editor.xdotool("mousemove", str(int(x + w / 2)), str(int(y + h / 2)))
    editor.frames_pass(2)
    editor.xdotool("key", "minus")
    smaller = editor.wait_for(lambda s: s["zoom"] < before["zoom"], timeout=30)
    editor.frames_pass(4)
    smaller = editor.state()
    assert smaller["node_rects"]["1"][2] < before["node_rects"]["1"][2] * 0.95
    # Ctrl+wheel up zooms in at the cursor.
    editor.xdotool("keydown", "ctrl")
    editor.frames_pass(2)
    for _ in range(3):
        editor.xdotool("click", "4")
        editor.frames_pass(2)
    editor.xdotool("keyup", "ctrl")
    bigger = editor.wait_for(lambda s: s["zoom"] > before["zoom"], timeout=30)
    editor.frames_pass(4)
    bigger = editor.state()
    assert bigger["node_rects"]["1"][2] > before["node_rects"]["1"][2] * 1.05
    assert bigger["node_rects"]["1"][3] > before["node_rects"]["1"][3] * 1.05
    # Zooming moves nothing in the graph: positions in the file stay.
    assert {k: n["pos"] for k, n in bigger["nodes"].items()} == {k: n["pos"] for k, n in before["nodes"].items()}
    assert not bigger["dirty"]
    # The drawn title bar follows: measured in the pixels.
    shot = np.asarray(editor.screenshot(tmp_path / "zoomed.png"))
    bx, by, bw, bh = bigger["node_rects"]["1"]
    assert colour_near(shot[int(by) + 4, int(bx + bw - 12)], STATE_COLORS["idle"], 16)


def test_saving_an_opened_comfyui_file_writes_a_new_file_and_keeps_the_original(start_editor, tmp_path):
    original = tmp_path / "comfy_ui.json"
    shutil.copy(ROOT / "tests" / "fixtures" / "comfyui" / "txt2img_ui_v04.json", original)
    before = original.read_bytes()
    editor = start_editor(original, NODEFLOW_TEST_REGISTRY="installed")
    assert editor.state()["path"] is None
    editor.xdotool("mousemove", "700", "500")
    editor.xdotool("key", "ctrl+s")  # Save: asks where, with a new name beside the original
    editor.wait_for(lambda s: s["dialog_shown"], timeout=30)
    dialog = editor.request("dialog")
    assert dialog["purpose"] == "save" and dialog["config"]["default_filename"] == "comfy_ui-nodeflow"
    assert original.read_bytes() == before
    # Naming the original is refused; the suggested name is written.
    refused = editor.request("file_chosen", path=str(original))
    assert "not a nodeflow workflow" in refused["status"] and original.read_bytes() == before
    editor.request("file_chosen", path=str(tmp_path / "comfy_ui-nodeflow"))
    saved = editor.wait_for(lambda s: s["path"] is not None, timeout=30)
    assert saved["path"] == str(tmp_path / "comfy_ui-nodeflow.json")
    assert json.loads((tmp_path / "comfy_ui-nodeflow.json").read_text())["format"] and original.read_bytes() == before
    # Ctrl+S now saves that copy in place.
    editor.xdotool("key", "ctrl+s")
    editor.wait_for(lambda s: "saved comfy_ui-nodeflow.json" in s["status"], timeout=30)
    assert original.read_bytes() == before


def test_opening_a_png_through_the_dialog(start_editor, tmp_path):
    from nodeflow.files.pngmeta import WORKFLOW_KEY, png_info
    from nodeflow.files.open import load_workflow

    carrier = tmp_path / "elsewhere" / "made.png"
    carrier.parent.mkdir()
    workflow = load_workflow(picture_workflow(tmp_path / "source.json"), registry())
    Image.new("RGB", (32, 32), (200, 80, 40)).save(carrier, pnginfo=png_info({WORKFLOW_KEY: json.dumps(workflow.to_dict())}))
    editor = start_editor(None)
    editor.xdotool("mousemove", "700", "500")
    editor.xdotool("key", "ctrl+o")
    editor.wait_for(lambda s: s["dialog_shown"], timeout=30)
    editor.frames_pass(5)
    # The dialog's own file name box (bottom of the dialog, centred in the window), typed
    # into with an absolute path in another folder, then its OK button.
    editor.xdotool("mousemove", "767", "689")
    editor.xdotool("click", "1")
    editor.frames_pass(3)
    editor.xdotool("type", "--delay", "30", str(carrier))
    editor.frames_pass(10)
    editor.xdotool("mousemove", "440", "712")
    editor.frames_pass(3)
    editor.xdotool("click", "1")
    opened = editor.wait_for(lambda s: len(s["nodes"]) == 5, timeout=30)
    assert "imported made.png" in opened["status"] and opened["path"] is None
    assert sorted(opened["links"]) == [["1", "image", "2", "image"], ["3", "value", "5", "value"]]


def test_search_at_the_cursor_on_double_click_and_after_an_output_is_dropped(start_editor, tmp_path):
    editor = start_editor(picture_workflow(tmp_path / "pictures.json"))
    state = editor.state()
    cx, cy, cw, ch = state["canvas_rect"]
    spot = [int(cx + cw * 0.5), int(cy + ch * 0.85)]  # empty canvas below the nodes
    assert not any(overlap([*spot, 1, 1], r) for r in state["node_rects"].values())
    editor.xdotool("mousemove", *map(str, spot))
    editor.frames_pass(2)
    for attempt in range(3):  # on a loaded machine the two clicks may land too far apart in frames
        editor.xdotool("click", "--repeat", "2", "--delay", "60", "1")
        editor.frames_pass(4)
        if editor.state()["search"]["shown"]:
            break
    shown = editor.wait_for(lambda s: s["search"]["shown"], timeout=30)
    px, py = shown["search"]["pos"]
    assert abs(px - spot[0]) <= 2 and py <= spot[1] + 2 and spot[1] - py < 340  # at the cursor (kept on screen)
    editor.frames_pass(3)
    editor.xdotool("type", "--delay", "60", "multip")
    editor.wait_for(lambda s: s["search"]["types"] == ["Multiply"], timeout=30)
    editor.xdotool("key", "Return")
    added = editor.wait_for(lambda s: len(s["nodes"]) == 6, timeout=30)
    new_id = max(added["nodes"], key=int)
    assert added["nodes"][new_id]["type"] == "Multiply" and not added["search"]["shown"]
    drawn = editor.wait_for(lambda s: s["node_rects"][new_id][2] > 0, timeout=30)
    x, y, _, _ = drawn["node_rects"][new_id]
    assert abs(x - spot[0]) < 120 and abs(y - spot[1]) < 120  # where the double click was

    # Drag a link out of Number's output and let go on empty canvas: the search offers only
    # node types that take a FLOAT, and the one chosen comes linked.
    pins = drawn["pins"]
    target = [int(cx + cw * 0.15), int(cy + ch * 0.9)]
    editor.drag(pins["3.value.out"], target)
    offered = editor.wait_for(lambda s: s["search"]["shown"], timeout=30)
    assert offered["search"]["accepting"] == "FLOAT"
    assert "Multiply" in offered["search"]["types"] and "Sunset" not in offered["search"]["types"]
    assert "Add" not in offered["search"]["types"]  # only widgets: no socket for a FLOAT
    editor.frames_pass(3)
    editor.xdotool("type", "--delay", "60", "multi")
    editor.wait_for(lambda s: s["search"]["types"] == ["Multiply"], timeout=30)
    editor.xdotool("key", "Return")
    linked = editor.wait_for(lambda s: len(s["nodes"]) == 7, timeout=30)
    added_id = max(linked["nodes"], key=int)
    assert linked["nodes"][added_id]["type"] == "Multiply" and ["3", "value", added_id, "a"] in linked["links"]
    editor.xdotool("key", "ctrl+z")  # one undo step takes node and link away
    undone = editor.wait_for(lambda s: len(s["nodes"]) == 6, timeout=30)
    assert all(link[2] != added_id for link in undone["links"])


def test_a_number_field_is_typed_into_and_ctrl_a_selects_its_digits(start_editor, tmp_path):
    editor = start_editor(picture_workflow(tmp_path / "pictures.json"))
    state = editor.state()
    x, y = state["pins"]["3.value.in"]  # Number's value box starts right of its pin
    editor.xdotool("mousemove", str(int(x + 40)), str(int(y)))
    editor.frames_pass(2)
    editor.xdotool("click", "1")
    editor.frames_pass(3)
    editor.xdotool("key", "ctrl+a")  # the digits, not every node
    editor.frames_pass(2)
    editor.xdotool("type", "--delay", "60", "7.5")
    editor.frames_pass(2)
    assert editor.state()["selection"] == []
    editor.xdotool("mousemove", "330", "900")  # leave the box: the value is set
    editor.xdotool("click", "1")
    typed = editor.wait_for(lambda s: s["nodes"]["3"]["values"]["value"] == 7.5, timeout=30)
    assert typed["dirty"]
    editor.xdotool("key", "ctrl+z")
    editor.wait_for(lambda s: s["nodes"]["3"]["values"]["value"] == 2.0, timeout=30)


def test_load_image_picks_a_picture_into_the_input_folder_and_shows_it(start_editor, tmp_path):
    from nodeflow.files.workflow import save_workflow
    from nodeflow.model.registry import default_registry

    graph = Graph(default_registry())
    graph.add_node("LoadImage", pos=(40, 40))
    workflow = tmp_path / "load.json"
    save_workflow(workflow, graph)
    picture = tmp_path / "elsewhere" / "photo.png"
    picture.parent.mkdir()
    Image.new("RGB", (64, 48), (30, 200, 60)).save(picture)
    editor = start_editor(workflow, NODEFLOW_TEST_REGISTRY="installed")
    editor.request("pick_picture", node="1", field="image")
    assert editor.request("dialog")["purpose"] == "picture"
    editor.request("file_chosen", path=str(picture))
    chosen = editor.wait_for(lambda s: s["nodes"]["1"]["values"]["image"] == "photo.png", timeout=30)
    assert (tmp_path / "input" / "photo.png").read_bytes() == picture.read_bytes()  # the editor runs in tmp_path
    assert "photo.png" in chosen["status"]
    shown = editor.wait_for(lambda s: "1" in s["thumb_rects"] and s["thumb_rects"]["1"][2] > 0, timeout=30)
    editor.frames_pass(3)
    shot = np.asarray(editor.screenshot(tmp_path / "load.png"))
    tx, ty, tw, th = shown["thumb_rects"]["1"]
    assert colour_near(shot[int(ty + th / 2), int(tx + tw / 2)], (30, 200, 60), 20)


def test_a_link_clicked_and_r_gets_a_reroute_point_that_leaves_the_run_unchanged(start_editor, tmp_path):
    editor = start_editor(picture_workflow(tmp_path / "pictures.json"))
    pins = editor.state()["pins"]
    (ax, ay), (bx, by) = pins["1.image.out"], pins["2.image.in"]
    editor.xdotool("mousemove", str(int((ax + bx) / 2)), str(int((ay + by) / 2)))  # the middle of the link
    editor.frames_pass(3)
    editor.xdotool("click", "1")
    editor.frames_pass(3)
    editor.xdotool("key", "r")
    state = editor.wait_for(lambda s: len(s["nodes"]) == 6, timeout=30)
    (reroute,) = set(state["nodes"]) - {"1", "2", "3", "4", "5"}
    assert sorted(l for l in state["links"] if "image" in l or reroute in l) == [
        ["1", "image", reroute, "value"], [reroute, "value", "2", "image"]]
    state = editor.wait_for(lambda s: s["node_rects"][reroute][2] > 0, timeout=30)
    editor.frames_pass(5)
    shot = np.asarray(editor.screenshot(tmp_path / "reroute.png"))
    x, y, w, h = state["node_rects"][reroute]
    assert w > 0 and h > 0
    for other in ("1", "2"):
        assert not overlap(state["node_rects"][reroute], state["node_rects"][other])  # covers neither end
    assert colour_near(shot[int(y) + 4, int(x + w - 12)], STATE_COLORS["idle"])  # a node on screen

    assert editor.request("run")["refused"] is None
    done = editor.wait_for(lambda s: s["run"]["status"] != "running", timeout=60)
    assert done["run"]["status"] == "ok", done["run"]
    assert done["run"]["states"] == {"1": "done", "2": "done"}  # the reroute is no step
    assert done["run"]["images"] == 1 and done["run"]["steps_previewed"] == 6


def test_double_clicking_a_group_title_collapses_and_expands_it(start_editor, tmp_path):
    path = picture_workflow(tmp_path / "grouped.json")
    document = json.loads(path.read_text())
    # around Number #3 and Add #4 (at 40,320 and 340,320); Format #5 at 640 stays outside
    document["ui"]["groups"] = [{"title": "maths", "pos": [20, 270], "size": [540, 220]}]
    path.write_text(json.dumps(document))
    editor = start_editor(path)
    state = editor.state()
    (x1, y1, *_), (_, y3, *_) = state["node_rects"]["1"], state["node_rects"]["3"]
    k = (y3 - y1) / (320 - 60)  # screen pixels per canvas unit after fitting the view

    def screen(gx, gy):
        return x1 + (gx - 40) * k, y1 + (gy - 60) * k

    add_x, add_y, add_w, _ = state["node_rects"]["4"]
    before = np.asarray(editor.screenshot(tmp_path / "expanded.png"))
    assert colour_near(before[int(add_y) + 4, int(add_x + add_w - 12)], STATE_COLORS["idle"])  # Add is drawn

    tx, ty = screen(200, 280)  # on the group's title strip
    editor.xdotool("mousemove", str(int(tx)), str(int(ty)))
    editor.frames_pass(3)
    editor.xdotool("click", "--repeat", "2", "--delay", "80", "1")
    editor.wait_for(lambda s: "collapse group" in s["status"] or s["dirty"], timeout=30)
    editor.frames_pass(5)
    collapsed = editor.state()
    assert ["3", "value", "5", "value"] in collapsed["links"]  # the model keeps the link
    shot = np.asarray(editor.screenshot(tmp_path / "collapsed.png"))
    assert not colour_near(shot[int(add_y) + 4, int(add_x + add_w - 12)], STATE_COLORS["idle"])  # Add is hidden
    saved = json.loads((tmp_path / "grouped.json").read_text())
    assert "collapsed" not in saved["ui"]["groups"][0]  # not saved until asked

    assert editor.request("run")["refused"] is None  # hidden nodes still run
    done = editor.wait_for(lambda s: s["run"]["status"] != "running", timeout=60)
    assert done["run"]["status"] == "ok", done["run"]

    editor.xdotool("key", "ctrl+z")  # undo expands it again
    editor.wait_for(lambda s: not s["dirty"], timeout=30)
    editor.frames_pass(5)
    again = np.asarray(editor.screenshot(tmp_path / "undone.png"))
    assert colour_near(again[int(add_y) + 4, int(add_x + add_w - 12)], STATE_COLORS["idle"])


def test_a_long_prompt_wraps_in_its_box_and_is_stored_unbroken(start_editor, tmp_path):
    from nodeflow.editor.wrapping import SOFT_BREAK

    editor = start_editor(picture_workflow(tmp_path / "pictures.json"))
    box = editor.state()["wrapped_boxes"]["5.template"]
    x, y, w, h = box["rect"]
    editor.xdotool("mousemove", str(int(x + 20)), str(int(y + 10)))
    editor.frames_pass(2)
    for _ in range(5):  # under load the first click can land before the box takes keys: empty it, checked
        editor.xdotool("click", "1")
        editor.frames_pass(3)
        editor.xdotool("key", "ctrl+a", "BackSpace")
        editor.frames_pass(3)
        if editor.state()["nodes"]["5"]["values"]["template"] == "":
            break
    assert editor.state()["nodes"]["5"]["values"]["template"] == ""
    text = "a red circle on a blue background with a soft shadow, seen from above"
    editor.xdotool("type", "--delay", "15", text)
    editor.frames_pass(2)
    editor.xdotool("mousemove", "330", "900")  # leave the box: the value is set and wrapped
    editor.xdotool("click", "1")
    # the value follows each key; the box is wrapped once the click has taken the focus away
    typed = editor.wait_for(lambda s: s["nodes"]["5"]["values"]["template"] == text
                            and "\n" in s["wrapped_boxes"]["5.template"]["shown"], timeout=30)
    shown = typed["wrapped_boxes"]["5.template"]["shown"]
    assert SOFT_BREAK in shown and shown.replace(SOFT_BREAK, " ") == text  # broken on screen only
    assert len(shown.split("\n")) >= 3
    editor.frames_pass(5)
    picture = np.asarray(editor.screenshot(tmp_path / "wrapped.png")).astype(int)
    line = h / 4  # the box is about four lines high
    third_row = picture[int(y + 2 * line + 2):int(y + 3 * line - 2), int(x + 4):int(x + w - 4)]
    assert third_row.max() - third_row.min() > 80  # text drawn on the third line, not off the right edge
