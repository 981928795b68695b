"""The import inbox: only its own folders and zip files can be imported from the dashboard."""

from __future__ import annotations

import os

import pytest

from ecotaxa_core.import_inbox import NotInInbox, inbox_entries, inbox_entry


def test_only_the_inbox_entries_are_offered_and_accepted(tmp_path):
    inbox = tmp_path / "imports"
    (inbox / "cruise_1").mkdir(parents=True)
    (inbox / "uvp6.zip").write_bytes(b"PK")
    (inbox / "notes.txt").write_text("not a bundle")
    (inbox / ".partial").mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, inbox / "link_out")  # a link leading out of the inbox
    (inbox / "inner").mkdir()
    os.symlink(inbox / "cruise_1", inbox / "inner_link")  # one that stays inside is fine

    assert inbox_entries(inbox) == ["cruise_1", "inner", "inner_link", "uvp6.zip"]
    assert inbox_entry(inbox, "uvp6.zip") == (inbox / "uvp6.zip").resolve()
    assert inbox_entry(inbox, "inner_link") == (inbox / "cruise_1").resolve()
    for hostile in ("link_out", "notes.txt", ".partial", "../elsewhere", str(outside),
                    "cruise_1/../../elsewhere", "", ".", "..", "missing", "cruise_1/sub"):
        with pytest.raises(NotInInbox, match="is not an entry of the import inbox"):
            inbox_entry(inbox, hostile)
    assert inbox_entries(tmp_path / "no_inbox") == []
