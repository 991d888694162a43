"""The README's node reference is generated from the declarations and must match them."""

from pathlib import Path

from nodeflow.docs import node_reference_markdown, render_readme
from nodeflow.model.registry import default_registry
from tests.support import ROOT



def test_readme_node_reference_matches_the_declarations():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render_readme(readme, default_registry()) == readme, "run `python -m nodeflow.docs` to regenerate"


def test_reference_shows_ranges_choices_and_tooltips():
    from tests.support.testpack import make_registry

    text = node_reference_markdown(make_registry())
    assert "#### `Multiply`" in text
    assert "| `b` | float | 1.0 | -100 .. 100 |" in text
    assert "as is, upper" in text
    assert "the number" in text  # tooltip of Number.value
    assert "*never cached*" in text  # Random is non-deterministic
