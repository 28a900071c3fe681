"""scripts/docsection.py: a script rewrites its own marked section of a docs file and nothing else."""

from __future__ import annotations

import pytest

from scripts.docsection import markers, replace_section, write_section


def test_section_replaces_only_its_own_text(tmp_path):
    start, end = markers("bench")
    other_start, other_end = markers("other")
    before = f"# Benchmarks\n\n{other_start}\nkeep me\n{other_end}\n\n"
    after = "\n\n## Later section\n\nkeep me too\n"
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(before + start + "\nold numbers\n" + end + after)

    write_section(path, "bench", "new numbers\n")
    expected = before + start + "\nnew numbers\n" + end + after
    assert path.read_text() == expected
    write_section(path, "bench", "new numbers")  # idempotent, trailing newlines or not
    assert path.read_text() == expected
    assert list(tmp_path.iterdir()) == [path]  # the temporary file is gone


def test_missing_file_and_missing_section_are_created(tmp_path):
    fresh = tmp_path / "docs" / "NEW.md"
    write_section(fresh, "a", "numbers a", header="# Title\n")
    write_section(fresh, "b", "numbers b")
    a, b = markers("a"), markers("b")
    assert fresh.read_text() == f"# Title\n\n{a[0]}\nnumbers a\n{a[1]}\n\n{b[0]}\nnumbers b\n{b[1]}\n"


def test_broken_markers_are_refused_and_the_file_kept(tmp_path):
    start, end = markers("bench")
    path = tmp_path / "B.md"
    path.write_text(f"text\n{end}\n{start}\n")
    with pytest.raises(ValueError, match="broken"):
        write_section(path, "bench", "new")
    assert path.read_text() == f"text\n{end}\n{start}\n"
    assert replace_section("", "bench", "x") == f"{start}\nx\n{end}\n"
