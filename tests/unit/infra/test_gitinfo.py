"""The code a run was made with: a real git repository in tmp_path, clean, changed, and outside git."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ttsops.infra.gitinfo import GitState, git_state, parse_dirty

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / ".gitignore").write_text("*.log\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "one")
    return tmp_path


def head(repo):
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


def test_a_clean_checkout_is_its_commit(repo):
    s = git_state(repo / "pkg" / "a.py")
    assert s == GitState(head(repo)) and not s.dirty and s.dirty_tag() == ""
    (repo / "run.log").write_text("ignored files do not count")
    assert not git_state(repo / "pkg").dirty


def test_local_changes_are_named_and_hashed(repo):
    (repo / "pkg" / "a.py").write_text("x = 2\n")
    one = git_state(repo)
    assert one.changed == ("pkg/a.py",) and one.changes_sha256 and one.commit == head(repo)
    assert parse_dirty(one.dirty_tag()) == one.changes_sha256[:16]
    assert one.dirty_tag().endswith(": 1 files: pkg/a.py")
    (repo / "pkg" / "b.py").write_text("y = 1\n")  # an untracked file is a change too
    two = git_state(repo)
    assert two.changed == ("pkg/a.py", "pkg/b.py") and two.changes_sha256 != one.changes_sha256
    (repo / "pkg" / "b.py").write_text("y = 2\n")  # its content counts, not only its name
    assert git_state(repo).changes_sha256 not in (one.changes_sha256, two.changes_sha256)
    (repo / "pkg" / "b.py").unlink()
    assert git_state(repo) == one  # the same changes, the same hash


def test_another_commit_is_another_state(repo):
    first = head(repo)
    (repo / "pkg" / "a.py").write_text("x = 3\n")
    git(repo, "commit", "-q", "-am", "two")
    assert git_state(repo).commit not in (None, first)


def test_outside_git_there_is_no_commit(tmp_path):
    s = git_state(tmp_path)
    assert s.commit is None and s.describe() == "not a git checkout"
    assert parse_dirty("") is None and parse_dirty(None) is None
