"""Everything the editor can do, without a window.

:class:`EditorController` owns the graph model, the undo history, the selection and
clipboard, the open file and its dirty state, autosave/recovery, recent files and
the run in progress. The Dear PyGui view translates clicks and keys into calls here
and redraws from the model, so every user action is scriptable and testable headless.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable

from nodeflow.model.graph import Graph, GraphError
from nodeflow.model.hooks import Insight, node_insight
from nodeflow.model.node import Node
from nodeflow.model.registry import NodeRegistry
from nodeflow.editor.commands import (
    AddNode,
    Clip,
    Command,
    Compound,
    Connect,
    Disconnect,
    History,
    Move,
    Paste,
    RemoveNodes,
    SetMode,
    SetTitle,
    SetValue,
)
from nodeflow.editor.runner import ExecutorFactory, Runner
from nodeflow.editor.userfiles import Recovery, RecentFiles, config_dir

DEFAULT_WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "default.json"
AUTOSAVE_DELAY_S = 3.0  # quiet time after a change before the recovery copy is written
PASTE_OFFSET = (40.0, 40.0)

Listener = Callable[[str, dict[str, Any]], None]


def search_node_types(registry: NodeRegistry, query: str) -> list[type[Node]]:
    """Node types matching every word of ``query`` in name, category or description;
    matches on the name come first."""
    words = query.lower().split()
    scored = []
    for cls in registry.types():
        name = f"{cls.type} {cls.display_name}".lower()
        text = f"{name} {cls.category} {cls.description}".lower()
        if all(w in text for w in words):
            scored.append((0 if all(w in name for w in words) else 1, cls.category, cls.display_name, cls))
    return [entry[-1] for entry in sorted(scored, key=lambda e: e[:3])]


class EditorController:
    def __init__(
        self,
        registry: NodeRegistry,
        config_folder: str | Path | None = None,
        executor_factory: ExecutorFactory | None = None,
        run_options: dict[str, Any] | None = None,
        autosave_delay: float = AUTOSAVE_DELAY_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.registry = registry
        folder = Path(config_folder) if config_folder is not None else config_dir()
        self.recent = RecentFiles(folder)
        self.recovery = Recovery(folder)
        self.runner = Runner(registry, executor_factory, run_options)
        self.history = History()
        self.autosave_delay = autosave_delay
        self._clock = clock
        self._listeners: list[Listener] = []
        self.selection: set[str] = set()
        self.clipboard: Clip | None = None
        self.status = ""
        self.problems: list[Any] = []  # what the validator said about the last loaded file
        self.path: Path | None = None
        self.ui: dict[str, Any] = {}  # the file's editor state besides node positions, kept on save
        self.meta: dict[str, Any] = {}
        self._saved_revision = 0
        self._autosaved_revision = 0
        self._last_change = 0.0
        self._run_unreported = False  # a run ended whose outcome the status bar has not said yet
        self.graph = Graph(registry)
        self._unsubscribe = self.graph.subscribe(self._on_graph_event)

    # ------------------------------------------------------------ notification
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """``listener(event, details)`` gets the graph's edit events plus
        ``graph_replaced`` (new/open) and ``status`` (a message for the status bar)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _emit(self, event: str, **details: Any) -> None:
        for listener in list(self._listeners):
            listener(event, details)

    def _on_graph_event(self, event: str, details: dict[str, Any]) -> None:
        self._last_change = self._clock()
        if event == "node_removed":
            self.selection.discard(details["node"].id)
        self._emit(event, **details)

    def say(self, message: str) -> None:
        self.status = message
        self._emit("status", message=message)

    # ------------------------------------------------------------------ state
    @property
    def dirty(self) -> bool:
        return self.history.revision != self._saved_revision

    @property
    def title(self) -> str:
        name = self.path.name if self.path else "untitled"
        return f"{'*' if self.dirty else ''}{name} - nodeflow"

    # ------------------------------------------------------------------ files
    def _replace_graph(self, graph: Graph, path: Path | None) -> None:
        self._unsubscribe()
        self.graph = graph
        self._unsubscribe = graph.subscribe(self._on_graph_event)
        self.path = path
        self.selection.clear()
        self.history.clear()
        self._saved_revision = self._autosaved_revision = self.history.revision
        self._emit("graph_replaced", graph=graph)

    def new(self) -> None:
        self.problems, self.ui, self.meta = [], {}, {}
        self._replace_graph(Graph(self.registry), None)
        self.say("new workflow")

    def open(self, path: str | Path) -> list[Any]:
        """Load a workflow file; returns the validator's problems (shown, not fatal).
        Raises on a file that cannot be read as a workflow at all."""
        from nodeflow.files.open import load_workflow

        path = Path(path)
        workflow = load_workflow(path, self.registry)
        self.problems = list(workflow.problems)
        self.ui, self.meta = dict(workflow.ui), dict(workflow.meta)
        self._replace_graph(workflow.graph, path)
        self.recent.add(path)
        count = len(self.problems)
        found = f" with {count} problem{'s' * (count != 1)}" if count else ""
        if path.suffix.lower() != ".json":
            # Imported (a PNG's embedded workflow, another tool's file): Save must not
            # overwrite the source, so the workflow has no file until Save As.
            self.path = None
            self.say(f"imported {path.name}{found}; Save As to keep it as a workflow")
        else:
            self.say(f"opened {path.name}{found}")
        return self.problems

    def save(self, path: str | Path | None = None) -> Path:
        """Save to ``path`` (Save As) or the current file; raises ValueError if neither."""
        from nodeflow.files.workflow import save_workflow

        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("this workflow has no file yet: choose where to save it")
        save_workflow(target, self.graph, self.ui, self.meta)
        self.path = target
        self._saved_revision = self._autosaved_revision = self.history.revision
        self.recovery.discard()
        self.recent.add(target)
        self.say(f"saved {target.name}")
        self._emit("saved", path=target)
        return target

    def recent_files(self) -> list[str]:
        return self.recent.list()

    def open_startup(self, path: str | Path | None = None) -> None:
        """What the app opens first: the given file, else the most recent one that
        still exists, else the shipped default workflow, else an empty graph."""
        candidates = [path] if path else [*[p for p in self.recent_files() if Path(p).is_file()][:1], DEFAULT_WORKFLOW]
        for candidate in candidates:
            if candidate and Path(candidate).is_file():
                try:
                    self.open(candidate)
                    if Path(candidate) == DEFAULT_WORKFLOW:
                        self.path = None  # never overwrite the shipped example by Ctrl+S
                    return
                except Exception as exc:
                    self.say(f"could not open {candidate}: {exc}")
                    if path:
                        raise
        self.new()

    # -------------------------------------------------------- autosave/recovery
    def tick(self, now: float | None = None) -> bool:
        """Called every frame or so: writes the recovery copy once changes have
        settled. Returns True when it wrote one."""
        now = self._clock() if now is None else now
        if not self.dirty:
            if self._autosaved_revision != self.history.revision:
                self.recovery.discard()
                self._autosaved_revision = self.history.revision
            return False
        if self._autosaved_revision == self.history.revision or now - self._last_change < self.autosave_delay:
            return False
        from nodeflow.files.workflow import workflow_to_dict

        self.recovery.save(workflow_to_dict(self.graph, self.ui, self.meta), str(self.path) if self.path else None)
        self._autosaved_revision = self.history.revision
        return True

    def recovery_offer(self) -> dict[str, Any] | None:
        """The recovery record left by a session that did not exit cleanly, if any."""
        return self.recovery.load()

    def restore_recovery(self) -> list[Any]:
        from nodeflow.files.open import workflow_from_dict

        record = self.recovery.load()
        if record is None:
            return []
        workflow = workflow_from_dict(record["workflow"], self.registry)
        self.problems = list(workflow.problems)
        self.ui, self.meta = dict(workflow.ui), dict(workflow.meta)
        source = record.get("source_path")
        self._replace_graph(workflow.graph, Path(source) if source else None)
        self._saved_revision = -1  # restored work is unsaved until the user saves it
        self.say("restored unsaved work from the last session")
        return self.problems

    def close(self) -> None:
        """A clean exit: stop any run and remove the recovery copy."""
        self.runner.interrupt()
        self.recovery.discard()

    # ------------------------------------------------------------------ edits
    def execute(self, command: Command) -> bool:
        """Do ``command`` as one undo step; a refused edit sets the status and returns False."""
        try:
            self.history.push(command, self.graph)
        except GraphError as exc:
            self.say(str(exc))
            return False
        self._emit("history")
        return True

    def undo(self) -> bool:
        command = self.history.undo(self.graph)
        self.say(f"undid {command.label}" if command else "nothing to undo")
        self._emit("history")
        return command is not None

    def redo(self) -> bool:
        command = self.history.redo(self.graph)
        self.say(f"redid {command.label}" if command else "nothing to redo")
        self._emit("history")
        return command is not None

    def add_node(self, type_name: str, pos: tuple[float, float] = (0.0, 0.0), values: dict | None = None) -> str | None:
        command = AddNode(type_name, tuple(pos), values)
        if not self.execute(command):
            return None
        self.selection = {command.node_id}  # type: ignore[arg-type]
        return command.node_id

    def connect(self, source: str, output: str, target: str, input_name: str) -> str | None:
        """Make a link (replacing one on an occupied input); returns the reason it was
        refused, or None when it was made."""
        reason = self.graph.check_link(source, output, target, input_name)
        if reason is not None:
            message = f"cannot link {self._label(source)}.{output} to {self._label(target)}.{input_name}: {reason}"
            self.say(message)
            return message
        self.execute(Connect(source, output, target, input_name))
        return None

    def disconnect(self, target: str, input_name: str) -> bool:
        if self.graph.link_into(target, input_name) is None:
            return False
        return self.execute(Disconnect(target, input_name))

    def set_value(self, node_id: str, name: str, value: Any) -> str | None:
        """Set a widget value; returns the refusal message, or None."""
        if self.execute(SetValue(node_id, name, value)):
            return None
        return self.status

    def move(self, positions: dict[str, tuple[float, float]]) -> bool:
        changed = {
            nid: (float(p[0]), float(p[1]))
            for nid, p in positions.items()
            if nid in self.graph.nodes and tuple(self.graph.nodes[nid].pos) != (float(p[0]), float(p[1]))
        }
        return bool(changed) and self.execute(Move(changed))

    def rename(self, node_id: str, title: str) -> bool:
        if self.graph.nodes[node_id].title == title:
            return False
        return self.execute(SetTitle(node_id, title))

    def select(self, node_ids: Iterable[str]) -> None:
        self.selection = {nid for nid in node_ids if nid in self.graph.nodes}

    def select_all(self) -> None:
        self.selection = set(self.graph.nodes)
        self._emit("selection")

    def _selected(self, node_ids: Iterable[str] | None) -> list[str]:
        chosen = self.selection if node_ids is None else set(node_ids)
        return [nid for nid in self.graph.nodes if nid in chosen]

    def delete(self, node_ids: Iterable[str] | None = None) -> bool:
        ids = self._selected(node_ids)
        return bool(ids) and self.execute(RemoveNodes(ids, label=f"delete {len(ids)} node{'s' * (len(ids) != 1)}"))

    def toggle_bypass(self, node_ids: Iterable[str] | None = None) -> bool:
        """Bypass the chosen nodes, or bring them back if all are bypassed already."""
        ids = self._selected(node_ids)
        if not ids:
            return False
        mode = "normal" if all(self.graph.nodes[n].mode == "bypass" for n in ids) else "bypass"
        return self.execute(SetMode(ids, mode, label="bypass" if mode == "bypass" else "un-bypass"))

    def copy(self, node_ids: Iterable[str] | None = None) -> int:
        ids = self._selected(node_ids)
        if ids:
            self.clipboard = Clip.of(self.graph, ids)
            self.say(f"copied {len(ids)} node{'s' * (len(ids) != 1)}")
        return len(ids)

    def paste(self, offset: tuple[float, float] = PASTE_OFFSET) -> list[str]:
        if self.clipboard is None or not self.clipboard.nodes:
            return []
        command = Paste(self.clipboard, offset)
        if not self.execute(command):
            return []
        self.selection = set(command.new_ids.values())
        self._emit("selection")
        return list(command.new_ids.values())

    def duplicate(self, node_ids: Iterable[str] | None = None) -> list[str]:
        ids = self._selected(node_ids)
        if not ids:
            return []
        command = Paste(Clip.of(self.graph, ids), PASTE_OFFSET, label="duplicate")
        if not self.execute(command):
            return []
        self.selection = set(command.new_ids.values())
        self._emit("selection")
        return list(command.new_ids.values())

    def edit_many(self, commands: list[Command], label: str) -> bool:
        return self.execute(Compound(commands, label=label))

    def _label(self, node_id: str) -> str:
        node = self.graph.nodes.get(node_id)
        if node is None:
            return node_id
        return f"{node.title or node.type} #{node_id}"

    # -------------------------------------------------------------------- run
    def run(self, outputs: list[str] | None = None) -> str | None:
        """Start running the graph in the background; returns why not, or None."""
        if self.runner.running:
            return self._refuse("a run is already in progress")
        if not self.graph.output_nodes() and not outputs:
            return self._refuse("nothing to run: add an output node (e.g. Save Image or Preview Image)")
        from nodeflow.files.workflow import workflow_to_dict

        # Saved images carry the workflow that made them, as with the CLI.
        self.runner.start(self.graph, outputs, settings={"workflow": workflow_to_dict(self.graph, self.ui, self.meta)})
        self._run_unreported = True
        self.say("running...")
        self._emit("run_started")
        return None

    def _refuse(self, message: str) -> str:
        self.say(message)
        return message

    def interrupt(self) -> None:
        if self.runner.running:
            self.runner.interrupt()
            self.say("interrupting at the next step...")

    def poll(self) -> bool:
        """Apply the worker's events (call from the render loop); True if any arrived."""
        changed = self.runner.poll()
        view = self.runner.view
        if self._run_unreported and view.status != "running":
            self._run_unreported = False
            seconds = f"{view.elapsed:.1f} s"
            if view.status == "ok":
                self.say(f"finished in {seconds}")
            elif view.status == "interrupted":
                self.say(f"interrupted after {seconds}")
            else:
                where = f" in {self._label(view.error_node)}" if view.error_node else ""
                self.say(f"failed{where}: {view.error}")
            self._emit("run_finished", status=view.status)
        return changed

    # ---------------------------------------------------------------- insight
    def insight(self, node_id: str) -> Insight | None:
        node = self.graph.nodes.get(node_id)
        cls = self.registry.get(node.type) if node else None
        return node_insight(cls, node.values) if cls is not None and node is not None else None
