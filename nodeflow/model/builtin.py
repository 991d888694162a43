"""Node types every registry has, whatever packs are installed.

``Reroute`` is a point on a link that the user places to tidy the canvas. It belongs to
the graph, not to a pack, so a workflow with reroutes opens anywhere; the planner looks
through it (:attr:`Node.passes_through`), so it never runs, costs nothing and has no
cache entry, and a link from it carries the type of whatever feeds it.

``Note`` is text on the canvas (what to look at, how a workflow works). It has no
sockets and no outputs, so the planner never reaches it: it never runs.
"""

from __future__ import annotations

from typing import Any

from nodeflow.model.fields import Output, Socket, String
from nodeflow.model.node import Node
from nodeflow.model.types import ANY


class Reroute(Node):
    type = "Reroute"
    category = "layout"
    description = "A point on a link: passes its input on unchanged, with its type."
    passes_through = True
    value = Socket(ANY, tooltip="the value to pass on")
    outputs = (Output("value", ANY),)

    def run(self, ctx: Any, value: Any) -> Any:  # never called: the planner looks through it
        return value


class Note(Node):
    type = "Note"
    category = "layout"
    description = "Text on the canvas, e.g. what a workflow shows and where to look; it never runs."
    text = String("", multiline=True, lines=18, width=1.9, tooltip="the note")

    def run(self, ctx: Any, text: str) -> None:  # never called: nothing links to a note
        return None


BUILTIN_NODES = (Reroute, Note)
