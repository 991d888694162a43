"""ComfyUI workflows as nodeflow workflows (the importer of the diffusion pack).

Reads both of ComfyUI's formats: the API format (``{"3": {"class_type": "KSampler",
"inputs": {...}}}``, what its ``prompt`` PNG chunk holds) and the UI format (``nodes`` +
``links``, schema 0.4 with links as lists and schema 1 with links as objects, what its
``workflow`` chunk holds). The mapping table, with the differences in behaviour, is
documented in docs/comfyui.md.

Conversion runs in three steps: read either format into :class:`ComfyNode` records
(links as ``(node, slot)`` references, widget values by name); resolve what exists
only in ComfyUI's editor (Reroute and primitive nodes, muted nodes); then build the
nodeflow nodes, one ComfyUI node giving one or several (KSampler -> Noise + CFG +
Sampler) or none (KSamplerSelect and BasicScheduler become the Sampler's widgets).
Nothing is converted half-way: every unsupported node type and value is collected and
reported in one :class:`WorkflowError`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from nodeflow.model.values import show as _show_value
from nodeflow.model.registry import NodeRegistry
from nodeflow.files.workflow import WORKFLOW_FORMAT, WORKFLOW_VERSION, WorkflowError

from nodes.diffusion.comfyui_names import normalise_model_names

SEED_CONTROLS = frozenset({"fixed", "increment", "decrement", "randomize"})
MAX_NODES = 5_000
MAX_RESOLVE_HOPS = 1_000  # reroute/primitive chains; a loop of reroutes must end
GROUP_TITLES_KEY = "nodeflow group titles"  # set on the nodes inlined from group nodes (comfyui_groupnodes.py)


@dataclass(frozen=True)
class Ref:
    """A link end in ComfyUI: output ``slot`` of node ``node``."""

    node: str
    slot: int


@dataclass
class ComfyNode:
    id: str
    type: str
    title: str = ""
    mode: str = "normal"  # "normal", "bypass" or "muted"
    pos: tuple[float, float] | None = None
    inputs: dict[str, Any] = field(default_factory=dict)  # name -> literal value or Ref
    slots: tuple[str, ...] = ()  # a subgraph instance's input names, in slot order
    # The widget values that links cover (a widget turned into an input keeps its value in
    # widgets_values): inside a subgraph, the value to use when the instance gives none.
    covered: dict[str, Any] = field(default_factory=dict)
    # The titles of the group node instances it was inlined from, outermost first; the
    # instances' ids are its id less as many trailing ":index" parts (comfyui_groupnodes.py).
    groups: tuple[str, ...] = ()


# ====================================================================== sniffing
# The other keys of the body a script POSTs to ComfyUI's /prompt (saved as a file by API users)
PROMPT_BODY_KEYS = {"prompt", "client_id", "extra_data", "number", "front", "prompt_id", "partial_execution_targets"}


def unwrap_prompt_body(data: Any) -> Any:
    """The API-format graph inside a /prompt request body (``{"prompt": {...}, "client_id": ...}``),
    or ``data`` itself when it is not one."""
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and set(data) <= PROMPT_BODY_KEYS:
        inner = data["prompt"]
        if inner and all(isinstance(v, dict) and isinstance(v.get("class_type"), str) for v in inner.values()):
            return inner
    return data


def sniff(data: Any) -> str | None:
    if not isinstance(data, dict) or not data:
        return None
    if unwrap_prompt_body(data) is not data:
        return "ComfyUI API format (a /prompt request body)"
    if isinstance(data.get("nodes"), list) and ("last_node_id" in data or "state" in data or "links" in data):
        version = data.get("version")
        return f"ComfyUI workflow (schema {_show_value(version, 20)})" if isinstance(version, (int, float, str)) else "ComfyUI workflow"
    if all(isinstance(v, dict) and isinstance(v.get("class_type"), str) for v in data.values()):
        return "ComfyUI API format"
    if any(isinstance(v, dict) and ("class_type" in v or "inputs" in v) for v in data.values()):
        return "ComfyUI API format, malformed"  # read_api names each node that is not a node
    return None


# ================================================================ reading formats
def read_api(data: dict[str, Any], errors: list[str]) -> list[ComfyNode]:
    """The nodes of an API-format document. Each malformed entry (no ``class_type``, inputs
    that are not an object, a link that is not ``[node id, output index]`` or that names a
    node not in the document) adds to ``errors`` a line naming the node and the field;
    :func:`convert_nodes` reports them with everything else it cannot convert."""
    nodes = []
    for node_id, raw in data.items():
        if not isinstance(raw, dict):
            errors.append(f"node {node_id} must be an object with 'class_type' and 'inputs', not {_kind(raw)}")
            continue
        class_type, inputs = raw.get("class_type"), raw.get("inputs", {})
        if "class_type" not in raw:
            errors.append(f"node {node_id} has no class_type")
        elif not isinstance(class_type, str) or not class_type.strip():
            errors.append(f"node {node_id}: 'class_type' must be a node type name, not {_show(class_type)}")
            class_type = None
        if not isinstance(inputs, dict):
            errors.append(f"node {node_id}: 'inputs' must be an object, not {_kind(inputs)}")
            inputs = {}
        meta = raw.get("_meta")
        title = meta.get("title", "") if isinstance(meta, dict) else ""
        type_name = class_type.strip() if isinstance(class_type, str) else ""
        node = ComfyNode(str(node_id), type_name, title if isinstance(title, str) else "")
        for name, value in inputs.items():
            node.inputs[name] = _api_value(value, node_id, name, errors)
        if class_type is not None:  # a node without a type is reported above, not again as an unknown type
            nodes.append(node)
    known = {str(node_id) for node_id in data}
    for node in nodes:
        for name, value in node.inputs.items():
            if isinstance(value, Ref) and value.node not in known:
                errors.append(f"node {node.id} input {name!r} links to node {value.node}, which is not in the workflow")
    return nodes


def _api_value(value: Any, node_id: str, name: str, errors: list[str]) -> Any:
    """A link ``[node id, output index]`` as a Ref; any other list is a malformed link, as in
    ComfyUI (a list widget value is sent as ``{"__value__": [...]}``, unwrapped here)."""
    if isinstance(value, dict) and "__value__" in value:
        return value["__value__"]
    if not isinstance(value, list):
        return value
    if len(value) != 2 or not isinstance(value[0], (str, int)) or isinstance(value[0], bool):
        errors.append(f"node {node_id} input {name!r}: a link must be [node id, output index], not {_show(value)}")
    elif not _is_int(value[1]):
        errors.append(f"node {node_id} input {name!r}: the link's output index must be a whole number, "
                      f"not {_show(value[1])}")
    else:
        return Ref(str(value[0]), value[1])
    return None


def _kind(value: Any) -> str:
    """What a JSON value is, for an error: "a list", "a string", "null", ..."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


_MODES = {0: "normal", 1: "normal", 2: "muted", 3: "normal", 4: "bypass"}


def read_ui(data: dict[str, Any]) -> list[ComfyNode]:
    """The nodes of a UI-format file, with its group nodes and subgraphs (nested too) inlined."""
    from nodes.diffusion.comfyui_groupnodes import group_definitions, inline_group_nodes
    from nodes.diffusion.comfyui_subgraphs import inline_subgraphs, subgraph_definitions

    groups = group_definitions(data)  # the file's, also for the group nodes inside its subgraphs
    data = inline_group_nodes(data, _widget_names, MAX_NODES)
    definitions = subgraph_definitions(data)
    for key, definition in definitions.items():
        try:
            definitions[key] = inline_group_nodes(definition, _widget_names, MAX_NODES,
                                                  {**groups, **group_definitions(definition)})
        except WorkflowError as error:
            raise WorkflowError(f"ComfyUI subgraph {definition.get('name') or key!r}: {error}") from None
    nodes = read_ui_graph(data, "", definitions)
    return inline_subgraphs(nodes, definitions) if definitions else nodes


def _widget_names(type_name: Any) -> tuple[str, ...] | None:
    """A ComfyUI node type's widget names, in the UI format's order; None if nodeflow cannot import it."""
    spec = MAPPINGS.get(type_name.strip()) if isinstance(type_name, str) else None
    if spec is not None:
        return spec.widgets
    return UI_ONLY.get(type_name.strip()) if isinstance(type_name, str) else None


def read_ui_graph(data: dict[str, Any], prefix: str, subgraphs: dict[str, Any]) -> list[ComfyNode]:
    """The nodes of one UI graph: the file's, or a subgraph's (ids ``prefix + id``)."""
    links = {key: Ref(prefix + ref.node, ref.slot) for key, ref in _ui_links(data.get("links") or []).items()}
    by_target = {key: Ref(prefix + ref.node, ref.slot) for key, ref in _ui_links_by_target(data.get("links")).items()}
    nodes = []
    for index, raw in enumerate(_list(data.get("nodes"))):
        if not isinstance(raw, dict):
            raise WorkflowError(f"ComfyUI nodes[{index}] must be an object")
        node_id, type_name = raw.get("id"), raw.get("type")
        if not isinstance(node_id, (int, str)) or isinstance(node_id, bool) or not isinstance(type_name, str):
            raise WorkflowError(f"ComfyUI nodes[{index}] needs an 'id' and a 'type'")
        mode = raw.get("mode", 0)
        title = raw.get("title", "")
        type_name = type_name.strip()  # old files: "ConditioningAverage " with a trailing space
        node = ComfyNode(
            prefix + str(node_id),
            type_name,
            title if isinstance(title, str) else "",
            _MODES.get(mode, "normal") if _is_int(mode) else "normal",
            _ui_pair(raw.get("pos")),
        )
        titles = raw.get(GROUP_TITLES_KEY)
        if isinstance(titles, list) and all(isinstance(t, str) for t in titles):
            node.groups = tuple(titles)
        spec = MAPPINGS.get(type_name)
        widget_names = spec.widgets if spec is not None else UI_ONLY.get(type_name, ())
        if type_name in subgraphs:  # an instance: its input slots, and the promoted widgets' values
            slots = [s if isinstance(s, dict) else {} for s in _list(raw.get("inputs"))]
            node.slots = tuple(s.get("name") if isinstance(s.get("name"), str) else "" for s in slots)
            widget_names = tuple(s["name"] for s in slots if isinstance(s.get("widget"), dict) and s.get("name"))
            properties = raw.get("properties")
            proxied = isinstance(properties, dict) and bool(properties.get("proxyWidgets"))
            # Frontends 1.2x list only the instance's linkable inputs. Later ones may order the
            # values by "proxyWidgets" instead, and do not always agree with it: the inner
            # widgets' own values are the safe reading there.
            if not widget_names and not proxied:
                widget_names = _promoted_widgets(subgraphs[type_name], node.slots)
        node.inputs.update(_widget_values(raw.get("widgets_values"), widget_names))
        for slot in _list(raw.get("inputs")):
            if not isinstance(slot, dict):
                continue
            widget = slot.get("widget")
            name = widget.get("name") if isinstance(widget, dict) and type_name not in subgraphs else slot.get("name")
            link = slot.get("link")
            if isinstance(name, str) and isinstance(link, (int, str)) and not isinstance(link, bool):
                if link not in links:
                    raise WorkflowError(f"ComfyUI node {node.id} input {name!r}: link {link!r} is not in 'links'")
                if isinstance(widget, dict) and name in node.inputs:
                    node.covered[name] = node.inputs[name]
                # A hand-edited file may give two links one id; the one ending at this node is meant.
                node.inputs[name] = by_target.get((link, str(node_id)), links[link])
        nodes.append(node)
    return nodes


def _promoted_widgets(definition: dict[str, Any], listed: tuple[str, ...]) -> tuple[str, ...]:
    """The names of a subgraph's inputs that feed inner widgets, in the definition's order,
    less the inputs its instance lists as slots. ComfyUI's frontend (1.2x) shows these as
    widgets on the instance and saves their values in the instance's widgets_values, in
    this order, while its ``inputs`` list holds only the other, linkable ones."""
    widget_slots = set()  # (inner node id, inner input slot) of the inner inputs that are widgets
    for raw in _list(definition.get("nodes")):
        if isinstance(raw, dict):
            for index, slot in enumerate(_list(raw.get("inputs"))):
                if isinstance(slot, dict) and isinstance(slot.get("widget"), dict):
                    widget_slots.add((str(raw.get("id")), index))
    feeds_widget = set()  # the input node's slots linked to an inner widget
    for ends in filter(None, map(link_ends, _list(definition.get("links")))):
        origin, origin_slot, target, target_slot = ends
        if str(origin) == "-10" and (str(target), target_slot) in widget_slots:
            feeds_widget.add(origin_slot)
    names = []
    for index, entry in enumerate(_list(definition.get("inputs"))):
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and name not in listed and index in feeds_widget:
            names.append(name)
    return tuple(names)


def _ui_links(raw_links: Any) -> dict[Any, Ref]:
    if not isinstance(raw_links, list):
        raise WorkflowError("ComfyUI 'links' must be a list")
    links = {}
    for index, raw in enumerate(raw_links):
        if isinstance(raw, list) and len(raw) >= 5:  # schema 0.4: [id, origin, slot, target, slot, type]
            link_id, origin, slot = raw[0], raw[1], raw[2]
        elif isinstance(raw, dict):  # schema 1
            link_id, origin, slot = raw.get("id"), raw.get("origin_id"), raw.get("origin_slot")
        else:
            raise WorkflowError(f"ComfyUI links[{index}] is neither a list of 6 nor a link object")
        if not isinstance(origin, (int, str)) or isinstance(origin, bool) or not _is_int(slot):
            raise WorkflowError(f"ComfyUI links[{index}] has no valid origin node and slot")
        if isinstance(link_id, (int, str)) and not isinstance(link_id, bool):
            links[link_id] = Ref(str(origin), slot)
    return links


def _ui_links_by_target(raw_links: Any) -> dict[tuple[Any, str], Ref]:
    """(link id, target node id) -> origin, for the links whose id is given twice."""
    if not isinstance(raw_links, list):
        return {}
    ids = [raw[0] if isinstance(raw, list) and raw else raw.get("id") if isinstance(raw, dict) else None
           for raw in raw_links]
    counts = Counter(i for i in ids if isinstance(i, (int, str)) and not isinstance(i, bool))
    repeated = {i for i, n in counts.items() if n > 1}
    found: dict[tuple[Any, str], Ref] = {}
    for link_id, raw in zip(ids, raw_links):
        if link_id not in repeated:
            continue
        single = _ui_links([raw])
        target = raw[3] if isinstance(raw, list) and len(raw) >= 5 else raw.get("target_id") if isinstance(raw, dict) else None
        if link_id in single and isinstance(target, (int, str)) and not isinstance(target, bool):
            found[(link_id, str(target))] = single[link_id]
    return found


def _widget_values(values: Any, names: tuple[str, ...],
                   controlled: Callable[[str, Any], bool] | None = None) -> dict[str, Any]:
    """Positional widget values by name; a seed's hidden "control after generate"
    value (fixed/increment/...) that follows it is skipped (``controlled(name, value)``
    says which value is such a control, if not only a seed's)."""
    if isinstance(values, dict):  # some nodes save widget values by name
        return {name: values[name] for name in names if name in values}
    if not isinstance(values, list):
        return {}
    is_control = controlled or (lambda name, value: name in SEED_WIDGETS and _is_seed_control(value))
    out, position = {}, 0
    for name in names:
        if position >= len(values):
            break
        out[name] = values[position]
        position += 1
        if position < len(values) and is_control(name, values[position]):
            position += 1
    return out


def _is_seed_control(value: Any) -> bool:
    """ComfyUI's "control after generate" value; older files saved it as a boolean
    (``true`` = randomize), which must be skipped too or every later value shifts."""
    return isinstance(value, bool) or (isinstance(value, str) and value in SEED_CONTROLS)


def _ui_pair(value: Any) -> tuple[float, float] | None:
    if isinstance(value, dict):  # old files: {"0": x, "1": y}
        value = [value.get("0"), value.get("1")]
    if isinstance(value, list) and len(value) >= 2 and all(_is_number(v) for v in value[:2]):
        return (float(value[0]), float(value[1]))
    return None


def link_ends(raw: Any) -> tuple[Any, Any, Any, Any] | None:
    """(origin node, origin slot, target node, target slot) of one UI link in either schema
    (0.4's ``[id, origin, slot, target, slot, type]`` or 1's link object), None for anything
    else; the values are as written (callers check them)."""
    if isinstance(raw, dict):
        return tuple(raw.get(k) for k in ("origin_id", "origin_slot", "target_id", "target_slot"))  # type: ignore[return-value]
    if isinstance(raw, list) and len(raw) >= 5:
        return tuple(raw[1:5])  # type: ignore[return-value]
    return None


def _list(value: Any) -> list[Any]:
    """``value`` if it is a list; a missing or malformed optional list counts as empty."""
    return value if isinstance(value, list) else []


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) < 1e12


# =================================================================== the mapping
@dataclass(frozen=True)
class Mapping:
    """How one ComfyUI node type becomes nodeflow nodes."""

    widgets: tuple[str, ...]  # ComfyUI's widget names, in the UI format's order
    build: Callable[["Builder", ComfyNode], None]
    creates: tuple[str, ...]  # the nodeflow types it needs installed


SEED_WIDGETS = frozenset({"seed", "noise_seed"})

SAMPLER_NAMES = {
    "euler": "euler", "euler_ancestral": "euler_ancestral", "heun": "heun", "dpm_2": "dpm_2",
    "dpm_2_ancestral": "dpm_2_ancestral", "lms": "lms", "dpmpp_2m": "dpmpp_2m", "dpmpp_2m_sde": "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu": "dpmpp_2m_sde", "dpmpp_sde": "dpmpp_sde", "dpmpp_sde_gpu": "dpmpp_sde", "ddpm": "ddpm",
    "ddim": "ddim", "lcm": "lcm", "uni_pc": "unipc_bh1", "uni_pc_bh2": "unipc_bh2",
    # comfy-import: the third-order SDE solver ("_gpu" only says where ComfyUI draws its noise)
    "dpmpp_3m_sde": "dpmpp_3m_sde", "dpmpp_3m_sde_gpu": "dpmpp_3m_sde",
    # comfy-import: DEIS at ComfyUI's third order; the 2M SDE solver with Heun's correction
    "deis": "deis", "dpmpp_2m_sde_heun": "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu": "dpmpp_2m_sde_heun",
}
# ComfyUI's other sampler names (0.8.0), and why each has no nodeflow equivalent: the
# import error gives the reason, docs/comfyui.md lists them (a test keeps the three in step).
_CFG_PP = ("a CFG++ sampler (Chung et al. 2024): each step also uses the unconditional prediction apart from "
           "the guided one, and diffusers' schedulers are handed the guided prediction only")
_NO_SCHEDULER = "has no diffusers scheduler"
SAMPLER_REFUSED = {
    **{name: _CFG_PP for name in ("euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp",
                                  "dpmpp_2m_cfg_pp", "res_multistep_cfg_pp", "res_multistep_ancestral_cfg_pp",
                                  "gradient_estimation_cfg_pp")},
    "heunpp2": f"Heun++ (Heun's method with a third, weighted model call) {_NO_SCHEDULER}",
    "exp_heun_2_x0": f"the exponential Heun method on the data prediction (SEEDS-2 with r = 1) {_NO_SCHEDULER}",
    "exp_heun_2_x0_sde": f"the stochastic exponential Heun method on the data prediction {_NO_SCHEDULER}",
    "dpm_fast": f"DPM-Solver-fast (first- to third-order single steps over its own log-sigma schedule) {_NO_SCHEDULER}",
    "dpm_adaptive": "DPM-Solver with an adaptive step size chooses its own number of steps; diffusers has no "
                    "adaptive-step scheduler",
    "dpmpp_2s_ancestral": "diffusers' DPMSolverSinglestepScheduler has the DPM-Solver++(2S) steps but not their "
                          "ancestral noise",
    "ipndm": "diffusers' IPNDMScheduler is another method on another schedule: it walks its own continuous times "
             "in [0, 1] (for v-objective audio models), not the model's sigmas, and takes no list of sigmas",
    "ipndm_v": f"variable-step iPNDM {_NO_SCHEDULER} (IPNDMScheduler is a fixed-schedule method of its own)",
    "res_multistep": f"RES multistep (a second-order exponential multistep solver) {_NO_SCHEDULER}",
    "res_multistep_ancestral": f"RES multistep with ancestral noise {_NO_SCHEDULER}",
    "gradient_estimation": f"the gradient-estimation sampler {_NO_SCHEDULER}",
    "er_sde": f"ER-SDE-Solver (extended reverse-time SDE) {_NO_SCHEDULER}",
    "seeds_2": f"SEEDS-2 (stochastic exponential derivative-free solver) {_NO_SCHEDULER}",
    "seeds_3": f"SEEDS-3 (stochastic exponential derivative-free solver) {_NO_SCHEDULER}",
    "sa_solver": "diffusers' SASolverScheduler is SA-Solver but does not step as ComfyUI's: at ComfyUI's orders "
                 "(predictor 3, corrector 4) and without noise the two end 0.17 apart on an exact Gaussian "
                 "denoiser at 8 steps, where their euler agrees to 1e-5",
    "sa_solver_pece": "SA-Solver in PECE mode (the model called again after each correction) has no diffusers "
                      "scheduler",
}
SCHEDULER_NAMES = {
    "normal": "normal", "karras": "karras", "exponential": "exponential", "simple": "simple",
    "sgm_uniform": "simple", "ddim_uniform": "normal", "linear": "linear",
    # comfy-import: lists of sigmas over the model's own levels (run by the samplers that take a list)
    "beta": "beta", "kl_optimal": "kl_optimal", "linear_quadratic": "linear_quadratic",
}
UPSCALE_METHODS = {"nearest-exact": "nearest", "bilinear": "bilinear", "bicubic": "bicubic", "area": "area",
                   "bislerp": "bislerp"}


class Builder:
    """Collects the nodeflow nodes and links that ComfyUI nodes map to."""

    def __init__(self, nodes: dict[str, ComfyNode]):
        self.comfy = nodes
        self.nodes: list[dict[str, Any]] = []
        self.placements: dict[str, dict[str, Any]] = {}
        self.outputs: dict[tuple[str, int], tuple[str, str]] = {}  # ComfyUI (node, slot) -> ours
        self.pending: list[tuple[str, str, Ref, str]] = []  # our target, input, ComfyUI source, ComfyUI input
        self.problems: list[str] = []

    # ----------------------------------------------------------------- building
    def add(self, cnode: ComfyNode, type_name: str, suffix: str = "", values: dict[str, Any] | None = None,
            main: bool = True, offset: int = 0) -> str:
        node_id = cnode.id + (f".{suffix}" if suffix else "")
        entry: dict[str, Any] = {"id": node_id, "type": type_name, "values": values or {}}
        if main:
            if cnode.title and cnode.title != cnode.type:
                entry["title"] = cnode.title
            if cnode.mode == "bypass":
                entry["mode"] = "bypass"
        self.nodes.append(entry)
        if cnode.pos is not None:  # helpers of an expanded node sit below it
            self.placements[node_id] = {"pos": [cnode.pos[0], cnode.pos[1] + 110 * offset]}
        return node_id

    def output(self, cnode: ComfyNode, slot: int, node_id: str, name: str) -> None:
        self.outputs[(cnode.id, slot)] = (node_id, name)

    def link(self, cnode: ComfyNode, comfy_input: str, node_id: str, input_name: str) -> None:
        """Wire ComfyUI input ``comfy_input`` (a link) to our ``node_id.input_name``."""
        value = self.resolved(cnode, comfy_input)
        if isinstance(value, Ref):
            self.pending.append((node_id, input_name, value, comfy_input))
        elif value is not None:
            self.problem(cnode, f"input {comfy_input!r} must be a link, not the value {_show(value)}")

    def value(self, cnode: ComfyNode, comfy_input: str, values: dict[str, Any], name: str,
              convert: Callable[[Any], Any] | None = None, node_id: str = "") -> None:
        """Copy widget ``comfy_input`` into ``values[name]`` (converted); a widget fed by
        a link of another node stays a link."""
        value = self.resolved(cnode, comfy_input)
        if isinstance(value, Ref):
            if convert is not None:
                self.problem(cnode, f"widget {comfy_input!r} is fed by a link; nodeflow needs its value here")
            else:
                self.pending.append((node_id or cnode.id, name, value, comfy_input))
            return
        if value is None:
            return  # not in the file: our default
        if convert is not None:
            try:
                value = convert(value)
            except (KeyError, ValueError, TypeError) as exc:
                why = f": {exc.reason}" if isinstance(exc, NoEquivalent) else ""
                self.problem(cnode, f"{comfy_input} {_show(value)} has no nodeflow equivalent{why}")
                return
        values[name] = value

    def resolved(self, cnode: ComfyNode, comfy_input: str) -> Any:
        """The input's literal value or the Ref of a real node, looking through Reroute
        and primitive nodes (which exist only in ComfyUI's editor)."""
        value = cnode.inputs.get(comfy_input)
        for _ in range(MAX_RESOLVE_HOPS):
            if not isinstance(value, Ref):
                return value
            source = self.comfy.get(value.node)
            if source is None or source.mode == "muted":
                return None  # as ComfyUI: a link from a missing or muted node is no link
            if source.type in PASS_THROUGH:
                value = _passed_on(source)
            elif source.type in PRIMITIVES:
                value = source.inputs.get("value")
            else:
                return value
        self.problem(cnode, f"input {comfy_input!r} is fed by a loop of Reroute nodes")
        return None

    def source_node(self, cnode: ComfyNode, comfy_input: str, types: tuple[str, ...]) -> ComfyNode | None:
        """The node of one of ``types`` feeding ``comfy_input`` (for nodes folded into widgets)."""
        ref = self.resolved(cnode, comfy_input)
        if not isinstance(ref, Ref):
            self.problem(cnode, f"input {comfy_input!r} is not connected")
            return None
        source = self.comfy[ref.node]
        if source.type not in types:
            self.problem(cnode, f"input {comfy_input!r} comes from {source.type} (node {source.id}); "
                         f"nodeflow can import it only from {' or '.join(types)}")
            return None
        return source

    def problem(self, cnode: ComfyNode, message: str) -> None:
        self.problems.append(f"node {cnode.id} ({cnode.type}): {message}")

    # ----------------------------------------------------------------- finishing
    def links(self) -> list[dict[str, Any]]:
        out = []
        for target, input_name, ref, comfy_input in self.pending:
            mapped = self.outputs.get((ref.node, ref.slot))
            if mapped is None:
                source = self.comfy[ref.node]
                if MAPPINGS.get(source.type) is not None:  # a known type with an output we do not have
                    self.problems.append(
                        f"node {source.id} ({source.type}): output {ref.slot} (used by node {target.split('.')[0]} "
                        f"input {comfy_input!r}) has no nodeflow equivalent"
                    )
                continue
            out.append({"from": {"node": mapped[0], "output": mapped[1]}, "to": {"node": target, "input": input_name}})
        return out


# ---------------------------------------------------------------- node builders
def _one_to_one(type_name: str, inputs: dict[str, str], widgets: dict[str, str], outputs: tuple[str, ...],
                converters: dict[str, Callable[[Any], Any]] | None = None,
                fixed: dict[str, Any] | None = None) -> Callable[[Builder, ComfyNode], None]:
    """A ComfyUI node that is one nodeflow node: inputs, widgets and outputs renamed;
    ``fixed`` are the nodeflow values that give ComfyUI's behaviour (no widget of its own)."""

    def build(b: Builder, c: ComfyNode) -> None:
        values: dict[str, Any] = dict(fixed or {})
        for comfy_name, ours in widgets.items():
            b.value(c, comfy_name, values, ours, (converters or {}).get(comfy_name))
        node_id = b.add(c, type_name, values=values)
        for comfy_name, ours in inputs.items():
            b.link(c, comfy_name, node_id, ours)
        for slot, name in enumerate(outputs):
            b.output(c, slot, node_id, name)

    return build


def _image_file_name(name: Any) -> Any:
    """ComfyUI annotates a picked file with the folder it came from ("photo.png [input]",
    "ComfyUI_00001_.png [output]"); nodeflow's LoadImage names the file alone, read from the
    input folder (a file from ComfyUI's output or temp folder must be copied there)."""
    if isinstance(name, str):
        for folder in (" [input]", " [output]", " [temp]"):
            if name.endswith(folder):
                return name[: -len(folder)]
    return name


class NoEquivalent(ValueError):
    """A widget value nodeflow refuses for a known reason (``reason``, for the import error)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _output_prefix(prefix: Any) -> Any:
    """ComfyUI's SaveImage prefix may name subfolders of the output folder ("gligen/testing")
    and hold the editor's %...% patterns ("%date:yyyy-MM-dd%"); nodeflow writes into the
    output folder itself, so the folders become part of the name ("gligen_testing"), as do
    the ":" and ".." nodeflow keeps out of file names."""
    if not isinstance(prefix, str):
        return prefix
    flat = re.sub(r"[/\\:]+", "_", prefix.replace("..", "_")).strip("_ ")
    return flat or "ComfyUI"


def _sampler_name(name: Any) -> str:
    if isinstance(name, str) and name in SAMPLER_REFUSED:
        raise NoEquivalent(SAMPLER_REFUSED[name])
    return SAMPLER_NAMES[name]


def _scheduler_name(name: Any) -> str:
    return SCHEDULER_NAMES[name]


def steps_and_denoise(steps: Any, denoise: Any) -> tuple[int, float]:
    """ComfyUI runs ``steps`` steps of a schedule made for ``steps / denoise``; nodeflow
    (like diffusers' img2img strength) runs the last ``int(total * denoise)`` of ``total``.
    Returns the (total, denoise) that run the same steps."""
    if not _is_int(steps) or not _is_number(denoise) or steps < 1 or not 0 < denoise <= 1:
        raise ValueError
    if denoise >= 1:
        return steps, 1.0
    total = int(steps / denoise)
    for candidate in (round(float(denoise), 4), steps / total, (steps + 0.5) / total):
        if int(total * candidate) == steps and candidate <= 1:
            return total, candidate
    raise ValueError


def _sampler_values(b: Builder, c: ComfyNode, values: dict[str, Any], steps_input: str = "steps",
                    denoise_input: str = "denoise") -> None:
    b.value(c, "sampler_name", values, "sampler", _sampler_name)
    b.value(c, "scheduler", values, "schedule", _scheduler_name)
    steps, denoise = b.resolved(c, steps_input), b.resolved(c, denoise_input) if denoise_input else 1.0
    if _fed_by_link(b, c, {steps_input: steps, denoise_input: denoise}):
        return
    steps = 20 if steps is None else steps
    denoise = 1.0 if denoise is None else denoise
    try:
        values["steps"], values["denoise"] = steps_and_denoise(steps, denoise)
    except (ValueError, OverflowError):
        b.problem(c, f"steps {_show(steps)} with denoise {_show(denoise)} have no nodeflow equivalent")


def _build_ksampler(b: Builder, c: ComfyNode, advanced: bool = False) -> None:
    values: dict[str, Any] = {}
    _sampler_values(b, c, values, denoise_input="" if advanced else "denoise")
    if advanced:
        _advanced_range(b, c, values)
    sampler = b.add(c, "Sampler", values=values)
    noise_values: dict[str, Any] = {}
    if advanced and b.resolved(c, "add_noise") == "disable":
        noise = b.add(c, "DisableNoise", "noise", main=False, offset=1)
    else:
        b.value(c, "noise_seed" if advanced else "seed", noise_values, "seed", node_id=f"{c.id}.noise")
        noise = b.add(c, "Noise", "noise", noise_values, main=False, offset=1)
    cfg_values: dict[str, Any] = {}
    b.value(c, "cfg", cfg_values, "scale", node_id=f"{c.id}.cfg")
    guider = b.add(c, "CFG", "cfg", cfg_values, main=False, offset=2)
    for comfy_name, ours in (("model", "model"), ("positive", "positive"), ("negative", "negative")):
        b.link(c, comfy_name, guider, ours)
    b.pending.append((sampler, "noise", Ref(noise, 0), "noise"))
    b.pending.append((sampler, "guider", Ref(guider, 0), "guider"))
    b.outputs[(noise, 0)] = (noise, "noise")
    b.outputs[(guider, 0)] = (guider, "guider")
    b.link(c, "latent_image", sampler, "latent")
    b.output(c, 0, sampler, "latent")


_MAX_STEPS = 10_000


def _fed_by_link(b: Builder, c: ComfyNode, widgets: dict[str, Any]) -> bool:
    """Report each of ``widgets`` (name -> resolved value) that another node feeds: the
    Sampler needs these numbers when the workflow is imported, not when it runs."""
    fed = {name: ref for name, ref in widgets.items() if isinstance(ref, Ref)}
    for name, ref in fed.items():
        source = b.comfy.get(ref.node)
        b.problem(c, f"widget {name!r} is fed by node {ref.node}"
                     f"{f' ({source.type})' if source is not None else ''}; nodeflow needs its value here")
    return bool(fed)


def _advanced_range(b: Builder, c: ComfyNode, values: dict[str, Any]) -> None:
    """KSamplerAdvanced's start/end steps and leftover noise: the Sampler's step range."""
    steps = values.get("steps")
    start, end = b.resolved(c, "start_at_step"), b.resolved(c, "end_at_step")
    if steps is None or _fed_by_link(b, c, {"start_at_step": start, "end_at_step": end}):
        return  # the steps were refused already, or a step number comes from another node
    start = 0 if start is None else start
    end = 10_000 if end is None else end
    if not (_is_int(start) and _is_int(end) and _is_int(steps)):
        b.problem(c, "start_at_step and end_at_step must be whole numbers")
        return
    if not 0 < steps <= _MAX_STEPS:  # the Sampler refuses it too
        return
    if start >= min(end, steps):
        b.problem(c, f"start_at_step {start} leaves none of the {steps} steps to run (end_at_step {end})")
        return
    if start > 0:
        values["start_step"] = start
    if end < steps:
        values["end_step"] = end
        values["leftover_noise"] = b.resolved(c, "return_with_leftover_noise") == "enable"


def _build_custom_sampler(b: Builder, c: ComfyNode) -> None:
    values: dict[str, Any] = {}
    select = b.source_node(c, "sampler", SAMPLER_SOURCES)
    if select is not None:
        _sampler_choice(b, select, values)
    listed = _sigmas_values(b, c, values)
    node_id = b.add(c, "Sampler", values=values)
    if listed:
        b.link(c, "sigmas", node_id, "sigmas")
    b.link(c, "noise", node_id, "noise")
    b.link(c, "guider", node_id, "guider")
    b.link(c, "latent_image", node_id, "latent")
    b.output(c, 0, node_id, "latent")
    b.output(c, 1, node_id, "latent")  # denoised_output: the same at the end of a full schedule


def _build_folded(b: Builder, c: ComfyNode) -> None:
    """KSamplerSelect / BasicScheduler: read by the sampler that uses them, no node of their own."""


def _build_text_encoder(b: Builder, c: ComfyNode) -> None:
    values: dict[str, Any] = {}
    b.value(c, "text", values, "text")
    layer = _clip_layer(b, c)
    if layer is not None:
        if _is_int(layer) and layer < 0:
            values["clip_skip"] = -layer  # ComfyUI's -2 (the penultimate layer) is clip_skip 2
        else:
            b.problem(c, f"CLIPSetLastLayer stop_at_clip_layer {_show(layer)} has no nodeflow equivalent")
    node_id = b.add(c, "TextEncoder", values=values)
    b.link(c, "clip", node_id, "clip")
    b.output(c, 0, node_id, "conditioning")


def _clip_layer(b: Builder, c: ComfyNode) -> Any:
    """``stop_at_clip_layer`` of the nearest CLIPSetLastLayer the clip input passes through."""
    value = c.inputs.get("clip")
    for _ in range(MAX_RESOLVE_HOPS):
        source = b.comfy.get(value.node) if isinstance(value, Ref) else None
        if source is None or source.type not in ("Reroute", "CLIPSetLastLayer"):
            return None
        if source.type == "CLIPSetLastLayer" and source.mode == "normal":
            return b.resolved(source, "stop_at_clip_layer")
        value = _passed_on(source)
    return None


def _passed_on(node: ComfyNode) -> Any:
    """What a Reroute (its one input, however named) or CLIPSetLastLayer passes on."""
    if node.type == "CLIPSetLastLayer":
        return node.inputs.get("clip")
    return next((v for v in node.inputs.values() if isinstance(v, Ref)), None)


def _build_latent_upscale(b: Builder, c: ComfyNode) -> None:
    values: dict[str, Any] = {}
    b.value(c, "upscale_method", values, "method", UPSCALE_METHODS.__getitem__)
    b.value(c, "width", values, "width")
    b.value(c, "height", values, "height")
    crop = b.resolved(c, "crop")
    if crop not in (None, "disabled"):
        b.problem(c, f"crop {_show(crop)} has no nodeflow equivalent (only 'disabled')")
    if not values.get("width") and not values.get("height"):
        values["scale_by"] = 1.0  # ComfyUI: both 0 keeps the size
    node_id = b.add(c, "LatentUpscale", values=values)
    b.link(c, "samples", node_id, "latent")
    b.output(c, 0, node_id, "latent")


def _build_latent_upscale_by(b: Builder, c: ComfyNode) -> None:
    values: dict[str, Any] = {"width": 0, "height": 0}
    b.value(c, "upscale_method", values, "method", UPSCALE_METHODS.__getitem__)
    b.value(c, "scale_by", values, "scale_by")
    node_id = b.add(c, "LatentUpscale", values=values)
    b.link(c, "samples", node_id, "latent")
    b.output(c, 0, node_id, "latent")


MAPPINGS: dict[str, Mapping] = {
    "CheckpointLoaderSimple": Mapping(
        ("ckpt_name",), _one_to_one("Checkpoint", {}, {"ckpt_name": "checkpoint"}, ("model", "clip", "vae")),
        ("Checkpoint",)),
    "CLIPTextEncode": Mapping(("text",), _build_text_encoder, ("TextEncoder",)),
    "CLIPSetLastLayer": Mapping(("stop_at_clip_layer",), _build_folded, ()),
    "EmptyLatentImage": Mapping(
        ("width", "height", "batch_size"),
        _one_to_one("EmptyLatent", {}, {"width": "width", "height": "height", "batch_size": "batch"}, ("latent",)),
        ("EmptyLatent",)),
    "KSampler": Mapping(
        ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"), _build_ksampler,
        ("Noise", "CFG", "Sampler")),
    "KSamplerAdvanced": Mapping(
        ("add_noise", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "start_at_step", "end_at_step",
         "return_with_leftover_noise"),
        lambda b, c: _build_ksampler(b, c, advanced=True), ("Noise", "DisableNoise", "CFG", "Sampler")),
    "VAEDecode": Mapping((), _one_to_one("VAEDecode", {"samples": "latent", "vae": "vae"}, {}, ("image",)),
                         ("VAEDecode",)),
    # ComfyUI's VAE encoders cut an image's centre to multiples of 8; nodeflow's refuse unless told to.
    "VAEEncode": Mapping((), _one_to_one("VAEEncode", {"pixels": "image", "vae": "vae"}, {}, ("latent",),
                                         fixed={"crop_to_fit": True}), ("VAEEncode",)),
    "SaveImage": Mapping(
        ("filename_prefix",), _one_to_one("SaveImage", {"images": "images"}, {"filename_prefix": "filename_prefix"},
                                          ("images",), {"filename_prefix": _output_prefix}), ("SaveImage",)),
    "PreviewImage": Mapping((), _one_to_one("PreviewImage", {"images": "images"}, {}, ("images",)),
                            ("PreviewImage",)),
    "LoadImage": Mapping(("image", "upload"), _one_to_one("LoadImage", {}, {"image": "image"}, ("image", "mask"),
                                                             {"image": _image_file_name}),
                         ("LoadImage",)),
    "RandomNoise": Mapping(("noise_seed",), _one_to_one("Noise", {}, {"noise_seed": "seed"}, ("noise",)), ("Noise",)),
    "DisableNoise": Mapping((), _one_to_one("DisableNoise", {}, {}, ("noise",)), ("DisableNoise",)),
    "CFGGuider": Mapping(
        ("cfg",), _one_to_one("CFG", {"model": "model", "positive": "positive", "negative": "negative"},
                              {"cfg": "scale"}, ("guider",)), ("CFG",)),
    "BasicGuider": Mapping(
        (), _one_to_one("BasicGuider", {"model": "model", "conditioning": "conditioning"}, {}, ("guider",)),
        ("BasicGuider",)),
    "KSamplerSelect": Mapping(("sampler_name",), _build_folded, ()),
    "BasicScheduler": Mapping(("scheduler", "steps", "denoise"), _build_folded, ()),
    "SamplerCustomAdvanced": Mapping((), _build_custom_sampler, ("Sampler",)),
    # ComfyUI's Combine predicts each conditioning on its own and averages (our Stack).
    "ConditioningCombine": Mapping(
        (), _one_to_one("ConditioningStack", {"conditioning_1": "a", "conditioning_2": "b"}, {}, ("conditioning",)),
        ("ConditioningStack",)),
    "ConditioningAverage": Mapping(
        ("conditioning_to_strength",),
        _one_to_one("ConditioningAverage", {"conditioning_to": "a", "conditioning_from": "b"},
                    {"conditioning_to_strength": "weight"}, ("conditioning",)), ("ConditioningAverage",)),
    "LatentUpscale": Mapping(("upscale_method", "width", "height", "crop"), _build_latent_upscale,
                             ("LatentUpscale",)),
    "LatentUpscaleBy": Mapping(("upscale_method", "scale_by"), _build_latent_upscale_by, ("LatentUpscale",)),
}


# ======================================== comfy-import: masks, pixel and latent operations
IMAGE_METHODS = {"nearest-exact": "nearest", "bilinear": "bilinear", "bicubic": "bicubic", "area": "area",
                 "lanczos": "lanczos", "bislerp": "bislerp"}


def _same(type_name: str, inputs: tuple[str, ...], widgets: tuple[str, ...], outputs: tuple[str, ...],
          converters: dict[str, Callable[[Any], Any]] | None = None) -> Mapping:
    """A ComfyUI node whose nodeflow node has the same type, input and widget names."""
    return Mapping(widgets, _one_to_one(type_name, {n: n for n in inputs}, {n: n for n in widgets}, outputs, converters),
                   (type_name,))


def _build_sampler_custom(b: Builder, c: ComfyNode) -> None:
    """SamplerCustom: noise + CFG + sampler + sigmas in one node -> Noise + CFG + Sampler."""
    values: dict[str, Any] = {}
    select = b.source_node(c, "sampler", SAMPLER_SOURCES)
    if select is not None:
        _sampler_choice(b, select, values)
    listed = _sigmas_values(b, c, values)
    sampler = b.add(c, "Sampler", values=values)
    if listed:
        b.link(c, "sigmas", sampler, "sigmas")
    if b.resolved(c, "add_noise") is False:
        noise = b.add(c, "DisableNoise", "noise", main=False, offset=1)
    else:
        noise_values: dict[str, Any] = {}
        b.value(c, "noise_seed", noise_values, "seed", node_id=f"{c.id}.noise")
        noise = b.add(c, "Noise", "noise", noise_values, main=False, offset=1)
    cfg_values: dict[str, Any] = {}
    b.value(c, "cfg", cfg_values, "scale", node_id=f"{c.id}.cfg")
    guider = b.add(c, "CFG", "cfg", cfg_values, main=False, offset=2)
    for name in ("model", "positive", "negative"):
        b.link(c, name, guider, name)
    b.pending.append((sampler, "noise", Ref(noise, 0), "noise"))
    b.pending.append((sampler, "guider", Ref(guider, 0), "guider"))
    b.outputs[(noise, 0)] = (noise, "noise")
    b.outputs[(guider, 0)] = (guider, "guider")
    b.link(c, "latent_image", sampler, "latent")
    b.output(c, 0, sampler, "latent")
    b.output(c, 1, sampler, "latent")


# ComfyUI's sampler nodes with settings: the nodeflow sampler each is at the settings'
# defaults (the only values nodeflow runs; noise_device only says where noise is drawn).
SAMPLER_NODES: dict[str, tuple[str, dict[str, Any]]] = {
    "SamplerEulerAncestral": ("euler_ancestral", {"eta": 1.0, "s_noise": 1.0}),
    "SamplerLMS": ("lms", {"order": 4}),
    "SamplerDPMPP_2M_SDE": ("dpmpp_2m_sde", {"solver_type": "midpoint", "eta": 1.0, "s_noise": 1.0}),
    "SamplerDPMPP_3M_SDE": ("dpmpp_3m_sde", {"eta": 1.0, "s_noise": 1.0}),
    "SamplerDPMPP_SDE": ("dpmpp_sde", {"eta": 1.0, "s_noise": 1.0, "r": 0.5}),
}
SAMPLER_SOURCES = ("KSamplerSelect", *SAMPLER_NODES)
SIGMA_SOURCES = ("BasicScheduler", "KarrasScheduler", "ExponentialScheduler", "PolyexponentialScheduler", "VPScheduler",
                 "SDTurboScheduler", "SplitSigmas",
                 "AlignYourStepsScheduler", "BetaSamplingScheduler", "LaplaceScheduler", "ManualSigmas",
                 "SplitSigmasDenoise", "SetFirstSigma", "ExtendIntermediateSigmas")
# KarrasScheduler / ExponentialScheduler defaults: SD's own sigma range, which the
# Sampler's karras / exponential schedules use; other values become a list of sigmas.
_SIGMA_RANGE = {"sigma_max": 14.614642, "sigma_min": 0.0291675}


def _sampler_choice(b: Builder, select: ComfyNode, values: dict[str, Any]) -> None:
    if select.type == "KSamplerSelect":
        b.value(select, "sampler_name", values, "sampler", _sampler_name)
        return
    sampler, defaults = SAMPLER_NODES[select.type]
    if select.type == "SamplerDPMPP_2M_SDE" and b.resolved(select, "solver_type") == "heun":
        sampler, defaults = "dpmpp_2m_sde_heun", {**defaults, "solver_type": "heun"}  # ComfyUI's dpmpp_2m_sde_heun
    for name, default in defaults.items():
        value = b.resolved(select, name)
        if value is not None and value != default:
            b.problem(select, f"{name} {_show(value)} has no nodeflow equivalent ({sampler} uses {_show(default)})")
    values["sampler"] = sampler


def _sigmas_values(b: Builder, c: ComfyNode, values: dict[str, Any], comfy_input: str = "sigmas") -> bool:
    """The schedule, steps, denoise and step range of the node feeding ``sigmas``, as the
    Sampler's widgets; True when they are an explicit list instead (its own nodes, which
    the Sampler's ``sigmas`` input takes; comfyui_regions.py)."""
    from nodes.diffusion.comfyui_regions import needs_sigma_list

    source = b.source_node(c, comfy_input, SIGMA_SOURCES)
    if source is None:
        return False
    if needs_sigma_list(b, source):
        return True
    if source.type in ("SplitSigmas", "SplitSigmasDenoise"):
        _sigmas_values(b, source, values)
        if source.type == "SplitSigmasDenoise":  # the split step of the schedule's own steps
            denoise = b.resolved(source, "denoise")
            denoise = 1.0 if denoise is None else denoise
            if values.get("denoise", 1.0) != 1.0 or not _is_int(values.get("steps")) or not _is_number(denoise):
                b.problem(source, "nodeflow can split by denoise only a whole schedule with a known number of steps")
                return False
            step = values["steps"] - round(values["steps"] * denoise)
        else:
            step = b.resolved(source, "step")
            step = 0 if step is None else step
        if not _is_int(step):
            b.problem(source, "step must be a whole number")
            return False
        # Which half is used depends on the output slot the sampler is linked to.
        ref = b.resolved(c, comfy_input)
        if ref.slot == 0:  # high_sigmas: the first `step` steps, noise left over
            values["end_step"], values["leftover_noise"] = max(1, step), True
        else:  # low_sigmas: from `step` on
            values["start_step"] = step
        return False
    if source.type == "BasicScheduler":
        _sampler_values(b, source, values)
        return False
    steps = b.resolved(source, "steps")
    values["steps"] = 20 if steps is None else steps
    if source.type == "SDTurboScheduler":
        values["schedule"] = "simple"  # evenly spaced from the last training step, as SD Turbo was distilled
        denoise = b.resolved(source, "denoise")
        if denoise not in (None, 1, 1.0):
            try:
                values["steps"], values["denoise"] = steps_and_denoise(values["steps"], denoise)
            except ValueError:
                b.problem(source, f"steps {_show(steps)} with denoise {_show(denoise)} have no nodeflow equivalent")
        return False
    if source.type == "BetaSamplingScheduler":  # alpha = beta = 0.6: the Sampler's beta schedule
        values["schedule"] = "beta"
        return False
    # SD's own range (and rho 7): the Sampler's schedule, as diffusers computes it.
    values["schedule"] = "karras" if source.type == "KarrasScheduler" else "exponential"
    return False


def _build_pad_for_outpaint(b: Builder, c: ComfyNode) -> None:
    _one_to_one("ImagePadForOutpaint", {"image": "image"},
                {n: n for n in ("left", "top", "right", "bottom", "feathering")}, ("image", "mask"))(b, c)


def _build_image_scale(b: Builder, c: ComfyNode) -> None:
    _one_to_one("ImageScale", {"image": "image"},
                {"upscale_method": "method", "width": "width", "height": "height", "crop": "crop"}, ("image",),
                {"upscale_method": IMAGE_METHODS.__getitem__})(b, c)


def _build_checkpoint_with_config(b: Builder, c: ComfyNode) -> None:
    """CheckpointLoader (the old loader that takes a config file): nodeflow reads the
    architecture from the weights; only what the config says about prediction is kept."""
    values: dict[str, Any] = {}
    b.value(c, "ckpt_name", values, "checkpoint")
    config = b.resolved(c, "config_name")
    if isinstance(config, str) and re.search(r"[-_]v\.ya?ml$", config):
        values["prediction"] = "v_prediction"  # e.g. v2-inference-v.yaml
    node_id = b.add(c, "Checkpoint", values=values)
    for slot, name in enumerate(("model", "clip", "vae")):
        b.output(c, slot, node_id, name)


def _build_vae_decode_tiled(b: Builder, c: ComfyNode) -> None:
    """VAEDecodeTiled: VAEDecode with tiling on (our tiles blend their overlap themselves)."""
    values: dict[str, Any] = {"tiling": "on"}
    b.value(c, "tile_size", values, "tile_size", lambda size: max(64, int(size) // 64 * 64))
    node_id = b.add(c, "VAEDecode", values=values)
    b.link(c, "samples", node_id, "latent")
    b.link(c, "vae", node_id, "vae")
    b.output(c, 0, node_id, "image")


def _merge(type_name: str, kind: str, operation: str, ratio_input: str) -> Callable[[Builder, ComfyNode], None]:
    """ModelMerge*/CLIPMerge*: one merge node with the operation set."""
    def build(b: Builder, c: ComfyNode) -> None:
        values: dict[str, Any] = {"operation": operation}
        if ratio_input:
            b.value(c, ratio_input, values, "ratio")
        node_id = b.add(c, type_name, values=values)
        b.link(c, f"{kind}1", node_id, f"{kind}1")
        b.link(c, f"{kind}2", node_id, f"{kind}2")
        b.output(c, 0, node_id, kind)

    return build


def _build_model_sampling(b: Builder, c: ComfyNode) -> None:
    values: dict[str, Any] = {}
    b.value(c, "sampling", values, "prediction",
            {"eps": "epsilon", "v_prediction": "v_prediction", "x0": "sample", "lcm": "lcm"}.__getitem__)
    b.value(c, "zsnr", values, "zero_snr")
    node_id = b.add(c, "ModelSampling", values=values)
    b.link(c, "model", node_id, "model")
    b.output(c, 0, node_id, "model")


def _build_note(b: Builder, c: ComfyNode) -> None:
    """A note stays a note on the canvas, where its author put it (a text that is not a
    string, which ComfyUI never writes, is dropped rather than refusing the workflow)."""
    text = c.inputs.get("text")
    if isinstance(text, str):
        b.add(c, "Note", values={"text": text})


MAPPINGS.update({
    "Note": Mapping(("text",), _build_note, ("Note",)),
    "MarkdownNote": Mapping(("text",), _build_note, ("Note",)),
    "ImageScale": Mapping(("upscale_method", "width", "height", "crop"), _build_image_scale, ("ImageScale",)),
    "ImageScaleBy": Mapping(
        ("upscale_method", "scale_by"),
        _one_to_one("ImageScaleBy", {"image": "image"}, {"upscale_method": "method", "scale_by": "scale_by"}, ("image",),
                    {"upscale_method": IMAGE_METHODS.__getitem__}), ("ImageScaleBy",)),
    "ImageScaleToTotalPixels": Mapping(
        ("upscale_method", "megapixels"),
        _one_to_one("ImageScaleToTotalPixels", {"image": "image"}, {"upscale_method": "method", "megapixels": "megapixels"},
                    ("image",), {"upscale_method": IMAGE_METHODS.__getitem__}), ("ImageScaleToTotalPixels",)),
    "ImageCrop": _same("ImageCrop", ("image",), ("width", "height", "x", "y"), ("image",)),
    "ImageInvert": _same("ImageInvert", ("image",), (), ("image",)),
    "ImageSharpen": _same("ImageSharpen", ("image",), ("sharpen_radius", "sigma", "alpha"), ("image",)),
    "ImageBlur": _same("ImageBlur", ("image",), ("blur_radius", "sigma"), ("image",)),
    "EmptyImage": _same("EmptyImage", (), ("width", "height", "batch_size", "color"), ("image",)),
    "RepeatImageBatch": _same("RepeatImageBatch", ("image",), ("amount",), ("image",)),
    "ImageFromBatch": _same("ImageFromBatch", ("image",), ("batch_index", "length"), ("image",)),
    "ImageFlip": _same("ImageFlip", ("image",), ("flip_method",), ("image",)),
    "ImageQuantize": _same("ImageQuantize", ("image",), ("colors", "dither"), ("image",)),
    "ImageBlend": _same("ImageBlend", ("image1", "image2"), ("blend_factor", "blend_mode"), ("image",)),
    "ImageBatch": _same("ImageBatch", ("image1", "image2"), (), ("image",)),
    "ImageCompositeMasked": _same("ImageCompositeMasked", ("destination", "source", "mask"), ("x", "y", "resize_source"),
                                  ("image",)),
    "ImagePadForOutpaint": Mapping(("left", "top", "right", "bottom", "feathering"), _build_pad_for_outpaint,
                                   ("ImagePadForOutpaint",)),
    "LoadImageMask": Mapping(("image", "channel", "upload"),
                             _one_to_one("LoadImageMask", {}, {"image": "image", "channel": "channel"}, ("mask",),
                                         {"image": _image_file_name}),
                             ("LoadImageMask",)),
    "ImageToMask": _same("ImageToMask", ("image",), ("channel",), ("mask",)),
    "MaskToImage": _same("MaskToImage", ("mask",), (), ("image",)),
    "SolidMask": _same("SolidMask", (), ("value", "width", "height"), ("mask",)),
    "InvertMask": _same("InvertMask", ("mask",), (), ("mask",)),
    "FeatherMask": _same("FeatherMask", ("mask",), ("left", "top", "right", "bottom"), ("mask",)),
    "GrowMask": _same("GrowMask", ("mask",), ("expand", "tapered_corners"), ("mask",)),
    "ThresholdMask": _same("ThresholdMask", ("mask",), ("value",), ("mask",)),
    "MaskComposite": _same("MaskComposite", ("destination", "source"), ("x", "y", "operation"), ("mask",)),
    "MaskPreview": Mapping((), _one_to_one("PreviewMask", {"mask": "mask"}, {}, ("images",)), ("PreviewMask",)),
    "LatentComposite": Mapping(
        ("x", "y", "feather"),
        _one_to_one("LatentComposite", {"samples_to": "destination", "samples_from": "source"},
                    {"x": "x", "y": "y", "feather": "feather"}, ("latent",)), ("LatentComposite",)),
    "LatentBlend": Mapping(("blend_factor",),
                           _one_to_one("LatentBlend", {"samples1": "first", "samples2": "second"},
                                       {"blend_factor": "blend_factor"}, ("latent",)), ("LatentBlend",)),
    "LatentCrop": Mapping(("width", "height", "x", "y"),
                          _one_to_one("LatentCrop", {"samples": "latent"}, {n: n for n in ("width", "height", "x", "y")},
                                      ("latent",)), ("LatentCrop",)),
    "LatentAdd": _same("LatentAdd", ("samples1", "samples2"), (), ("latent",)),
    "LatentSubtract": _same("LatentSubtract", ("samples1", "samples2"), (), ("latent",)),
    "LatentMultiply": _same("LatentMultiply", ("samples",), ("multiplier",), ("latent",)),
    "LatentCompositeMasked": _same("LatentCompositeMasked", ("destination", "source", "mask"), ("x", "y", "resize_source"),
                                   ("latent",)),
    "LatentFromBatch": Mapping(("batch_index", "length"),
                               _one_to_one("LatentFromBatch", {"samples": "latent"},
                                           {"batch_index": "batch_index", "length": "length"}, ("latent",)),
                               ("LatentFromBatch",)),
    "RepeatLatentBatch": Mapping(("amount",), _one_to_one("RepeatLatentBatch", {"samples": "latent"}, {"amount": "amount"},
                                                          ("latent",)), ("RepeatLatentBatch",)),
    "SetLatentNoiseMask": Mapping((), _one_to_one("SetLatentNoiseMask", {"samples": "latent", "mask": "mask"}, {},
                                                  ("latent",)), ("SetLatentNoiseMask",)),
    "ConditioningZeroOut": _same("ConditioningZeroOut", ("conditioning",), (), ("conditioning",)),
    # ComfyUI's Concat appends conditioning_from's tokens to conditioning_to's: our Combine.
    "ConditioningConcat": Mapping((), _one_to_one("ConditioningCombine", {"conditioning_to": "a", "conditioning_from": "b"},
                                                  {}, ("conditioning",)), ("ConditioningCombine",)),
    "SamplerCustom": Mapping(("add_noise", "noise_seed", "cfg"), _build_sampler_custom, ("Noise", "DisableNoise", "CFG", "Sampler")),
    "SamplerEulerAncestral": Mapping(("eta", "s_noise"), _build_folded, ()),
    "SamplerLMS": Mapping(("order",), _build_folded, ()),
    "SamplerDPMPP_2M_SDE": Mapping(("solver_type", "eta", "s_noise", "noise_device"), _build_folded, ()),
    "SamplerDPMPP_3M_SDE": Mapping(("eta", "s_noise", "noise_device"), _build_folded, ()),
    "SamplerDPMPP_SDE": Mapping(("eta", "s_noise", "r", "noise_device"), _build_folded, ()),
    "SDTurboScheduler": Mapping(("steps", "denoise"), _build_folded, ()),
    "CheckpointLoader": Mapping(("config_name", "ckpt_name"), _build_checkpoint_with_config, ("Checkpoint",)),
    "ConditioningSetArea": _same("ConditioningSetArea", ("conditioning",), ("width", "height", "x", "y", "strength"),
                                 ("conditioning",)),
    "ConditioningSetTimestepRange": _same("ConditioningSetTimestepRange", ("conditioning",), ("start", "end"),
                                          ("conditioning",)),
    "Canny": _same("Canny", ("image",), ("low_threshold", "high_threshold"), ("image",)),
    "ModelSamplingDiscrete": Mapping(("sampling", "zsnr"), _build_model_sampling, ("ModelSampling",)),
    "ModelMergeSimple": Mapping(("ratio",), _merge("ModelMerge", "model", "blend", "ratio"), ("ModelMerge",)),
    "ModelMergeAdd": Mapping((), _merge("ModelMerge", "model", "add", ""), ("ModelMerge",)),
    "ModelMergeSubtract": Mapping(("multiplier",), _merge("ModelMerge", "model", "subtract", "multiplier"), ("ModelMerge",)),
    "CLIPMergeSimple": Mapping(("ratio",), _merge("CLIPMerge", "clip", "blend", "ratio"), ("CLIPMerge",)),
    "CLIPMergeAdd": Mapping((), _merge("CLIPMerge", "clip", "add", ""), ("CLIPMerge",)),
    "CLIPMergeSubtract": Mapping(("multiplier",), _merge("CLIPMerge", "clip", "subtract", "multiplier"), ("CLIPMerge",)),
    "VAEDecodeTiled": Mapping(("tile_size", "overlap", "temporal_size", "temporal_overlap"), _build_vae_decode_tiled,
                              ("VAEDecode",)),
    "VAEEncodeTiled": Mapping(("tile_size", "overlap", "temporal_size", "temporal_overlap"),
                              _one_to_one("VAEEncode", {"pixels": "image", "vae": "vae"}, {}, ("latent",),
                                          fixed={"crop_to_fit": True}), ("VAEEncode",)),
})

# Built-in ComfyUI node types nodeflow refuses on purpose, with the reason the import
# error gives (docs/comfyui.md lists them; a test keeps the two in step).
REFUSED: dict[str, str] = {}

# ------------------------------------ latent, image and mask built-ins (issue 11, latentimg)
MAPPINGS.update({
    "LatentBatch": _same("LatentBatch", ("samples1", "samples2"), (), ("latent",)),
    "LatentInterpolate": _same("LatentInterpolate", ("samples1", "samples2"), ("ratio",), ("latent",)),
    "LatentFlip": Mapping(("flip_method",), _one_to_one("LatentFlip", {"samples": "latent"},
                                                        {"flip_method": "flip_method"}, ("latent",)), ("LatentFlip",)),
    "LatentRotate": Mapping(("rotation",), _one_to_one("LatentRotate", {"samples": "latent"}, {"rotation": "rotation"},
                                                       ("latent",)), ("LatentRotate",)),
    "LatentBatchSeedBehavior": Mapping(
        ("seed_behavior",), _one_to_one("LatentBatchSeedBehavior", {"samples": "latent"},
                                        {"seed_behavior": "seed_behavior"}, ("latent",)), ("LatentBatchSeedBehavior",)),
    "LatentConcat": _same("LatentConcat", ("samples1", "samples2"), ("dim",), ("latent",)),
    "LatentCut": Mapping(("dim", "index", "amount"),
                         _one_to_one("LatentCut", {"samples": "latent"}, {n: n for n in ("dim", "index", "amount")},
                                     ("latent",)), ("LatentCut",)),
    "ImageScaleToMaxDimension": Mapping(
        ("upscale_method", "largest_size"),
        _one_to_one("ImageScaleToMaxDimension", {"image": "image"},
                    {"upscale_method": "method", "largest_size": "largest_size"}, ("image",),
                    {"upscale_method": IMAGE_METHODS.__getitem__}), ("ImageScaleToMaxDimension",)),
    "ImageRotate": _same("ImageRotate", ("image",), ("rotation",), ("image",)),
    "ResizeAndPadImage": Mapping(
        ("target_width", "target_height", "padding_color", "interpolation"),
        _one_to_one("ResizeAndPadImage", {"image": "image"},
                    {"target_width": "target_width", "target_height": "target_height", "padding_color": "padding_color",
                     "interpolation": "method"}, ("image",), {"interpolation": IMAGE_METHODS.__getitem__}),
        ("ResizeAndPadImage",)),
    "ImageStitch": _same("ImageStitch", ("image1", "image2"),
                         ("direction", "match_image_size", "spacing_width", "spacing_color"), ("image",)),
    "ImageAddNoise": _same("ImageAddNoise", ("image",), ("seed", "strength"), ("image",)),
    "GetImageSize": _same("GetImageSize", ("image",), (), ("width", "height", "batch_size")),
    "CropMask": _same("CropMask", ("mask",), ("x", "y", "width", "height"), ("mask",)),
    "ImageColorToMask": _same("ImageColorToMask", ("image",), ("color",), ("mask",)),
    "Morphology": _same("Morphology", ("image",), ("operation", "kernel_size"), ("image",)),
    "ImageRGBToYUV": _same("ImageRGBToYUV", ("image",), (), ("y", "u", "v")),
    "ImageYUVToRGB": Mapping((), _one_to_one("ImageYUVToRGB", {"Y": "y", "U": "u", "V": "v"}, {}, ("image",)),
                             ("ImageYUVToRGB",)),
})
# ---------------------------------- end of latent, image and mask built-ins

# ===================================== end of comfy-import block


def _build_gligen_text_box(b: Builder, c: ComfyNode) -> None:
    """ComfyUI grounds every step and gives the negative the positive's boxes: say so on
    our node, whose defaults follow diffusers' pipeline instead."""
    values: dict[str, Any] = {"grounded_steps": 1.0, "negative": "same boxes"}
    for name in ("text", "width", "height", "x", "y"):
        b.value(c, name, values, name)
    node_id = b.add(c, "GLIGENTextBoxApply", values=values)
    for name in ("conditioning_to", "clip", "gligen_textbox_model"):
        b.link(c, name, node_id, name)
    b.output(c, 0, node_id, "conditioning")


# ------------------------------------------------ models of other kinds (issue 11)
# VAE files, LoRAs, ControlNets, ...: loaders and appliers onto nodeflow's own nodes.
MODEL_MAPPINGS: dict[str, Mapping] = {
    "VAELoader": Mapping(("vae_name",), _one_to_one("VAELoader", {}, {"vae_name": "vae_name"}, ("vae",)),
                         ("VAELoader",)),
    "LoraLoader": Mapping(
        ("lora_name", "strength_model", "strength_clip"),
        _one_to_one("LoRA", {"model": "model", "clip": "clip"},
                    {"lora_name": "lora_name", "strength_model": "strength_model", "strength_clip": "strength_clip"},
                    ("model", "clip")), ("LoRA",)),
    "LoraLoaderModelOnly": Mapping(
        ("lora_name", "strength_model"),
        _one_to_one("LoRAModelOnly", {"model": "model"}, {"lora_name": "lora_name", "strength_model": "strength_model"},
                    ("model",)), ("LoRAModelOnly",)),
    "ControlNetLoader": Mapping(
        ("control_net_name",),
        _one_to_one("ControlNetLoader", {}, {"control_net_name": "control_net_name"}, ("control_net",)),
        ("ControlNetLoader",)),
    # Its model input only serves "difference" ControlNets, which the loader refuses by name.
    "DiffControlNetLoader": Mapping(
        ("control_net_name",),
        _one_to_one("ControlNetLoader", {}, {"control_net_name": "control_net_name"}, ("control_net",)),
        ("ControlNetLoader",)),
    "ControlNetApply": Mapping(
        ("strength",),
        _one_to_one("ControlNetApply", {"conditioning": "conditioning", "control_net": "control_net", "image": "image"},
                    {"strength": "strength"}, ("conditioning",)), ("ControlNetApply",)),
    "ControlNetApplyAdvanced": Mapping(
        ("strength", "start_percent", "end_percent"),
        _one_to_one("ControlNetApplyAdvanced",
                    {"positive": "positive", "negative": "negative", "control_net": "control_net", "image": "image",
                     "vae": "vae"},
                    {"strength": "strength", "start_percent": "start_percent", "end_percent": "end_percent"},
                    ("positive", "negative")), ("ControlNetApplyAdvanced",)),
    "SetUnionControlNetType": Mapping(
        ("type",), _one_to_one("SetUnionControlNetType", {"control_net": "control_net"}, {"type": "control_type"},
                               ("control_net",)), ("SetUnionControlNetType",)),
    "VAEEncodeForInpaint": Mapping(
        ("grow_mask_by",),
        _one_to_one("VAEEncodeForInpaint", {"pixels": "image", "vae": "vae", "mask": "mask"},
                    {"grow_mask_by": "grow_mask_by"}, ("latent",), fixed={"crop_to_fit": True}), ("VAEEncodeForInpaint",)),
    "InpaintModelConditioning": Mapping(
        ("noise_mask",),
        _one_to_one("InpaintModelConditioning",
                    {"positive": "positive", "negative": "negative", "vae": "vae", "pixels": "image", "mask": "mask"},
                    {"noise_mask": "noise_mask"}, ("positive", "negative", "latent"), fixed={"crop_to_fit": True}),
        ("InpaintModelConditioning",)),
    "InstructPixToPixConditioning": Mapping(
        (), _one_to_one("InstructPixToPixConditioning",
                        {"positive": "positive", "negative": "negative", "vae": "vae", "pixels": "pixels"}, {},
                        ("positive", "negative", "latent")), ("InstructPixToPixConditioning",)),
    "CLIPTextEncodeSDXL": Mapping(
        ("width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g", "text_l"),
        _one_to_one("TextEncoderSDXL", {"clip": "clip"},
                    {name: name for name in ("width", "height", "crop_w", "crop_h", "target_width", "target_height",
                                             "text_g", "text_l")}, ("conditioning",)), ("TextEncoderSDXL",)),
    "CLIPTextEncodeSDXLRefiner": Mapping(
        ("ascore", "width", "height", "text"),
        _one_to_one("TextEncoderSDXLRefiner", {"clip": "clip"},
                    {"ascore": "ascore", "width": "width", "height": "height", "text": "text"}, ("conditioning",)),
        ("TextEncoderSDXLRefiner",)),
    "UpscaleModelLoader": Mapping(
        ("model_name",), _one_to_one("UpscaleModelLoader", {}, {"model_name": "model_name"}, ("upscale_model",)),
        ("UpscaleModelLoader",)),
    "ImageUpscaleWithModel": Mapping(
        (), _one_to_one("ImageUpscaleWithModel", {"upscale_model": "upscale_model", "image": "image"}, {}, ("image",)),
        ("ImageUpscaleWithModel",)),
    "CLIPVisionLoader": Mapping(("clip_name",), _one_to_one("CLIPVisionLoader", {}, {"clip_name": "clip_name"},
                                                            ("clip_vision",)), ("CLIPVisionLoader",)),
    "CLIPVisionEncode": Mapping(
        ("crop",), _one_to_one("CLIPVisionEncode", {"clip_vision": "clip_vision", "image": "image"}, {"crop": "crop"},
                               ("clip_vision_output",)), ("CLIPVisionEncode",)),
    "unCLIPCheckpointLoader": Mapping(
        ("ckpt_name",), _one_to_one("UnCLIPCheckpoint", {}, {"ckpt_name": "checkpoint"},
                                    ("model", "clip", "vae", "clip_vision")), ("UnCLIPCheckpoint",)),
    "unCLIPConditioning": Mapping(
        ("strength", "noise_augmentation"),
        _one_to_one("UnCLIPConditioning", {"conditioning": "conditioning", "clip_vision_output": "clip_vision_output"},
                    {"strength": "strength", "noise_augmentation": "noise_augmentation"}, ("conditioning",)),
        ("UnCLIPConditioning",)),
    "GLIGENLoader": Mapping(("gligen_name",), _one_to_one("GLIGENLoader", {}, {"gligen_name": "gligen_name"}, ("gligen",)),
                            ("GLIGENLoader",)),
    "GLIGENTextBoxApply": Mapping(("text", "width", "height", "x", "y"), _build_gligen_text_box, ("GLIGENTextBoxApply",)),
}
MAPPINGS.update(MODEL_MAPPINGS)
REFUSED.update({
    "StyleModelLoader": "T2I style models are not supported: diffusers has no class for them",
    "StyleModelApply": "T2I style models are not supported: diffusers has no class for them",
    "HypernetworkLoader": "hypernetworks are not supported: diffusers has no class for them",
})
# ---------------------------------------------- end of models of other kinds

# ------------------------------------------- a model's parts in their own files (issue 11)
# UNETLoader's weight_dtype: nodeflow loads the weights at the run's precision (the UNet
# node's dtype auto), fp8 included (docs/comfyui.md).
UNET_WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
# The one text encoder type of each loader that is an SD-family model; every other type
# (sd3, flux, wan, ...) is another model family, refused naming the field.
_CLIP_TYPES = {"CLIPLoader": "stable_diffusion", "DualCLIPLoader": "sdxl"}


def _build_unet_loader(b: Builder, c: ComfyNode) -> None:
    values: dict[str, Any] = {}
    b.value(c, "unet_name", values, "unet")
    dtype = b.resolved(c, "weight_dtype")
    if dtype is not None and dtype not in UNET_WEIGHT_DTYPES:
        b.problem(c, f"weight_dtype {_show(dtype)} has no nodeflow equivalent")
    node_id = b.add(c, "UNet", values=values)
    b.output(c, 0, node_id, "model")


def _build_clip_loader(b: Builder, c: ComfyNode) -> None:
    wanted = _CLIP_TYPES[c.type]
    kind = b.resolved(c, "type")
    if kind is not None and kind != wanted:
        b.problem(c, f"type {_show(kind)} has no nodeflow equivalent: only {wanted!r} (SD 1.x/2.x/XL text "
                     "encoders) is; the other types load other model families")
        return
    values: dict[str, Any] = {}
    if c.type == "CLIPLoader":
        b.value(c, "clip_name", values, "clip_name")
        node_id = b.add(c, "TextEncoderLoader", values=values)
    else:
        b.value(c, "clip_name1", values, "clip_name1")
        b.value(c, "clip_name2", values, "clip_name2")
        node_id = b.add(c, "DualTextEncoderLoader", values=values)
    b.output(c, 0, node_id, "clip")


MAPPINGS.update({
    "UNETLoader": Mapping(("unet_name", "weight_dtype"), _build_unet_loader, ("UNet",)),
    "CLIPLoader": Mapping(("clip_name", "type", "device"), _build_clip_loader, ("TextEncoderLoader",)),
    "DualCLIPLoader": Mapping(("clip_name1", "clip_name2", "type", "device"), _build_clip_loader,
                              ("DualTextEncoderLoader",)),
})
# ---------------------------------------------- end of a model's parts in their own files

# ------------------------------------------------ model patches (issue 11)
# FreeU (the paper's first version) and FreeU_V2 are one nodeflow node with a variant, whose
# backbone defaults are v2's: a v1 node missing them gets v1's.
_FREEU_WIDGETS = {name: name for name in ("b1", "b2", "s1", "s2")}


MAPPINGS.update({
    "RescaleCFG": Mapping(("multiplier",), _one_to_one("RescaleCFG", {"model": "model"}, {"multiplier": "multiplier"},
                                                       ("model",)), ("RescaleCFG",)),
    "FreeU": Mapping(tuple(_FREEU_WIDGETS), _one_to_one("FreeU", {"model": "model"}, _FREEU_WIDGETS, ("model",),
                                                        fixed={"variant": "v1", "b1": 1.1, "b2": 1.2}), ("FreeU",)),
    "FreeU_V2": Mapping(tuple(_FREEU_WIDGETS), _one_to_one("FreeU", {"model": "model"}, _FREEU_WIDGETS, ("model",),
                                                           fixed={"variant": "v2"}), ("FreeU",)),
    "PerturbedAttentionGuidance": Mapping(
        ("scale",), _one_to_one("PerturbedAttentionGuidance", {"model": "model"}, {"scale": "scale"}, ("model",)),
        ("PerturbedAttentionGuidance",)),
    "SelfAttentionGuidance": Mapping(
        ("scale", "blur_sigma"),
        _one_to_one("SelfAttentionGuidance", {"model": "model"}, {"scale": "scale", "blur_sigma": "blur_sigma"},
                    ("model",)), ("SelfAttentionGuidance",)),
    "PatchModelAddDownscale": Mapping(
        ("block_number", "downscale_factor", "start_percent", "end_percent", "downscale_after_skip", "downscale_method",
         "upscale_method"),
        _one_to_one("DeepShrink", {"model": "model"},
                    {name: name for name in ("block_number", "downscale_factor", "start_percent", "end_percent",
                                             "downscale_after_skip", "downscale_method", "upscale_method")},
                    ("model",), {"downscale_method": UPSCALE_METHODS.__getitem__, "upscale_method": UPSCALE_METHODS.__getitem__}),
        ("DeepShrink",)),
    "PerpNegGuider": Mapping(
        ("cfg", "neg_scale"),
        _one_to_one("PerpNegGuider", {"model": "model", "positive": "positive", "negative": "negative",
                                      "empty_conditioning": "empty_conditioning"},
                    {"cfg": "scale", "neg_scale": "neg_scale"}, ("guider",)), ("PerpNegGuider",)),
    "DualCFGGuider": _same("DualCFGGuider", ("model", "cond1", "cond2", "negative"),
                           ("cfg_conds", "cfg_cond2_negative", "style"), ("guider",)),
    "PerpNeg": Mapping(
        ("neg_scale",), _one_to_one("PerpNeg", {"model": "model", "empty_conditioning": "empty_conditioning"},
                                    {"neg_scale": "neg_scale"}, ("model",)), ("PerpNeg",)),
    "UNetSelfAttentionMultiply": _same("UNetSelfAttentionMultiply", ("model",), ("q", "k", "v", "out"), ("model",)),
    "UNetCrossAttentionMultiply": _same("UNetCrossAttentionMultiply", ("model",), ("q", "k", "v", "out"), ("model",)),
    "Epsilon Scaling": Mapping(("scaling_factor",), _one_to_one("EpsilonScale", {"model": "model"},
                                                                {"scaling_factor": "scaling_factor"}, ("model",)),
                               ("EpsilonScale",)),
    # Older files have no strength widget: nodeflow's default (1) is what ComfyUI did then.
    "DifferentialDiffusion": Mapping(
        ("strength",), _one_to_one("DifferentialDiffusion", {"model": "model"}, {"strength": "strength"}, ("model",)),
        ("DifferentialDiffusion",)),
})
# ---------------------------------------------- end of model patches


def _checkpoint_prefix(prefix: Any) -> Any:
    """ComfyUI's CheckpointSave prefix names its folder too ("checkpoints/ComfyUI"); nodeflow's
    always writes into checkpoints/, so that folder is dropped and the rest made a file name
    as SaveImage's is (:func:`_output_prefix`)."""
    if isinstance(prefix, str):
        prefix = re.sub(r"^checkpoints[/\\]+", "", prefix.strip())
    return _output_prefix(prefix)


MAPPINGS["TorchCompileModel"] = Mapping(("backend",), _build_folded, ())
MAPPINGS["CheckpointSave"] = Mapping(
    ("filename_prefix",), _one_to_one("CheckpointSave", {"model": "model", "clip": "clip", "vae": "vae"},
                                      {"filename_prefix": "filename_prefix"}, (), {"filename_prefix": _checkpoint_prefix}),
    ("CheckpointSave",))

# Regional conditioning, sigma schedules and block merges (issue 11): comfyui_regions.py.
from nodes.diffusion.comfyui_regions import REGION_MAPPINGS, REGION_REFUSED  # noqa: E402  (needs the helpers above)

MAPPINGS.update(REGION_MAPPINGS)
REFUSED.update(REGION_REFUSED)

# Looked through when following a link; CLIPSetLastLayer is folded into TextEncoder.clip_skip;
# TorchCompileModel compiles the model it passes on, which changes speed, not the image.
PASS_THROUGH = {"Reroute", "CLIPSetLastLayer", "TorchCompileModel"}
# Nodes of ComfyUI's editor with no run-time meaning, and their widget names.
PRIMITIVES = {"PrimitiveNode", "PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline",
              "PrimitiveBoolean"}
UI_ONLY: dict[str, tuple[str, ...]] = {
    "Reroute": (),
    **{name: ("value",) for name in PRIMITIVES},
}


# ===================================================================== converting
class ComfyUIImporter:
    name = "ComfyUI"
    png_keys = ("workflow", "prompt")

    def sniff(self, data: Any) -> str | None:
        return sniff(data)

    def describe_types(self) -> dict[str, dict[str, tuple[str, ...]]]:
        """The ComfyUI node types this importer converts: their widget names and the
        nodeflow types they become (``nodeflow serve`` lists them in /object_info)."""
        types = {name: {"widgets": spec.widgets, "creates": spec.creates} for name, spec in MAPPINGS.items()}
        types.update({name: {"widgets": widgets, "creates": ()} for name, widgets in UI_ONLY.items()})
        return types

    def convert(self, data: Any, registry: NodeRegistry) -> dict[str, Any]:
        described = sniff(data) or "ComfyUI workflow"
        data = unwrap_prompt_body(data)
        needed = {t for spec in MAPPINGS.values() for t in spec.creates}
        missing = sorted(t for t in needed if registry.get(t) is None)
        if missing:
            raise WorkflowError(
                f"this looks like a ComfyUI workflow ({described}), but the diffusion node types it imports to "
                f"are not installed: {', '.join(missing)}"
            )
        count = len(data["nodes"]) if isinstance(data.get("nodes"), list) else len(data)
        if count > MAX_NODES:
            raise WorkflowError(f"the ComfyUI workflow has {count} nodes; the limit is {MAX_NODES}")
        if isinstance(data.get("nodes"), list):
            return convert_nodes(read_ui(data), registry, data)
        malformed: list[str] = []
        return convert_nodes(read_api(data, malformed), registry, None, malformed)


def convert_nodes(comfy: list[ComfyNode], registry: NodeRegistry, ui_data: dict[str, Any] | None,
                  malformed: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    nodes: dict[str, ComfyNode] = {}
    for node in comfy:
        if node.id in nodes:
            raise WorkflowError(f"the ComfyUI workflow has two nodes with id {node.id}")
        nodes[node.id] = node
    active = [n for n in comfy if n.mode != "muted"]  # ComfyUI drops muted nodes and their links
    normalise_model_names(active)  # "sdxl\\model.safetensors" saved on Windows names sdxl/model.safetensors

    unsupported: dict[str, list[str]] = {}
    for node in active:
        spec = MAPPINGS.get(node.type)
        if node.type in UI_ONLY:
            continue
        if spec is None or any(registry.get(t) is None for t in spec.creates):
            unsupported.setdefault(node.type, []).append(node.id)

    builder = Builder(nodes)
    for node in active:
        spec = MAPPINGS.get(node.type)
        if spec is not None and node.type not in unsupported:
            spec.build(builder, node)
    links = builder.links()
    _give_latents_their_model(builder.nodes, links)

    errors = [
        f"{type_name} (node{'s' if len(ids) > 1 else ''} {', '.join(ids)})"
        + (f": {REFUSED[type_name]}" if type_name in REFUSED else "")
        for type_name, ids in sorted(unsupported.items())
    ]
    message = []
    if malformed:
        message.append("malformed nodes: " + "; ".join(malformed))
    if errors:
        message.append("unsupported node types: " + "; ".join(errors))
    if builder.problems:
        message.append("unsupported values: " + "; ".join(builder.problems))
    if message:
        raise WorkflowError("cannot import this ComfyUI workflow, " + ". ".join(message))

    ui: dict[str, Any] = {}
    placements = builder.placements if ui_data is not None else _layout(builder.nodes, links)
    if placements:
        ui["nodes"] = placements
    if ui_data is not None:
        groups = [_group(g) for g in _list(ui_data.get("groups")) if isinstance(g, dict)]
        groups += _group_node_frames(active, builder.placements)
        if any(groups):
            ui["groups"] = [g for g in groups if g]
    document: dict[str, Any] = {"format": WORKFLOW_FORMAT, "version": WORKFLOW_VERSION, "nodes": builder.nodes,
                                "links": links}
    if ui:
        document["ui"] = ui
    return document


def _give_latents_their_model(nodes: list[dict[str, Any]], links: list[dict[str, Any]]) -> None:
    """ComfyUI's EmptyLatentImage assumes 4 channels and 8x; nodeflow's EmptyLatent asks the
    model. Link it to the model of the guider whose sampler uses the latent, so a model of
    another family (e.g. the bundled one) gets the right latent shape; SD models get the same."""
    by_target = {(l["to"]["node"], l["to"]["input"]): l["from"] for l in links}
    types = {n["id"]: n["type"] for n in nodes}
    for link in list(links):
        latent_source, target = link["from"]["node"], link["to"]["node"]
        if types.get(latent_source) != "EmptyLatent" or types.get(target) != "Sampler" or link["to"]["input"] != "latent":
            continue
        if (latent_source, "model") in by_target or (latent_source, "vae") in by_target:
            continue
        guider = by_target.get((target, "guider"))
        model = by_target.get((guider["node"], "model")) if guider else None
        if model is not None:
            links.append({"from": dict(model), "to": {"node": latent_source, "input": "model"}})
            by_target[(latent_source, "model")] = model


def _layout(nodes: list[dict[str, Any]], links: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Positions for an API-format file (which has none): columns by depth, left to right."""
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(n["id"] for n in nodes)
    graph.add_edges_from((l["from"]["node"], l["to"]["node"]) for l in links)
    condensed = nx.condensation(graph)  # a cycle (the validator reports it) shares one column
    depth: dict[int, int] = {}
    for component in nx.topological_sort(condensed):
        depth[component] = 1 + max((depth[p] for p in condensed.predecessors(component)), default=-1)
    column_of = {node_id: depth[c] for node_id, c in condensed.graph["mapping"].items()}
    rows: dict[int, int] = {}
    placements = {}
    for node in nodes:
        column = column_of[node["id"]]
        row = rows[column] = rows.get(column, -1) + 1
        placements[node["id"]] = {"pos": [column * 320.0, row * 180.0]}
    return placements


_FRAME_NODE_SIZE = (320.0, 130.0)  # about a node's size in the editor, for a frame's far edges
_FRAME_MARGIN, _FRAME_TITLE, _FRAME_NESTING = 12.0, 28.0, 24.0


def _group_node_frames(nodes: list[ComfyNode], placements: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One titled frame (a ``ui.groups`` entry) around the nodes of each inlined group node
    instance, so its title is kept where the editor shows it; a group around a group is the
    wider frame."""
    members: dict[str, tuple[str, set[str], int]] = {}  # instance id -> title, ComfyUI ids, levels inside
    for node in nodes:
        parts = node.id.split(":")
        for depth, title in enumerate(reversed(node.groups), 1):
            if depth >= len(parts):
                break
            instance = ":".join(parts[:-depth])
            title_, ids, inside = members.get(instance, (title, set(), 0))
            ids.add(node.id)
            members[instance] = (title_, ids, max(inside, depth - 1))
    frames = []
    for title, ids, inside in members.values():
        points = [tuple(placed["pos"]) for node_id, placed in placements.items()
                  if node_id in ids or node_id.rsplit(".", 1)[0] in ids]
        if not points:
            continue  # positions unknown (an instance saved without one)
        margin = _FRAME_MARGIN + _FRAME_NESTING * inside
        left, top = min(p[0] for p in points) - margin, min(p[1] for p in points) - margin - _FRAME_TITLE
        right = max(p[0] for p in points) + _FRAME_NODE_SIZE[0] + margin
        bottom = max(p[1] for p in points) + _FRAME_NODE_SIZE[1] + margin
        frames.append({"title": title, "pos": [left, top], "size": [right - left, bottom - top]})
    return frames


def _group(raw: dict[str, Any]) -> dict[str, Any] | None:
    bounding = raw.get("bounding")
    if not (isinstance(bounding, list) and len(bounding) == 4 and all(_is_number(v) for v in bounding)):
        return None
    group = {"title": raw.get("title") if isinstance(raw.get("title"), str) else "",
             "pos": [bounding[0], bounding[1]], "size": [bounding[2], bounding[3]]}
    if isinstance(raw.get("color"), str):
        group["color"] = raw["color"]
    return group


def _show(value: Any) -> str:
    if _is_int(value) and value.bit_length() > 128:  # repr would fail past 4,300 digits
        return _show_value(value)
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


IMPORTER = ComfyUIImporter()
