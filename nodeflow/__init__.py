"""nodeflow: typed node graphs with a caching executor. The core knows nothing of diffusion.

This module is the pack author's face: everything a node pack needs is importable from
here, and a pack should import nothing else of nodeflow's (the layers below may move).
"""

from nodeflow.files.atomic import write_atomically, write_numbered
from nodeflow.model.jsontext import JSONTextError
from nodeflow.model.jsontext import loads as parse_json
from nodeflow.host.filestamp import stamp
from nodeflow.host.limits import check_pixels
from nodeflow.host.paths import PathRefused, descriptor_path, is_within, open_inside, read_inside, resolve_inside
from nodeflow.model.context import RunContext, RunSettings
from nodeflow.model.errors import NodeflowError
from nodeflow.model.devices import DeviceBackend, DeviceError, DeviceMemory, HostMemory
from nodeflow.model.memory import MemoryEstimate, MemoryNeed, Upstream, check_memory, memory_budget
from nodeflow.model.fields import Bool, Choice, FieldError, FileChoice, Float, Input, Int, Output, Seed, Socket, String, Widget
from nodeflow.model.context import Interrupted
from nodeflow.model.node import Node, NodeError
from nodeflow.model.pack import Command, Pack
from nodeflow.model.types import ANY, BOOLEAN, FLOAT, INT, STRING, DataType, is_compatible

__version__ = "0.1.0"

__all__ = [
    "ANY", "BOOLEAN", "Bool", "Choice", "Command", "DataType", "FLOAT", "FieldError", "FileChoice", "Float",
    "INT", "Input", "Int", "Interrupted", "Node", "NodeError", "NodeflowError", "Output", "Pack", "PathRefused",
    "RunContext", "RunSettings", "STRING", "Seed", "Socket", "String", "Widget", "check_memory", "check_pixels", "is_compatible",
    "JSONTextError", "DeviceBackend", "DeviceError", "DeviceMemory", "HostMemory", "MemoryEstimate", "MemoryNeed", "Upstream", "memory_budget", "descriptor_path", "is_within", "open_inside", "parse_json", "read_inside", "resolve_inside", "stamp", "write_atomically", "write_numbered",
]
