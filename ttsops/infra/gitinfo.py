"""The code a run was made with: the git commit of a checkout and its local changes.

``git_state(path)`` reads the checkout that holds ``path`` (ttsops's own, for train.py): the commit,
the paths that differ from it (tracked changes, staged or not, and untracked files git does not
ignore) and a sha256 of those differences (``git diff HEAD --binary`` plus each untracked file's
name and bytes), so two dirty trees can be told apart or found identical. train.py records it
(tags ``git_commit``, ``git_dirty``); ``ttsops reproduce`` compares it with the tree it runs from.
Never raises: a directory outside git, or no git at all, gives ``commit=None``.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

UNKNOWN = "unknown"  # what train.py records as the commit outside a git checkout
CLEAN = ""  # what it records as git_dirty for a clean tree
_MAX_NAMED = 5  # changed paths named in a tag or message


@dataclass(frozen=True)
class GitState:
    commit: str | None  # None: not a git checkout (or git missing)
    changed: tuple[str, ...] = ()  # paths that differ from the commit
    changes_sha256: str | None = None  # of the differences; None when clean

    @property
    def dirty(self) -> bool:
        return bool(self.changed)

    def dirty_tag(self) -> str:
        """``""`` when clean, else ``"<sha256 prefix>: <n> files: a.py, b.py, ..."`` (see ``parse_dirty``)."""
        if not self.dirty:
            return CLEAN
        return f"{(self.changes_sha256 or '')[:16]}: {len(self.changed)} files: {_names(self.changed)}"

    def describe(self) -> str:
        if self.commit is None:
            return "not a git checkout"
        return self.commit[:12] + (f" with local changes to {_names(self.changed)}" if self.dirty else "")


def parse_dirty(tag: str | None) -> str | None:
    """The changes' sha256 prefix in a ``git_dirty`` tag; None for a clean tree (or no tag)."""
    if not tag:
        return None
    return tag.split(":", 1)[0].strip() or None


def _names(paths: tuple[str, ...]) -> str:
    more = f" and {len(paths) - _MAX_NAMED} more" if len(paths) > _MAX_NAMED else ""
    return ", ".join(paths[:_MAX_NAMED]) + more


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes] | None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc if proc.returncode == 0 else None


def git_state(path: str | Path) -> GitState:
    """Commit and local changes of the checkout holding ``path`` (a file or a directory)."""
    p = Path(path).resolve()
    cwd = p if p.is_dir() else p.parent
    head = _git(["rev-parse", "HEAD"], cwd)
    top = _git(["rev-parse", "--show-toplevel"], cwd)
    if head is None or top is None:
        return GitState(None)
    root = Path(top.stdout.decode().strip())
    diff = _git(["diff", "HEAD", "--binary"], root)
    names = _git(["diff", "HEAD", "--name-only", "-z"], root)
    untracked = _git(["ls-files", "--others", "--exclude-standard", "-z"], root)
    if diff is None or names is None or untracked is None:
        return GitState(head.stdout.decode().strip())
    new = sorted(n for n in untracked.stdout.decode().split("\0") if n)
    changed = tuple(sorted({*(n for n in names.stdout.decode().split("\0") if n), *new}))
    if not changed:
        return GitState(head.stdout.decode().strip())
    h = hashlib.sha256(diff.stdout)
    for name in new:
        h.update(b"\0untracked\0" + name.encode() + b"\0")
        try:
            h.update(hashlib.sha256((root / name).read_bytes()).digest())
        except OSError:  # vanished or unreadable: its name still counts
            pass
    return GitState(head.stdout.decode().strip(), changed, h.hexdigest())
