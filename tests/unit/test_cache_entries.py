"""The entries of the worker's caches (bundles/cache_entries.py), counted while other threads and
processes stage, rename and remove them: the OCI cache's eviction once failed a study with
FileNotFoundError when a concurrent pull renamed its staging directory mid-count."""

from __future__ import annotations

import os

from modelops.bundles.cache_entries import complete_entries, size


def test_staging_directories_are_not_entries_even_with_their_marker(tmp_path):
    (tmp_path / "abc").mkdir()
    (tmp_path / "abc" / "entry.json").write_text("{}")
    (tmp_path / "abc" / "data").write_bytes(b"x" * 10)
    staging = tmp_path / ".pull-def-123"  # a pull writes its marker, then renames the directory into place
    staging.mkdir()
    (staging / "entry.json").write_text("{}")
    (tmp_path / "incomplete").mkdir()  # no marker yet
    assert complete_entries(tmp_path, "entry.json") == {"abc": 12}
    assert complete_entries(tmp_path / "none", "entry.json") == {}


def test_size_counts_regular_files_only_and_what_vanished_as_nothing(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"12345")
    os.symlink("/usr/bin/env", tmp_path / "d" / "python")  # a venv's interpreter: not the entry's bytes
    assert size(tmp_path / "d") == 5
    assert size(tmp_path / "renamed-away") == 0
