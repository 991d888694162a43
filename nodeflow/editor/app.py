"""The editor window: menus, shortcuts, dialogs and the render loop.

Each frame drains the run's event queue, recolours nodes, refreshes the previews and
reads back what only the node editor knows (selection, dragged positions). All
editing goes through :class:`~nodeflow.editor.controller.EditorController`.

The loop draws at full rate only while something moves (input in the last moment, a
run, a pending fit); otherwise it draws a few frames a second, so an idle editor
costs next to nothing. Tests and benchmarks watch the loop through ``frame_hooks``
(see :func:`run_app`); the product window carries no instrumentation of its own.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

import dearpygui.dearpygui as dpg

from nodeflow.model.fields import FileChoice
from nodeflow.model.registry import NodeRegistry, default_registry
from nodeflow.editor.canvas import Canvas, list_files
from nodeflow.editor.controller import EditorController
from nodeflow.editor.events import GraphReplaced, Saved, StatusChanged, StatusKind
from nodeflow.editor.idle import input_watch
from nodeflow.editor.palette import ContextMenu, Palette
from nodeflow.editor.search import SearchPopup
from nodeflow.editor.panels import PREVIEW_SIZE, SidePanel
from nodeflow.editor.shipped import is_shipped
from nodeflow.editor.groups import GroupLayer
from nodeflow.editor.sweep_dialog import SweepDialog
from nodeflow.editor.theme import global_theme

WINDOW_SIZE = (1600, 1000)
SIDE_WIDTH = PREVIEW_SIZE + 24
PALETTE_WIDTH = 236
ACTIVE_FPS = 60  # while the user works or a run is going
IDLE_FPS = 4  # otherwise, where input cannot be watched without drawing
WATCHED_IDLE_FPS = 0.2  # where it can (X11, see idle.py): a heartbeat, e.g. for the autosave after a change
WATCH_SLICE_S = 0.02  # how often an idle editor looks for input
ACTIVE_AFTER_INPUT_S = 1.0
PAN_HINT = "pan: drag with the middle button    zoom: Ctrl+wheel or +/-    fit all: Home    zoom to selection: F"
FILE_FILTER = "Workflows and images (*.json *.png *.webp){.json,.png,.webp}"


def file_folders(run_options: dict[str, Any], field: FileChoice) -> list[Path]:
    """Where files for a FileChoice of kind ``field.folder`` are looked for when its node
    type offers no list itself: the configured model folders, or the input folder."""
    if field.folder == "input":
        return [Path(run_options.get("input_dir", "input"))]
    settings = run_options.get("settings")
    return list(settings.folders(field.folder)) if settings is not None else []


def chosen_path(app_data: dict[str, Any]) -> Path | None:
    """The file a Dear PyGui file dialog answer names. Its ``file_path_name`` puts the
    selected filter's extension on whatever was typed (``x.png`` became ``x.json``) and
    joins an absolute path typed in to the current folder; the typed name and the
    current folder are taken instead, and a typed absolute path as it is."""
    typed = (app_data.get("file_name") or "").strip()
    folder = app_data.get("current_path") or ""
    selections = app_data.get("selections") or {}
    if not typed and len(selections) == 1:
        return Path(next(iter(selections.values())))
    if not typed:
        whole = app_data.get("file_path_name") or ""
        return Path(whole) if whole else None
    path = Path(typed).expanduser()
    return path if path.is_absolute() else Path(folder) / path


def dialog_folder(c: EditorController) -> Path:
    """Where a file dialog opens: beside the file shown (not inside the installed
    examples), else beside the most recent file, else the home folder."""
    for candidate in (c.path, c.opened_from, *map(Path, c.recent_files()[:1])):
        if candidate is not None and not is_shipped(candidate) and candidate.parent.is_dir():
            return candidate.parent.resolve()
    return Path.home()


class EditorApp:
    def __init__(self, controller: EditorController):
        self.c = controller
        self._context_pos = (40.0, 40.0)
        self._last_title = ""
        self._last_input = time.monotonic()
        self._last_frame = 0.0
        self._last_mouse = (0.0, 0.0)
        self._frame_count = 0
        self._pick_target: tuple[str, str] | None = None
        self.input_watch = input_watch()
        self.wake_checks: list[Callable[[], bool]] = []  # more reasons to draw now (a frame hook's)
        self.show_palette = True
        self.show_side = True
        dpg.create_viewport(title=controller.title, width=WINDOW_SIZE[0], height=WINDOW_SIZE[1], disable_close=True)
        dpg.set_exit_callback(lambda: self.request(self.quit))
        dpg.bind_theme(global_theme())
        self.textures = dpg.add_texture_registry()
        self._build_window()
        self._build_dialogs()
        self._build_shortcuts()
        controller.subscribe(self._on_event)

    # ------------------------------------------------------------------ layout
    def _build_window(self) -> None:
        with dpg.window(tag="main", no_scrollbar=True) as self.window:
            with dpg.menu_bar():
                with dpg.menu(label="File"):
                    dpg.add_menu_item(label="New", shortcut="Ctrl+N", callback=lambda: self.request(self.c.new))
                    dpg.add_menu_item(label="Open...", shortcut="Ctrl+O", callback=lambda: self.request(self.ask_open))
                    self.recent_menu = dpg.add_menu(label="Open recent")
                    dpg.add_menu_item(label="Save", shortcut="Ctrl+S", callback=self.save)
                    dpg.add_menu_item(label="Save as...", shortcut="Ctrl+Shift+S", callback=self.ask_save_as)
                    dpg.add_separator()
                    dpg.add_menu_item(label="Quit", callback=lambda: self.request(self.quit))
                with dpg.menu(label="Edit"):
                    for label, keys, action in self._edit_actions():
                        dpg.add_menu_item(label=label, shortcut=keys, callback=lambda s, a, u: u(), user_data=action)
                with dpg.menu(label="View"):
                    dpg.add_menu_item(label="Fit all", shortcut="Home", callback=self.fit_all)
                    dpg.add_menu_item(label="Zoom to selection", shortcut="F", callback=self.fit_selection)
                    dpg.add_menu_item(label="Zoom in", shortcut="+ or Ctrl+wheel", callback=lambda: self.canvas.zoom_by(1))
                    dpg.add_menu_item(label="Zoom out", shortcut="-", callback=lambda: self.canvas.zoom_by(-1))
                    dpg.add_separator()
                    dpg.add_menu_item(label="Node palette", shortcut="F2", check=True, default_value=True,
                                      callback=lambda: self.toggle_panel("palette"))
                    dpg.add_menu_item(label="Side panel", shortcut="F3", check=True, default_value=True,
                                      callback=lambda: self.toggle_panel("side"))
                with dpg.menu(label="Run"):
                    dpg.add_menu_item(label="Run", shortcut="Ctrl+Enter", callback=self.run)
                    dpg.add_menu_item(label="Interrupt", shortcut="Esc", callback=self.c.interrupt)
                    dpg.add_separator()
                    dpg.add_menu_item(label="Sweep the selected nodes...", callback=lambda: self.sweep.open())
                dpg.add_button(label="Run (Ctrl+Enter)", callback=self.run)
                self.queue_count = dpg.add_input_int(label="times", default_value=1, min_value=1, max_value=100,
                                                     min_clamped=True, max_clamped=True, width=90, step=1)
                with dpg.tooltip(self.queue_count):
                    dpg.add_text("Run this many times in a row; each run after the first gets new seeds")
                dpg.add_button(label="Stop (Esc)", callback=self.c.interrupt)
                dpg.add_button(label="Fit (Home)", callback=self.fit_all)
            with dpg.group(horizontal=True):
                with dpg.child_window(width=PALETTE_WIDTH, height=-28, border=False) as self.left:
                    self.palette = Palette(self.c, self.left, self.place_new_node)
                with dpg.child_window(width=-SIDE_WIDTH, height=-28, border=False, no_scrollbar=True) as self.center:
                    self.canvas = Canvas(
                        self.c, self.center,
                        lambda f: list_files(file_folders(self.c.runner.run_options, f), tuple(f.extensions)),
                        pick_file=self.ask_picture, input_folder=self.input_folder, textures=self.textures,
                    )
                with dpg.child_window(width=-1, height=-28, border=False) as self.right:
                    self.side = SidePanel(self.c, self.right, self.textures, output_folder=self.output_folder)
            with dpg.group(horizontal=True):
                self.status = dpg.add_text("", color=(170, 175, 190))
                self.hint = dpg.add_text(PAN_HINT, color=(110, 115, 130))
        dpg.set_primary_window(self.window, True)
        self.groups = GroupLayer(self.canvas, hidden=self._covered)
        self.context_menu = ContextMenu(self.c, self._place_at_context)
        self.search = SearchPopup(self.c, self._place_from_search)
        self._search_from: tuple[str, str] | None = None  # the output the searched node will be fed by
        self._pressed_pin: tuple[tuple[str, str, str], tuple[float, float]] | None = None
        self._refresh_recent()

    def input_folder(self) -> Path:
        return Path(self.c.runner.run_options.get("input_dir", "input"))

    def output_folder(self) -> Path:
        return Path(self.c.runner.run_options.get("output_dir", "output"))

    def toggle_panel(self, which: str) -> None:
        """Hide or show the palette or the side panel; the canvas takes the room."""
        if which == "palette":
            self.show_palette = not self.show_palette
            dpg.configure_item(self.left, show=self.show_palette)
        else:
            self.show_side = not self.show_side
            dpg.configure_item(self.right, show=self.show_side)
            dpg.configure_item(self.center, width=-SIDE_WIDTH if self.show_side else -1)

    def _edit_actions(self) -> list[tuple[str, str, Callable[[], Any]]]:
        return [
            ("Undo", "Ctrl+Z", self.c.undo),
            ("Redo", "Ctrl+Y", self.c.redo),
            ("Copy", "Ctrl+C", self.c.copy),
            ("Paste", "Ctrl+V", self.c.paste),
            ("Duplicate", "Ctrl+D", self.c.duplicate),
            ("Delete", "Del", self.c.delete),
            ("Select all", "Ctrl+A", self.c.select_all),
            ("Bypass", "Ctrl+B", self.c.toggle_bypass),
            ("Reroute the selected link", "R", lambda: self.canvas.reroute_selected_links()),
        ]

    def _build_dialogs(self) -> None:
        with dpg.file_dialog(show=False, modal=True, width=760, height=460, callback=self._on_file_chosen) as self.file_dialog:
            # One filter that shows workflows and the images that carry them, first, so
            # the dialog never puts a different extension on the name typed in.
            dpg.add_file_extension(FILE_FILTER, color=(150, 220, 150))
            dpg.add_file_extension(".*")
        self._file_purpose = "open"
        with dpg.window(modal=True, show=False, no_title_bar=True, autosize=True) as self.confirm:
            self.confirm_text = dpg.add_text("")
            with dpg.group(horizontal=True):
                dpg.add_button(label="Discard changes", callback=self._confirmed)
                dpg.add_button(label="Cancel", callback=lambda: dpg.configure_item(self.confirm, show=False))
        self._pending: Callable[[], Any] | None = None
        self.sweep = SweepDialog(self.c, self.textures)
        with dpg.window(modal=True, show=False, no_title_bar=True, autosize=True) as self.recovery_window:
            self.recovery_text = dpg.add_text("")
            with dpg.group(horizontal=True):
                dpg.add_button(label="Restore", callback=lambda: self.answer_recovery(True))
                dpg.add_button(label="Discard", callback=lambda: self.answer_recovery(False))

    def _build_shortcuts(self) -> None:
        ctrl: dict[int, Callable[[], Any]] = {
            dpg.mvKey_Z: self.c.undo, dpg.mvKey_Y: self.c.redo, dpg.mvKey_C: self.c.copy,
            dpg.mvKey_V: self.c.paste, dpg.mvKey_D: self.c.duplicate, dpg.mvKey_A: self.c.select_all,
            dpg.mvKey_B: self.c.toggle_bypass, dpg.mvKey_S: self.save, dpg.mvKey_O: lambda: self.request(self.ask_open),
            dpg.mvKey_N: lambda: self.request(self.c.new), dpg.mvKey_F: self.palette.focus,
            dpg.mvKey_Return: self.run,
        }
        plus = [k for k in (getattr(dpg, n, None) for n in ("mvKey_Plus", "mvKey_Add", "mvKey_Equal")) if k is not None]
        minus = [k for k in (getattr(dpg, n, None) for n in ("mvKey_Minus", "mvKey_Subtract")) if k is not None]
        plain: dict[int, Callable[[], Any]] = {
            dpg.mvKey_Delete: self.c.delete, dpg.mvKey_Escape: self.c.interrupt,
            dpg.mvKey_Home: self.fit_all, dpg.mvKey_F: self.fit_selection,
            dpg.mvKey_R: lambda: self.canvas.reroute_selected_links(),
            dpg.mvKey_F2: lambda: self.toggle_panel("palette"), dpg.mvKey_F3: lambda: self.toggle_panel("side"),
            **{k: (lambda: self.canvas.zoom_by(1)) for k in plus},
            **{k: (lambda: self.canvas.zoom_by(-1)) for k in minus},
        }

        # Handler callbacks run after the frame that saw the key, when Ctrl may already be
        # up again; the modifiers are tracked from the same ordered stream of callbacks.
        held: set[int] = set()
        ctrl_keys = {dpg.mvKey_LControl, dpg.mvKey_RControl, dpg.mvKey_ModCtrl}
        shift_keys = {dpg.mvKey_LShift, dpg.mvKey_RShift, dpg.mvKey_ModShift}
        self._held, self._ctrl_keys = held, ctrl_keys

        def on_release(sender: int, key: int) -> None:
            self.woke()
            held.discard(key)

        def on_key(sender: int, key: int) -> None:
            self.woke()
            if key in ctrl_keys | shift_keys:
                held.add(key)
                return
            if self._dialog_open():
                return  # a dialog has the keyboard
            ctrl_down = bool(held & ctrl_keys)
            if key == dpg.mvKey_Escape and self.search.shown:
                self.search.close()
                return
            if key == dpg.mvKey_Return and not ctrl_down:
                self.search.on_enter() or self.palette.on_enter()
                return
            if self._typing() and key != dpg.mvKey_Escape and not (ctrl_down and key in (dpg.mvKey_S, dpg.mvKey_Return)):
                return  # the key belongs to the text box
            if ctrl_down and key == dpg.mvKey_S and held & shift_keys:
                self.ask_save_as()
            elif ctrl_down and key in ctrl:
                ctrl[key]()
            elif not ctrl_down and key in plain:
                plain[key]()

        def on_right_click() -> None:
            self.woke()
            if dpg.is_item_hovered(self.canvas.editor):
                mx, my = dpg.get_mouse_pos(local=False)
                self._context_pos = self.canvas.screen_to_grid(mx, my)
                self.context_menu.open_at([mx, my])

        def on_double_click() -> None:
            self.woke()
            if dpg.is_item_hovered(self.canvas.editor) and not self.canvas.node_hovered() and not self._dialog_open():
                mouse = tuple(dpg.get_mouse_pos(local=False))
                if not self.groups.toggle_at(mouse):  # a group's title: collapse or expand it
                    self.open_search(mouse)

        def on_left_press() -> None:
            self.woke()
            mouse = tuple(dpg.get_mouse_pos(local=False))
            over_canvas = dpg.is_item_hovered(self.canvas.editor) and not self._dialog_open()
            pin = self.canvas.pin_at(*mouse, side="out") if over_canvas else None
            self._pressed_pin = (pin, mouse) if pin else None
            if over_canvas and pin is None and not self.canvas.node_hovered():
                self.groups.press(mouse)  # a group's title: drag it with its nodes

        def on_left_release() -> None:
            self.woke()
            self.groups.release(tuple(dpg.get_mouse_pos(local=False)))
            pressed, self._pressed_pin = self._pressed_pin, None
            if pressed is None or self._dialog_open():
                return
            (node_id, output, _), start = pressed
            mouse = tuple(dpg.get_mouse_pos(local=False))
            moved = ((mouse[0] - start[0]) ** 2 + (mouse[1] - start[1]) ** 2) ** 0.5
            # A click on an output, or a link dragged from it let go on empty canvas.
            if moved < 4 or (self.canvas.pin_at(*mouse) is None and not self.canvas.node_hovered()):
                self.open_search(mouse, (node_id, output))

        def on_wheel(sender: int, delta: float) -> None:
            self.woke()
            if held & ctrl_keys and dpg.is_item_hovered(self.canvas.editor) and not self._dialog_open():
                self.canvas.zoom_by(1 if delta > 0 else -1, tuple(dpg.get_mouse_pos(local=False)))

        with dpg.handler_registry():
            dpg.add_key_press_handler(callback=on_key)
            dpg.add_key_release_handler(callback=on_release)
            dpg.add_mouse_click_handler(button=dpg.mvMouseButton_Right, callback=on_right_click)
            dpg.add_mouse_click_handler(button=dpg.mvMouseButton_Left, callback=on_left_press)
            dpg.add_mouse_release_handler(button=dpg.mvMouseButton_Left, callback=on_left_release)
            dpg.add_mouse_double_click_handler(button=dpg.mvMouseButton_Left, callback=on_double_click)
            dpg.add_mouse_click_handler(button=dpg.mvMouseButton_Middle, callback=lambda: self.woke())
            dpg.add_mouse_wheel_handler(callback=on_wheel)

    def _covered(self) -> bool:
        """Whether a menu, popup or dialog may be over the canvas (the group frames,
        drawn over the whole window, then step aside)."""
        return (self._dialog_open() or self.search.shown or dpg.is_item_shown(self.context_menu.window)
                or self.sweep.shown)

    def _dialog_open(self) -> bool:
        return any(dpg.is_item_shown(w) for w in (self.file_dialog, self.confirm, self.recovery_window))

    def _typing(self) -> bool:
        """Whether a text box has the keyboard (then Del, Ctrl+C, +, F... edit the text)."""
        boxes = [self.palette.filter, self.side.title_input, self.search.query, self.queue_count,
                 *self.sweep.text_inputs(), *self.canvas.widgets.values()]
        return any(dpg.is_item_active(w) for w in boxes)

    def woke(self) -> None:
        """Something happened: draw at full rate for a moment."""
        self._last_input = time.monotonic()

    # ----------------------------------------------------------------- actions
    def place_new_node(self, type_name: str) -> None:
        """Palette: beside the selected node, else in the middle of the visible canvas;
        never on top of another node."""
        self.c.add_node(type_name, self.c.position_for_new_node(type_name, self.canvas.visible_centre()))

    def open_search(self, screen: tuple[float, float], source: tuple[str, str] | None = None) -> None:
        """The search popup at ``screen``; with ``source`` (node id, output) it lists only
        node types that take that output, and links the chosen one to it."""
        self._context_pos = self.canvas.screen_to_grid(*screen)
        self._search_from = source
        data_type = self.c.output_type(*source) if source else None
        what = f"{data_type} from {self.c.label(source[0])}.{source[1]}" if source else ""
        self.search.open_at(list(screen), data_type, what)

    def _place_from_search(self, type_name: str) -> None:
        pos = self.c.free_position(type_name, self._context_pos)
        if self._search_from is not None and self._search_from[0] in self.c.graph.nodes:
            self.c.add_node_linked(type_name, pos, *self._search_from)
        else:
            self.c.add_node(type_name, pos)

    def _place_at_context(self, type_name: str) -> None:
        """Right-click menu: where the menu was opened (moved aside if that is taken)."""
        self.c.add_node(type_name, self.c.free_position(type_name, self._context_pos))

    def fit_all(self) -> None:
        self.canvas.request_fit()

    def fit_selection(self) -> None:
        self.canvas.request_fit(sorted(self.c.selection) or None)

    def run(self) -> None:
        self.c.run_queue(dpg.get_value(self.queue_count))

    def save(self) -> None:
        if self.c.path is None:
            self.ask_save_as()
            return
        try:
            self.c.save()
        except OSError as exc:
            self.c.complain(f"could not save: {exc}")

    def ask_open(self) -> None:
        self._file_purpose = "open"
        dpg.configure_item(self.file_dialog, label="Open workflow (.json, or a .png/.webp that carries one)",
                           default_filename="", default_path=str(dialog_folder(self.c)), show=True)

    def ask_save_as(self) -> None:
        self._file_purpose = "save"
        source = self.c.path or self.c.opened_from
        name = "workflow"
        if source is not None:
            name = source.stem if self.c.path is not None else f"{source.stem}-nodeflow"
        dpg.configure_item(self.file_dialog, label="Save workflow as (nodeflow .json)", default_filename=name,
                           default_path=str(dialog_folder(self.c)), show=True)

    def ask_picture(self, node_id: str, name: str) -> None:
        """A node's file picker: any picture, copied into the input folder."""
        self._file_purpose = "picture"
        self._pick_target = (node_id, name)
        dpg.configure_item(self.file_dialog, label="Choose a picture (copied into the input folder)",
                           default_filename="", default_path=str(Path.home()), show=True)

    def _on_file_chosen(self, sender: int, app_data: dict[str, Any]) -> None:
        self.on_file_chosen(chosen_path(app_data))

    def on_file_chosen(self, path: Path | None) -> None:
        if path is None:
            return
        if self._file_purpose == "save":
            if path.suffix.lower() != ".json":
                path = path.with_name(path.name + ".json")
            try:
                self.c.save(path)
            except ValueError:
                pass  # refused, and the status bar says why
            except OSError as exc:
                self.c.complain(f"could not save {path}: {exc}")
        elif self._file_purpose == "picture" and self._pick_target is not None:
            self.use_picture(path, *self._pick_target)
        else:
            self.open_file(str(path))

    def use_picture(self, source: Path, node_id: str, name: str) -> None:
        """Copy ``source`` into the input folder (unless it is there) and choose it."""
        folder = self.input_folder()
        try:
            resolved = source.resolve()
            if resolved.is_relative_to(folder.resolve()):
                relative = resolved.relative_to(folder.resolve()).as_posix()
            else:
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / source.name
                if not target.exists() or target.read_bytes() != source.read_bytes():
                    stem, n = source.stem, 1
                    while target.exists():
                        target, n = folder / f"{stem}-{n}{source.suffix}", n + 1
                    shutil.copyfile(source, target)
                relative = target.name
        except OSError as exc:
            self.c.complain(f"could not use {source}: {exc}")
            return
        self.canvas.add_option(node_id, name, relative)
        if self.c.set_value(node_id, name, relative) is None:
            self.c.say(f"using {relative} from the input folder")

    def open_file(self, path: str) -> None:
        try:
            self.c.open(path)
        except Exception as exc:
            self.c.complain(f"could not open {path}: {exc}")
        self._refresh_recent()

    def _refresh_recent(self) -> None:
        dpg.delete_item(self.recent_menu, children_only=True)
        for path in self.c.recent_files():
            dpg.add_menu_item(label=path, parent=self.recent_menu, user_data=path,
                              callback=lambda s, a, u: self.request(lambda: self.open_file(u)))

    def request(self, action: Callable[[], Any]) -> None:
        """Do ``action`` now, or after the user agrees to discard unsaved changes."""
        if not self.c.dirty:
            action()
            return
        self._pending = action
        name = self.c.path.name if self.c.path else "this workflow"
        dpg.set_value(self.confirm_text, f"{name} has unsaved changes. Discard them?")
        dpg.configure_item(self.confirm, show=True)

    def _confirmed(self) -> None:
        dpg.configure_item(self.confirm, show=False)
        action, self._pending = self._pending, None
        if action is not None:
            action()

    def quit(self) -> None:
        self.c.close()
        if self.input_watch is not None:
            self.input_watch.close()
        dpg.stop_dearpygui()

    def offer_recovery(self) -> None:
        record = self.c.recovery_offer()
        if record is None:
            return
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.get("saved_at", 0)))
        source = record.get("source_path") or "an unsaved workflow"
        dpg.set_value(self.recovery_text, f"nodeflow did not close cleanly last time.\nRestore the unsaved changes to {source} from {when}?")
        dpg.configure_item(self.recovery_window, show=True)

    def answer_recovery(self, restore: bool) -> None:
        dpg.configure_item(self.recovery_window, show=False)
        if restore:
            self.c.restore_recovery()
        else:
            self.c.recovery.discard()

    # ------------------------------------------------------------------ events
    def _on_event(self, event: Any) -> None:
        self.woke()
        if isinstance(event, StatusChanged):
            error = event.kind is StatusKind.ERROR
            dpg.set_value(self.status, event.message)
            dpg.configure_item(self.status, color=(240, 110, 100) if error else (170, 175, 190))
        elif isinstance(event, GraphReplaced):
            self.side.show_run(self.c.runner.view)  # the last file's result goes with it
            self._refresh_recent()
        elif isinstance(event, Saved):
            self._refresh_recent()

    def frame(self) -> None:
        """Per-frame work besides drawing."""
        self._frame_count += 1
        self.palette.track_focus()
        self.search.each_frame()
        mouse = tuple(dpg.get_mouse_pos(local=False))
        if mouse != self._last_mouse or any(dpg.is_mouse_button_down(b) for b in (0, 1, 2)):
            self._last_mouse = mouse
            self.woke()
        if self.c.poll() or self.c.runner.view.status == "running":
            view = self.c.runner.view
            self.side.show_run(view)
            self.canvas.show_states(view.node_states)
            self.canvas.show_run_pictures(view.images)
        self.sweep.each_frame()
        self.canvas.each_frame()
        self.canvas.show_advice()
        if self.groups.dragging and dpg.is_mouse_button_down(dpg.mvMouseButton_Left):
            self.groups.drag(mouse)
        self.groups.each_frame()
        if not dpg.is_mouse_button_down(dpg.mvMouseButton_Left):
            self.canvas.sync_from_view()
        self.canvas.show_selection(self.c.selection)
        self.side.show_selection()
        self.c.tick()
        title = self.c.title
        if title != self._last_title:
            self._last_title = title
            dpg.set_viewport_title(title)

    def busy(self) -> bool:
        """Whether to draw at full rate: input a moment ago, a run, a fit to finish, typing."""
        return (time.monotonic() - self._last_input < ACTIVE_AFTER_INPUT_S or self.c.runner.running
                or bool(self.canvas.fit_pending) or self._typing())

    def pace(self) -> None:
        """Sleep until the next frame is due. Input reaches Dear PyGui only while it draws,
        so an idle editor watches for it itself (idle.py) and draws at once when it comes."""
        if self.busy():
            wait = self._last_frame + 1.0 / ACTIVE_FPS - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        else:
            until = self._last_frame + 1.0 / (WATCHED_IDLE_FPS if self.input_watch else IDLE_FPS)
            while (left := until - time.monotonic()) > 0:
                time.sleep(min(WATCH_SLICE_S, left))
                if self.input_watch is not None and self.input_watch.changed():
                    self.woke()
                    break
                if any(check() for check in self.wake_checks):
                    break  # one frame now; full rate only if the check's work asks for it
        self._last_frame = time.monotonic()


def _run_options(registry: NodeRegistry) -> dict[str, Any]:
    """Where runs look for models and write images: the same configuration as the CLI's."""
    from nodeflow.host.config import ConfigError
    from nodeflow.host.settings import build_run_settings

    try:
        settings = build_run_settings(registry)
    except ConfigError as exc:
        print(f"nodeflow: {exc}; using the bundled models only")
        settings = build_run_settings(registry, environ={})
    return {"settings": settings, "output_dir": Path("output"), "input_dir": Path("input")}


FrameHook = Callable[["EditorApp"], Callable[[], None] | None]


def run_app(path: str | None = None, registry: NodeRegistry | None = None, controller: EditorController | None = None,
            frame_hooks: tuple[FrameHook, ...] = ()) -> int:
    """Open the window and run until it closes. Each of ``frame_hooks`` is called with
    the app once its window exists; what it returns is then called once a frame, before
    drawing (the window tests' remote control and the benchmark's counters use this)."""
    registry = registry or default_registry()
    if controller is None:
        controller = EditorController(registry, run_options=_run_options(registry))
    dpg.create_context()
    try:
        app = EditorApp(controller)
        per_frame = [f for f in (hook(app) for hook in frame_hooks) if f is not None]
        dpg.setup_dearpygui()
        dpg.show_viewport()
        had_recovery = controller.recovery_offer() is not None
        try:
            controller.open_startup(path)
        except Exception as exc:
            controller.new()
            controller.complain(f"could not open {path}: {exc}")
        if had_recovery:
            app.offer_recovery()
        while dpg.is_dearpygui_running():
            app.frame()
            for call in per_frame:
                call()
            dpg.render_dearpygui_frame()
            app.pace()
    finally:
        dpg.destroy_context()
    return 0
