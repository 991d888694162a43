"""Everything the editor can do, without a window.

:class:`EditorController` owns the graph model, the undo history, the selection and
clipboard, the open file and its dirty state, autosave/recovery, recent files and
the run in progress. The Dear PyGui view translates clicks and keys into calls here
and redraws from the model, so every user action is scriptable and testable headless.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from nodeflow.model.fields import Seed
from nodeflow.model.graph import Graph, GraphError, GraphEvent, NodeRemoved
from nodeflow.model.hooks import Insight, node_insight
from nodeflow.model.node import Node
from nodeflow.model.registry import NodeRegistry
from nodeflow.model.types import is_compatible
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
from nodeflow.editor.events import (
    EditorEvent,
    GraphReplaced,
    HistoryChanged,
    Listener,
    RunBegan,
    RunEnded,
    Saved,
    SelectionChanged,
    StatusChanged,
    StatusKind,
)
from nodeflow.editor.runner import ExecutorFactory, Runner
from nodeflow.editor.layout import any_overlap, bounds, estimate_size, free_spot, layered_layout
from nodeflow.editor.shipped import default_workflow, is_native_workflow_file, may_overwrite
from nodeflow.editor.userfiles import Recovery, RecentFiles, config_dir

AUTOSAVE_DELAY_S = 3.0  # quiet time after a change before the recovery copy is written
PASTE_OFFSET = (40.0, 40.0)


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
        self.status_kind = StatusKind.INFO
        self.drawn_sizes: dict[str, tuple[float, float]] = {}  # node id -> size on the canvas, told by the view
        self.written: list[Path] = []  # every file this session's runs wrote, oldest first
        self.problems: list[Any] = []  # what the validator said about the last loaded file
        self.path: Path | None = None  # where Save writes; None until the user chooses
        self.opened_from: Path | None = None  # the file the graph came from (may differ from path)
        self.ui: dict[str, Any] = {}  # the file's editor state besides node positions, kept on save
        self.meta: dict[str, Any] = {}
        self._saved_revision = 0
        self._autosaved_revision = 0
        self._last_change = 0.0
        self._run_unreported = False  # a run ended whose outcome the status bar has not said yet
        self.queued = 0  # runs still to start after this one (Run with a count)
        self._queue_total = 0
        self._rng = random.Random()
        self.graph = Graph(registry)
        self._unsubscribe = self.graph.subscribe(self._on_graph_event)

    # ------------------------------------------------------------ notification
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """``listener(event)`` gets the graph's edit events plus the editor's own
        (:mod:`nodeflow.editor.events`: status, graph replaced, saved, ...)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _emit(self, event: EditorEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    def _on_graph_event(self, event: GraphEvent) -> None:
        self._last_change = self._clock()
        if isinstance(event, NodeRemoved):
            self.selection.discard(event.node.id)
        self._emit(event)

    def say(self, message: str, kind: StatusKind = StatusKind.INFO) -> None:
        self.status, self.status_kind = message, kind
        self._emit(StatusChanged(message, kind))

    def complain(self, message: str) -> str:
        """Show a refusal or failure (in red); returns the message."""
        self.say(message, StatusKind.ERROR)
        return message

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
        self.path = self.opened_from = path
        self.selection.clear()
        self.history.clear()
        self._saved_revision = self._autosaved_revision = self.history.revision
        if not self.runner.running:
            self.runner.forget_last_run()  # the last file's result is not this one's
        self._emit(GraphReplaced(graph))

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
        native = may_overwrite(path)
        if not native:
            self._lay_out_if_crowded(workflow.graph, workflow.ui)
        self.problems = list(workflow.problems)
        self.ui, self.meta = dict(workflow.ui), dict(workflow.meta)
        self._replace_graph(workflow.graph, path)
        self.recent.add(path)
        count = len(self.problems)
        found = f" with {count} problem{'s' * (count != 1)}" if count else ""
        if not native:
            # Imported (a PNG's embedded workflow, another tool's file) or a shipped
            # example: Save must not overwrite the source with nodeflow's format, so the
            # workflow has no file until the user chooses one.
            self.path = None
            self.opened_from = path
            if is_native_workflow_file(path):
                self.say(f"opened the example {path.name}{found}; Save asks where to keep your copy")
            else:
                self.say(f"imported {path.name}{found}; Save asks where to keep it as a nodeflow workflow")
        else:
            self.say(f"opened {path.name}{found}")
        return self.problems

    def node_size(self, node_id: str) -> tuple[float, float]:
        """A node's size in canvas units as drawn (the view reports it), else as estimated."""
        node = self.graph.nodes[node_id]
        drawn = self.drawn_sizes.get(node_id)
        return drawn or estimate_size(self.registry.get(node.type))

    def node_rects(self, exclude: Iterable[str] = ()) -> list[tuple[float, float, float, float]]:
        skip = set(exclude)
        return [(*n.pos, *self.node_size(nid)) for nid, n in self.graph.nodes.items() if nid not in skip]

    def _lay_out_if_crowded(self, graph: Graph, ui: dict[str, Any]) -> None:
        """Another tool's nodes measure differently from ours (and one foreign node may
        become several): when they would overlap here, lay the graph out in layers, and
        fit each group's frame around the nodes it held."""
        from nodeflow.editor.groups import TITLE_HEIGHT, group_rect, members

        sizes = {nid: estimate_size(self.registry.get(n.type)) for nid, n in graph.nodes.items()}
        if not any_overlap((*graph.nodes[nid].pos, *size) for nid, size in sizes.items()):
            return
        groups = [g for g in ui.get("groups") or [] if isinstance(g, dict) and group_rect(g)]
        held = [members(g, {nid: n.pos for nid, n in graph.nodes.items()}) for g in groups]
        edges = [(l.source, l.target) for l in graph.iter_links()]
        for node_id, pos in layered_layout(edges, sizes).items():
            graph.nodes[node_id].pos = pos
        for group, inside in zip(groups, held):
            if inside:
                box = bounds((*graph.nodes[n].pos, *sizes[n]) for n in inside)
                margin = 12.0
                group["pos"] = [box[0] - margin, box[1] - margin - TITLE_HEIGHT]
                group["size"] = [box[2] + 2 * margin, box[3] + 2 * margin + TITLE_HEIGHT]

    def free_position(self, type_name: str, near: tuple[float, float]) -> tuple[float, float]:
        """Where a new node of ``type_name`` goes: ``near``, or the closest spot from
        there where it overlaps no node."""
        return free_spot(estimate_size(self.registry.get(type_name)), near, self.node_rects())

    def position_for_new_node(self, type_name: str, visible_centre: tuple[float, float]) -> tuple[float, float]:
        """Beside the selected node (to its right, as the next step of a chain), else
        the middle of what is visible; never on top of another node."""
        selected = [nid for nid in self.graph.nodes if nid in self.selection]
        if len(selected) == 1:
            x, y = self.graph.nodes[selected[0]].pos
            width, _ = self.node_size(selected[0])
            return self.free_position(type_name, (x + width + 60.0, y))
        w, h = estimate_size(self.registry.get(type_name))
        return self.free_position(type_name, (visible_centre[0] - w / 2, visible_centre[1] - h / 2))

    def save(self, path: str | Path | None = None) -> Path:
        """Save to ``path`` (Save As) or the current file. Raises ValueError (and says
        why) when there is neither, or when ``path`` is a file Save must not replace: one
        in another format (a ComfyUI workflow, a PNG) or a shipped example."""
        from nodeflow.files.workflow import save_workflow

        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("this workflow has no file yet: choose where to save it")
        if target.exists() and not may_overwrite(target):
            raise ValueError(self.complain(
                f"not saved: {target.name} is not a nodeflow workflow (or is a shipped example); choose another name"))
        save_workflow(target, self.graph, self.ui, self.meta)
        self.path = target
        self._saved_revision = self._autosaved_revision = self.history.revision
        self.recovery.discard()
        self.recent.add(target)
        self.say(f"saved {target.name}")
        self._emit(Saved(target))
        return target

    def recent_files(self) -> list[str]:
        return self.recent.list()

    def open_startup(self, path: str | Path | None = None) -> None:
        """What the app opens first: the given file, else the most recent one that
        still exists, else the shipped default workflow, else an empty graph."""
        candidates = [path] if path else [*[p for p in self.recent_files() if Path(p).is_file()][:1], default_workflow()]
        for candidate in candidates:
            if candidate and Path(candidate).is_file():
                try:
                    self.open(candidate)  # a shipped example opens without a save target
                    return
                except Exception as exc:
                    self.complain(f"could not open {candidate}: {exc}")
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
            self.complain(str(exc))
            return False
        if self.status_kind is StatusKind.ERROR:
            self.say("")  # the user moved on: an old refusal no longer stands in red
        self._emit(HistoryChanged())
        return True

    def undo(self) -> bool:
        command = self.history.undo(self.graph)
        self.say(f"undid {command.label}" if command else "nothing to undo")
        self._emit(HistoryChanged())
        return command is not None

    def redo(self) -> bool:
        command = self.history.redo(self.graph)
        self.say(f"redid {command.label}" if command else "nothing to redo")
        self._emit(HistoryChanged())
        return command is not None

    def add_node(self, type_name: str, pos: tuple[float, float] = (0.0, 0.0), values: dict | None = None) -> str | None:
        command = AddNode(type_name, tuple(pos), values)
        if not self.execute(command):
            return None
        self.selection = {command.node_id}  # type: ignore[arg-type]
        return command.node_id

    # ------------------------------------------------------------------ advice
    def upstream_facts(self, node_id: str) -> dict[str, Any]:
        """The :meth:`Node.output_facts` of every node ``node_id`` depends on, merged
        (the nearest wins)."""
        from nodeflow.model.context import RunSettings

        settings = self.runner.run_options.get("settings") or RunSettings()
        distance = {node_id: 0}
        frontier = [node_id]
        while frontier:  # breadth first up the links: how many links away each ancestor is
            nearer = frontier
            frontier = []
            for current in nearer:
                for link in self.graph.links_into(current):
                    if link.source not in distance:
                        distance[link.source] = distance[current] + 1
                        frontier.append(link.source)
        facts: dict[str, Any] = {}
        for ancestor in sorted((a for a in distance if a != node_id), key=lambda a: -distance[a]):
            node = self.graph.nodes[ancestor]
            cls = self.registry.get(node.type)
            if cls is not None and node.mode != "bypass":
                try:
                    facts.update(cls.output_facts(dict(node.values), settings) or {})
                except Exception:  # a broken hook gives no facts, never breaks the editor
                    pass
        return facts

    def advice(self, node_id: str) -> tuple[dict[str, Any], dict[str, str]]:
        """What the node's :meth:`Node.advise` hook says: (better defaults, warnings)."""
        node = self.graph.nodes.get(node_id)
        cls = self.registry.get(node.type) if node else None
        if cls is None or cls.advise.__func__ is Node.advise.__func__:  # type: ignore[attr-defined]
            return {}, {}
        try:
            defaults, warnings = cls.advise(dict(node.values), self.upstream_facts(node_id))
        except Exception:
            return {}, {}
        return dict(defaults or {}), dict(warnings or {})

    def advised_nodes(self) -> list[str]:
        return [nid for nid, n in self.graph.nodes.items()
                if (cls := self.registry.get(n.type)) is not None and cls.advise.__func__ is not Node.advise.__func__]  # type: ignore[attr-defined]

    def _take_advice(self, node_id: str) -> None:
        """A node just linked takes the values its inputs suggest, where it still has its
        defaults (an EmptyLatent fed by the bundled model becomes 32x32): one undo step."""
        cls = self.registry.get(self.graph.nodes[node_id].type)
        defaults, _ = self.advice(node_id)
        values = self.graph.nodes[node_id].values
        edits = [SetValue(node_id, name, value) for name, value in defaults.items()
                 if name in cls.inputs and values.get(name) == cls.inputs[name].default and value != values.get(name)
                 and self.graph.link_into(node_id, name) is None]
        if edits and self.edit_many(edits, "values suited to its input"):
            shown = ", ".join(f"{e.name} {e.value}" for e in edits)
            self.say(f"{self.label(node_id)} takes {shown} from what feeds it (Ctrl+Z to undo)")

    def output_type(self, node_id: str, output: str) -> str | None:
        node = self.graph.nodes.get(node_id)
        cls = self.registry.get(node.type) if node else None
        out = cls.output(output) if cls else None
        return out.data_type if out else None

    def input_accepting(self, cls: type[Node], data_type: str) -> str | None:
        """The input of ``cls`` a link of ``data_type`` would go into: a socket first,
        else a widget of that type (widgets take links too)."""
        fitting = [f for f in cls.inputs.values() if is_compatible(data_type, f.data_type)]
        fitting.sort(key=lambda f: f.is_widget)
        return fitting[0].name if fitting else None

    def types_accepting(self, data_type: str) -> list[type[Node]]:
        """Node types with a socket that takes ``data_type`` (the search after an output
        is clicked). Widgets take links too, but then nearly every type would qualify."""
        return [cls for cls in self.registry.types()
                if any(not f.is_widget and is_compatible(data_type, f.data_type) for f in cls.inputs.values())]

    def add_node_linked(self, type_name: str, pos: tuple[float, float], source: str, output: str) -> str | None:
        """Add a node fed by ``source.output`` (into its first input that takes the
        type), as one undo step."""
        cls = self.registry.get(type_name)
        data_type = self.output_type(source, output)
        target = self.input_accepting(cls, data_type) if cls is not None and data_type else None
        if target is None:
            return self.add_node(type_name, pos)
        node_id = self.graph.new_id()
        command = Compound([AddNode(type_name, tuple(pos), node_id=node_id), Connect(source, output, node_id, target)],
                           label=f"add {type_name} fed by {self.label(source)}")
        if not self.execute(command):
            return None
        self.selection = {node_id}
        self._take_advice(node_id)
        return node_id

    def connect(self, source: str, output: str, target: str, input_name: str) -> str | None:
        """Make a link (replacing one on an occupied input); returns the reason it was
        refused, or None when it was made."""
        reason = self.graph.check_link(source, output, target, input_name)
        if reason is not None:
            return self.complain(f"cannot link {self.label(source)}.{output} to {self.label(target)}.{input_name}: {reason}")
        if self.execute(Connect(source, output, target, input_name)):
            self._take_advice(target)
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
        self._emit(SelectionChanged())

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
        self._emit(SelectionChanged())
        return list(command.new_ids.values())

    def duplicate(self, node_ids: Iterable[str] | None = None) -> list[str]:
        ids = self._selected(node_ids)
        if not ids:
            return []
        command = Paste(Clip.of(self.graph, ids), PASTE_OFFSET, label="duplicate")
        if not self.execute(command):
            return []
        self.selection = set(command.new_ids.values())
        self._emit(SelectionChanged())
        return list(command.new_ids.values())

    def edit_many(self, commands: list[Command], label: str) -> bool:
        return self.execute(Compound(commands, label=label))

    def label(self, node_id: str) -> str:
        node = self.graph.nodes.get(node_id)
        if node is None:
            return node_id
        return f"{node.title or node.type} #{node_id}"

    # -------------------------------------------------------------------- run
    def run_queue(self, count: int, rng: "random.Random | None" = None) -> str | None:
        """Run ``count`` times one after the other, each later run with new seeds (every
        Seed field not fed by a link gets a random value, an undoable edit as the dice
        button makes). Returns why not, or None. Interrupt also drops the runs queued."""
        count = max(1, int(count))
        refused = self.run()
        if refused is None:
            self.queued, self._queue_total, self._rng = count - 1, count, rng or random.Random()
        return refused

    def _new_seeds(self) -> None:
        edits = []
        for node_id, node in self.graph.nodes.items():
            cls = self.registry.get(node.type)
            for name, field_decl in (cls.inputs.items() if cls else ()):
                if isinstance(field_decl, Seed) and self.graph.link_into(node_id, name) is None:
                    edits.append(SetValue(node_id, name, self._rng.randint(0, 2**64 - 1)))
        if edits:
            self.edit_many(edits, "new seeds")

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
        self._emit(RunBegan())
        return None

    def _refuse(self, message: str) -> str:
        return self.complain(message)

    def interrupt(self) -> None:
        self.queued = 0
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
            self.written.extend(p for p in view.written if p not in self.written)
            if view.status == "ok":
                self.say(f"finished in {seconds}" + _wrote(view.written))
            elif view.status == "interrupted":
                self.say(f"interrupted after {seconds}" + _wrote(view.written))
            else:
                where = f" in {self.label(view.error_node)}" if view.error_node else ""
                self.complain(f"failed{where}: {view.error}")
            self._emit(RunEnded(view.status))
            if self.queued and view.status == "ok":
                self.queued -= 1
                self._new_seeds()
                done = self._queue_total - self.queued - 1
                if self.run() is None:
                    self.say(f"running {done + 1} of {self._queue_total} (new seeds)...")
            else:
                self.queued = 0
        return changed

    # ---------------------------------------------------------------- insight
    def insight(self, node_id: str) -> Insight | None:
        node = self.graph.nodes.get(node_id)
        cls = self.registry.get(node.type) if node else None
        return node_insight(cls, node.values) if cls is not None and node is not None else None


def _wrote(paths: list[Path]) -> str:
    """Where a run's files went, for the status bar: the first one by name, plus a count."""
    if not paths:
        return ""
    more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
    return f"; wrote {paths[0]}{more}"
