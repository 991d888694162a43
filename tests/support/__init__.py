"""What the tests share: a small node pack (testpack), tiny real diffusers models built in
code (tiny_models), and the repository's folders."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
FIXTURES = TESTS / "fixtures"
WORKFLOWS = ROOT / "workflows"


def host_context(**context):
    """A RunContext with the settings a host builds (the user's and the packs' model
    folders, e.g. the bundled "shapes" model), for tests that run one node directly."""
    from nodeflow import RunContext
    from nodeflow.host.settings import build_run_settings
    from nodeflow.model.registry import default_registry

    settings = build_run_settings(default_registry(), environ={"NODEFLOW_CONFIG_DIR": "/nonexistent"})
    return RunContext(settings=settings, **context)
