"""The shared cache folder and atomic folder writes (sdar.storage)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdar.envs.alfworld import offline_games_dir
from sdar.envs.search.build import default_data_dir
from sdar.models.packaged import resolve_cache_dir
from sdar.storage import atomic_directory, cache_root, publish_directory


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("SDAR_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "sdar"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root("search", "x") == tmp_path / "xdg" / "sdar" / "search" / "x"
    monkeypatch.setenv("SDAR_CACHE", "")  # empty counts as unset
    assert cache_root() == tmp_path / "xdg" / "sdar"
    monkeypatch.setenv("SDAR_CACHE", "~/mine")
    assert cache_root("alfworld") == tmp_path / "home" / "mine" / "alfworld"


def test_models_alfworld_and_search_share_the_cache_root(monkeypatch, tmp_path):
    monkeypatch.delenv("SDAR_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = tmp_path / "xdg" / "sdar"
    assert resolve_cache_dir() == root
    assert offline_games_dir("standard", 120, 0).parent == root / "alfworld"
    assert default_data_dir(0).parent == root / "search"


def test_atomic_directory_publishes_only_when_the_block_finishes(tmp_path):
    target = tmp_path / "deep" / "entry"
    with atomic_directory(target) as scratch:
        assert scratch.parent == target.parent and scratch.name.startswith(".tmp-entry-")
        (scratch / "a.txt").write_text("a")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "a"
    assert [p.name for p in target.parent.iterdir()] == ["entry"]


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_atomic_directory_leaves_nothing_when_the_block_raises(tmp_path, error):
    target = tmp_path / "entry"
    with pytest.raises(error), atomic_directory(target) as scratch:
        (scratch / "half.txt").write_text("half")
        raise error("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_two_writers_of_one_target_never_share_a_scratch_folder(tmp_path):
    # another writer with this process id (another container sharing the cache) is mid-write
    theirs = tmp_path / f".tmp-entry-{os.getpid()}"
    theirs.mkdir()
    (theirs / "half.txt").write_text("theirs")
    with atomic_directory(tmp_path / "entry") as scratch:
        assert scratch != theirs and scratch.name.startswith(f".tmp-entry-{os.getpid()}-")
        assert list(scratch.iterdir()) == []
        (scratch / "new.txt").write_text("new")
    assert sorted(p.name for p in (tmp_path / "entry").iterdir()) == ["new.txt"]
    assert (theirs / "half.txt").read_text() == "theirs"  # left alone


def test_replace_rewrites_an_existing_folder_and_keeps_it_on_failure(tmp_path):
    target = tmp_path / "iter_000001"
    with atomic_directory(target) as scratch:
        (scratch / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target, replace=True) as scratch:
        raise RuntimeError("disk full")
    assert (target / "old.txt").is_file()  # a failed rewrite does not touch the old one
    with atomic_directory(target, replace=True) as scratch:
        (scratch / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]


def test_without_replace_the_first_finished_writer_wins(tmp_path):
    target = tmp_path / "entry"
    with atomic_directory(target) as scratch:
        (scratch / "first.txt").write_text("first")
    other = tmp_path / "other-writer"
    other.mkdir()
    (other / "second.txt").write_text("second")
    assert publish_directory(other, target) == target
    assert sorted(p.name for p in target.iterdir()) == ["first.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


def test_publish_refuses_to_put_a_folder_over_a_file(tmp_path):
    (tmp_path / "entry").write_text("a file")
    folder = tmp_path / "built"
    folder.mkdir()
    with pytest.raises(OSError):
        publish_directory(folder, tmp_path / "entry")
    assert Path(tmp_path / "entry").read_text() == "a file"
