"""A bounded run of benchmarks/fuzz_workflows.py: random, mutated and malformed workflow
JSON, ComfyUI documents and PNGs end in a WorkflowError or a loaded workflow, never in
an uncaught exception. The full run (100,000+ inputs) is the script itself."""

from __future__ import annotations

from benchmarks import fuzz_workflows as fuzz


def test_fuzzed_inputs_load_or_fail_with_a_workflow_error():
    fuzz.run(examples=300, seed=0)
    assert fuzz.outcomes["loaded"] > 0 and fuzz.outcomes["refused"] > 0  # both paths were exercised
