"""The editor's own small files (recent list, crash recovery) are read as strictly as
workflows: a damaged or hostile file is treated as absent, never as a crash at start-up."""

from __future__ import annotations

import pytest

from nodeflow.editor.userfiles import RecentFiles, Recovery


def test_recovery_round_trips(tmp_path):
    recovery = Recovery(tmp_path)
    recovery.save({"format": "nodeflow", "nodes": []}, "/home/me/a.json")
    assert recovery.load()["workflow"] == {"format": "nodeflow", "nodes": []}
    assert recovery.load()["source_path"] == "/home/me/a.json"


@pytest.mark.parametrize("text", [
    '{"workflow": {"x": NaN}}',
    '{"workflow": {"x": 1e999}}',
    '{"workflow": {"x": ' + "9" * 5000 + '}}',
    '{"workflow": ' * 100000,
    "\udcff",
])
def test_a_hostile_recovery_file_counts_as_none(tmp_path, text):
    (tmp_path / "recovery.json").write_text(text, encoding="utf-8", errors="surrogateescape")
    recovery = Recovery(tmp_path)
    assert recovery.load() is None
    assert not recovery.exists()


def test_a_damaged_recent_list_is_empty_and_is_rewritten(tmp_path):
    (tmp_path / "recent.json").write_text("[Infinity, ", encoding="utf-8")
    recent = RecentFiles(tmp_path)
    assert recent.list() == []
    recent.add(tmp_path / "w.json")
    assert recent.list() == [str((tmp_path / "w.json").resolve())]
