"""nodeflow: typed node graphs with a caching executor. The core knows nothing of diffusion."""

from .fields import Bool, Choice, FieldError, FileChoice, Float, Input, Int, Output, Seed, Socket, String, Widget
from .node import Interrupted, Node, NodeError, RunContext
from .types import ANY, DataType, is_compatible, register_data_type

__version__ = "0.1.0"

__all__ = [
    "ANY", "Bool", "Choice", "DataType", "FieldError", "FileChoice", "Float", "Input", "Int", "Interrupted",
    "Node", "NodeError", "Output", "RunContext", "Seed", "Socket", "String", "Widget", "is_compatible",
    "register_data_type",
]
