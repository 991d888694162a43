"""The editor window: menus, shortcuts, dialogs and the render loop.

Each frame drains the run's event queue, recolours nodes, refreshes the previews and
reads back what only the node editor knows (selection, dragged positions). All
editing goes through :class:`~nodeflow.editor.controller.EditorController`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import dearpygui.dearpygui as dpg

from nodeflow.model.fields import FileChoice
from nodeflow.model.registry import NodeRegistry, default_registry
from nodeflow.editor.canvas import Canvas, list_files
from nodeflow.editor.controller import EditorController
from nodeflow.editor.palette import ContextMenu, Palette
from nodeflow.editor.panels import PREVIEW_SIZE, SidePanel
from nodeflow.editor.testhook import TestHook
from nodeflow.editor.theme import global_theme

WINDOW_SIZE = (1600, 1000)
SIDE_WIDTH = PREVIEW_SIZE + 24
NEW_NODE_STEP = (30.0, 30.0)


def file_folders(run_options: dict[str, Any], field: FileChoice) -> list[Path]:
    """Where files for a FileChoice of kind ``field.folder`` are looked for when its node
    type offers no list itself: the configured model folders, or the input folder."""
    if field.folder == "input":
        return [Path(run_options.get("input_dir", "input"))]
    settings = run_options.get("settings")
    return list(settings.folders(field.folder)) if settings is not None else []


class EditorApp:
    def __init__(self, controller: EditorController):
        self.c = controller
        self._text_inputs_cache: list[int] | None = None
        self._context_pos = (40.0, 40.0)
        self._last_title = ""
        self.frames = 0
        self.open_seconds: float | None = None
        self.logic_seconds: list[float] = []  # time of recent frame() calls, for the benchmark
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
                with dpg.menu(label="Run"):
                    dpg.add_menu_item(label="Run", shortcut="Ctrl+Enter", callback=self.run)
                    dpg.add_menu_item(label="Interrupt", shortcut="Esc", callback=self.c.interrupt)
                dpg.add_button(label="Run (Ctrl+Enter)", callback=self.run)
                dpg.add_button(label="Stop (Esc)", callback=self.c.interrupt)
            with dpg.group(horizontal=True):
                with dpg.child_window(width=236, height=-28, border=False) as left:
                    self.palette = Palette(self.c, left, self.place_new_node)
                with dpg.child_window(width=-SIDE_WIDTH, height=-28, border=False, no_scrollbar=True) as self.center:
                    self.canvas = Canvas(
                        self.c, self.center, lambda f: list_files(file_folders(self.c.runner.run_options, f), tuple(f.extensions))
                    )
                with dpg.child_window(width=-1, height=-28, border=False) as right:
                    self.side = SidePanel(self.c, right, self.textures)
            self.status = dpg.add_text("", color=(170, 175, 190))
        dpg.set_primary_window(self.window, True)
        self.context_menu = ContextMenu(self.c, self._place_at_context)
        self._refresh_recent()

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
        ]

    def _build_dialogs(self) -> None:
        with dpg.file_dialog(show=False, modal=True, width=760, height=460, callback=self._on_file_chosen) as self.file_dialog:
            dpg.add_file_extension(".json", color=(150, 220, 150))
            dpg.add_file_extension(".png", color=(150, 180, 240))  # images that carry their workflow
            dpg.add_file_extension(".webp", color=(150, 180, 240))
            dpg.add_file_extension(".*")
        self._file_purpose = "open"
        with dpg.window(modal=True, show=False, no_title_bar=True, autosize=True) as self.confirm:
            self.confirm_text = dpg.add_text("")
            with dpg.group(horizontal=True):
                dpg.add_button(label="Discard changes", callback=self._confirmed)
                dpg.add_button(label="Cancel", callback=lambda: dpg.configure_item(self.confirm, show=False))
        self._pending: Callable[[], Any] | None = None
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
        plain: dict[int, Callable[[], Any]] = {dpg.mvKey_Delete: self.c.delete, dpg.mvKey_Escape: self.c.interrupt}

        # Handler callbacks run after the frame that saw the key, when Ctrl may already be
        # up again; the modifiers are tracked from the same ordered stream of callbacks.
        held: set[int] = set()
        ctrl_keys = {dpg.mvKey_LControl, dpg.mvKey_RControl, dpg.mvKey_ModCtrl}
        shift_keys = {dpg.mvKey_LShift, dpg.mvKey_RShift, dpg.mvKey_ModShift}

        def on_release(sender: int, key: int) -> None:
            held.discard(key)

        def on_key(sender: int, key: int) -> None:
            if key in ctrl_keys | shift_keys:
                held.add(key)
                return
            if any(dpg.is_item_shown(w) for w in (self.file_dialog, self.confirm, self.recovery_window)):
                return  # a dialog has the keyboard
            ctrl_down = bool(held & ctrl_keys)
            if key == dpg.mvKey_Return and not ctrl_down:
                self.palette.on_enter()
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
            if dpg.is_item_hovered(self.canvas.editor):
                mx, my = dpg.get_mouse_pos(local=False)
                self._context_pos = self.canvas.screen_to_grid(mx, my)
                self.context_menu.open_at([mx, my])

        with dpg.handler_registry():
            dpg.add_key_press_handler(callback=on_key)
            dpg.add_key_release_handler(callback=on_release)
            dpg.add_mouse_click_handler(button=dpg.mvMouseButton_Right, callback=on_right_click)

    def _typing(self) -> bool:
        """Whether a text box has the keyboard (then Del, Ctrl+C... edit the text)."""
        boxes = [self.palette.filter, self.side.title_input] + [
            w for w in self.canvas.widgets.values() if dpg.get_item_type(w).endswith("mvInputText")
        ]
        return any(dpg.is_item_active(w) for w in boxes)

    # ----------------------------------------------------------------- actions
    def place_new_node(self, type_name: str) -> None:
        """Palette: in the middle of the visible canvas, a step aside from the last
        node placed there so a series of additions does not stack up."""
        x, y = dpg.get_item_pos(self.center)  # the main window fills the viewport: this is on screen
        w, h = dpg.get_item_rect_size(self.center)
        gx, gy = self.canvas.screen_to_grid(x + w / 2 - 110, y + h / 3)
        taken = {tuple(n.pos) for n in self.c.graph.nodes.values()}
        while (gx, gy) in taken:
            gx, gy = gx + NEW_NODE_STEP[0], gy + NEW_NODE_STEP[1]
        self.c.add_node(type_name, (gx, gy))

    def _place_at_context(self, type_name: str) -> None:
        self.c.add_node(type_name, self._context_pos)

    def run(self) -> None:
        self.c.run()

    def save(self) -> None:
        if self.c.path is None:
            self.ask_save_as()
            return
        try:
            self.c.save()
        except OSError as exc:
            self.c.say(f"could not save: {exc}")

    def ask_open(self) -> None:
        self._file_purpose = "open"
        dpg.configure_item(self.file_dialog, label="Open workflow", default_filename="", show=True)

    def ask_save_as(self) -> None:
        self._file_purpose = "save"
        name = self.c.path.stem if self.c.path else "workflow"
        dpg.configure_item(self.file_dialog, label="Save workflow as", default_filename=name, show=True)

    def _on_file_chosen(self, sender: int, app_data: dict[str, Any]) -> None:
        path = app_data.get("file_path_name") or ""
        if not path:
            return
        if self._file_purpose == "save":
            if not path.endswith(".json"):
                path += ".json"
            try:
                self.c.save(path)
            except OSError as exc:
                self.c.say(f"could not save {path}: {exc}")
        else:
            self.open_file(path)

    def open_file(self, path: str) -> None:
        try:
            self.c.open(path)
        except Exception as exc:
            self.c.say(f"could not open {path}: {exc}")
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
    def _on_event(self, event: str, details: dict[str, Any]) -> None:
        if event == "status":
            message = details["message"]
            refused = message.startswith(("cannot", "could not", "failed", "nothing to run"))
            dpg.set_value(self.status, message)
            dpg.configure_item(self.status, color=(240, 110, 100) if refused else (170, 175, 190))
        elif event in ("saved", "graph_replaced"):
            self._refresh_recent()

    def frame(self) -> None:
        """Per-frame work besides drawing."""
        began = time.perf_counter()
        self._frame()
        self.logic_seconds.append(time.perf_counter() - began)
        del self.logic_seconds[:-120]

    def _frame(self) -> None:
        self.frames += 1
        self.palette.track_focus()
        if self.c.poll() or self.c.runner.view.status == "running":
            view = self.c.runner.view
            self.side.show_run(view)
            self.canvas.show_states(view.node_states)
        if not dpg.is_mouse_button_down(dpg.mvMouseButton_Left) and self.frames % 3 == 0:
            self.canvas.sync_from_view()
        self.canvas.show_selection(self.c.selection)
        self.side.show_selection()
        self.c.tick()
        title = self.c.title
        if title != self._last_title:
            self._last_title = title
            dpg.set_viewport_title(title)


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


def run_app(path: str | None = None, registry: NodeRegistry | None = None, controller: EditorController | None = None) -> int:
    registry = registry or default_registry()
    if controller is None:
        controller = EditorController(registry, run_options=_run_options(registry))
    dpg.create_context()
    try:
        app = EditorApp(controller)
        hook = TestHook.from_env(app)
        dpg.setup_dearpygui()
        dpg.show_viewport()
        had_recovery = controller.recovery_offer() is not None
        started = time.perf_counter()
        try:
            controller.open_startup(path)
        except Exception as exc:
            controller.new()
            controller.say(f"could not open {path}: {exc}")
        if had_recovery:
            app.offer_recovery()
        while dpg.is_dearpygui_running():
            app.frame()
            if hook is not None:
                hook.poll()
            dpg.render_dearpygui_frame()
            if app.open_seconds is None:
                app.open_seconds = time.perf_counter() - started  # read, built and drawn once
    finally:
        dpg.destroy_context()
    return 0
