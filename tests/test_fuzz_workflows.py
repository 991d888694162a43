"""A bounded run of benchmarks/fuzz_workflows.py: random, mutated and malformed workflow
JSON, ComfyUI documents and PNGs end in a WorkflowError or a loaded workflow, never in
an uncaught exception. The full run (100,000+ inputs) is the script itself."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "fuzz_workflows.py"


def test_fuzzed_inputs_load_or_fail_with_a_workflow_error():
    spec = importlib.util.spec_from_file_location("fuzz_workflows", SCRIPT)
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    fuzz.run(examples=300, seed=0)
    assert fuzz.outcomes["loaded"] > 0 and fuzz.outcomes["refused"] > 0  # both paths were exercised
