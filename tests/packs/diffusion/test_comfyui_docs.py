"""docs/comfyui.md's node table is the importer's mapping, row for row.

Every ComfyUI type the importer maps (MAPPINGS), removes (UI_ONLY) or refuses on purpose
(REFUSED) has one row; the row names the nodeflow node types the mapping creates, or
says **refused** with the same reason the import error gives.
"""

from __future__ import annotations

import re

from nodes.diffusion.comfyui import MAPPINGS, REFUSED, UI_ONLY
from tests.support import ROOT


def _rows() -> dict[str, tuple[str, str]]:
    text = (ROOT / "docs" / "comfyui.md").read_text()
    section = text.split("## Node mapping", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("ComfyUI node", "---") or set(cells[0]) <= {"-"}:
            continue
        for name in re.split(r",\s*", cells[0]):
            assert name not in rows, f"{name} has two rows"
            rows[name] = (cells[1], cells[2])
    return rows


def test_every_mapped_removed_or_refused_type_has_its_row_and_no_other_rows_exist():
    rows = _rows()
    known = set(MAPPINGS) | set(UI_ONLY) | set(REFUSED)
    assert sorted(known - set(rows)) == [], "add these types to docs/comfyui.md's node table"
    assert sorted(set(rows) - known) == [], "these rows name types the importer does not know"


def test_each_row_names_what_the_mapping_creates_or_why_it_is_refused():
    for name, (ours, notes) in _rows().items():
        if name in REFUSED:
            assert ours == "**refused**" and notes == REFUSED[name], name
        elif name in UI_ONLY or not MAPPINGS[name].creates:
            assert ours.startswith("("), f"{name}: a type that creates no node is written in parentheses"
        else:
            listed = set(re.split(r",\s*", ours))
            assert listed == set(MAPPINGS[name].creates), f"{name}: the row says {listed}, the code creates {MAPPINGS[name].creates}"


def test_every_mapped_comfyui_type_is_in_a_fixture():
    """Issue 11 asks for a ComfyUI fixture of every mapped node type; the stand-in test runs
    every fixture, so a mapped type without one is a mapping nothing runs."""
    import re

    from tests.support import FIXTURES

    seen: set[str] = set()
    for path in (FIXTURES / "comfyui").glob("*.json"):
        seen.update(re.findall(r'"(?:class_type|type)"\s*:\s*"([^"]+)"', path.read_text(encoding="utf-8")))
    missing = sorted(set(MAPPINGS) - seen)
    assert not missing, f"mapped ComfyUI types no fixture in tests/fixtures/comfyui uses: {missing}"
