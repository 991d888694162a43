"""The core's shape holds: it imports no pack and no torch, its layers import only
downward, and a node whose declaration disagrees with its ``run`` is refused when its
class is defined, with a message that names the fix."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from nodeflow import FLOAT, DataType, Float, Node, Output, Pack, Socket
from nodeflow.model.registry import NodeRegistry, RegistryError
from tests.support import ROOT

# Which core folders each layer may import (faces - cli, api, docs, editor - may import all).
ALLOWED = {
    "model": {"model"},
    "engine": {"model", "engine"},
    "files": {"model", "files"},
    "host": {"model", "host"},
}


def _imports(path):
    """(module, at module level?) for each import in ``path``, outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    inside = {id(n) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(node) if n is not node}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from ((alias.name, id(node) not in inside) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, id(node) not in inside


def test_core_layers_import_only_downward_and_never_a_pack():
    wrong = []
    for path in sorted((ROOT / "nodeflow").rglob("*.py")):
        layer = path.relative_to(ROOT / "nodeflow").parts[0]
        for module, at_top in _imports(path):
            top = module.split(".")[0]
            if top == "nodes" or top in ("torch", "diffusers", "transformers"):  # not even inside a function
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
            if layer in ALLOWED and module.startswith("nodeflow."):
                target = module.split(".")[1]
                if target not in ALLOWED[layer] or module in ("nodeflow.cli", "nodeflow.api"):
                    wrong.append(f"{path.relative_to(ROOT)} ({layer}) imports {module}")
    assert wrong == []


def test_importing_the_core_and_listing_nodes_loads_no_torch():
    code = (
        "import sys\n"
        "import nodeflow, nodeflow.api, nodeflow.cli, nodeflow.engine.executor, nodeflow.files.workflow\n"
        "from nodeflow.model.registry import default_registry\n"
        "from nodeflow.host.settings import build_run_settings\n"
        "registry = default_registry(); build_run_settings(registry)\n"
        "assert len(registry.types()) > 10, registry.load_errors\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers'))\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_run_that_lacks_a_declared_input_is_refused_when_the_class_is_defined():
    with pytest.raises(TypeError, match=r"Scale.run lacks parameter 'factor' declared as an input"):
        class Scale(Node):  # noqa: F841
            type = "Scale"
            value = Socket(FLOAT)
            factor = Float(2.0)
            outputs = (Output("value", FLOAT),)

            def run(self, ctx, value):
                return value


def test_a_run_parameter_that_is_not_declared_is_refused():
    with pytest.raises(TypeError, match=r"Shift.run takes 'offset', which is not a declared input"):
        class Shift(Node):  # noqa: F841
            type = "Shift"
            value = Socket(FLOAT)
            outputs = (Output("value", FLOAT),)

            def run(self, ctx, value, offset):
                return value + offset


def test_an_input_named_like_a_node_declaration_is_refused():
    """A field called ``version`` would replace the node type's version (which migrations
    and saved files read) with a Choice object."""
    with pytest.raises(TypeError, match=r"Variant: input 'version' has the name of Node.version"):
        class Variant(Node):  # noqa: F841
            type = "Variant"
            value = Socket(FLOAT)
            version = Float(1.0)
            outputs = (Output("value", FLOAT),)

            def run(self, ctx, value, version):
                return value


def test_a_type_given_as_a_string_names_the_fix():
    with pytest.raises(TypeError, match=r"the type 'LATENT' is a string; declare it once as a DataType"):
        Socket("LATENT")
    with pytest.raises(TypeError, match=r"Output 'latent'.*DataType"):
        Output("latent", "LATENT")


def test_one_field_object_in_two_node_classes_is_refused():
    shared = Float(1.0)

    class First(Node):
        type = "First"
        amount = shared

        def run(self, ctx, amount):
            return None

    with pytest.raises(RuntimeError) as caught:  # Python wraps errors raised in __set_name__
        class Second(Node):  # noqa: F841
            type = "Second"
            amount = shared

            def run(self, ctx, amount):
                return None
    assert "already the input 'amount' of another declaration" in str(caught.value.__cause__ or caught.value)


def test_packs_register_through_one_declaration_and_clash_cleanly():
    rgb = DataType("COLOUR", (200, 0, 0), "An RGB colour")

    class Paint(Node):
        type = "Paint"
        output_node = True
        colour = Socket(rgb)

        def run(self, ctx, colour):
            return None

    registry = NodeRegistry()
    registry.register_pack(Pack("paint", nodes=(Paint,), data_types=(rgb,)))
    assert registry.get("Paint") is Paint and registry.data_types()["COLOUR"] is rgb
    other = DataType("COLOUR", (0, 0, 200), "Another colour")

    class Tint(Node):
        type = "Tint"
        tint = Socket(other)

        def run(self, ctx, tint):
            return None

    with pytest.raises(RegistryError, match="data type 'COLOUR' .* differs"):
        registry.register_pack(Pack("tint", nodes=(Tint,)))
    assert registry.get("Tint") is None and [p.name for p in registry.packs] == ["paint"]


def test_the_built_in_packs_come_in_through_the_entry_point_like_a_plugin():
    from importlib.metadata import entry_points

    from nodeflow.model.registry import default_registry

    declared = {ep.name: ep.value for ep in entry_points(group="nodeflow.packs")}
    assert declared["diffusion"] == "nodes.diffusion:PACK" and declared["bundled"] == "nodes.bundled:PACK"
    registry = default_registry()
    assert {p.name for p in registry.packs} >= {"diffusion", "bundled"} and registry.load_errors == []
    assert "train-demo" in registry.commands()
    assert "Sampler" in registry and registry.origin("Sampler") == "pack diffusion"
