"""nodeflow: typed node graphs with a caching executor. The core knows nothing of diffusion.

This module is the pack author's face: everything a node pack needs is importable from
here, and a pack should import nothing else of nodeflow's (the layers below may move).
"""

from nodeflow.host.filestamp import stamp
from nodeflow.host.limits import check_pixels
from nodeflow.host.paths import PathRefused, resolve_inside
from nodeflow.model.context import RunContext, RunSettings
from nodeflow.model.errors import NodeflowError
from nodeflow.model.fields import Bool, Choice, FieldError, FileChoice, Float, Input, Int, Output, Seed, Socket, String, Widget
from nodeflow.model.context import Interrupted
from nodeflow.model.node import Node, NodeError
from nodeflow.model.pack import Command, Pack
from nodeflow.model.types import ANY, BOOLEAN, FLOAT, INT, STRING, DataType, is_compatible

__version__ = "0.1.0"

__all__ = [
    "ANY", "BOOLEAN", "Bool", "Choice", "Command", "DataType", "FLOAT", "FieldError", "FileChoice", "Float",
    "INT", "Input", "Int", "Interrupted", "Node", "NodeError", "NodeflowError", "Output", "Pack", "PathRefused",
    "RunContext", "RunSettings", "STRING", "Seed", "Socket", "String", "Widget", "check_pixels", "is_compatible",
    "resolve_inside", "stamp",
]
