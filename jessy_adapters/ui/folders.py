"""Which folders the dashboard may show, and turning a URL's key back into one of them.

A key is `<root index>/<path relative to that root>` (just `<root index>` when a root is itself
a run folder). Every segment must be a plain name: not empty, not starting with '.', so never
`.` or `..`, no slash, backslash, NUL or control character. A key is then joined to its root,
resolved with symlinks followed, and kept only if it still lies inside that root: a `..`, an
absolute path or a symlink out of the root is "not found", never the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

RUN = "run"
COMPARE = "compare"
SWEEP = "sweep"

MARKERS = ((RUN, ("run.json",)), (SWEEP, ("sweep.json",)),
           (COMPARE, ("compare.json", "compare-state.json")))
"""What makes a folder a run, a sweep or a compare folder (first match wins)."""

MAX_DEPTH = 6
"""Folders below a root searched for runs: root/compare-x/runs/<backend>/<run> is 4 deep."""
MAX_FOLDERS = 20000
"""Folders visited per root and scan, so a root pointed at a huge tree cannot stall a page."""

_BAD_SEGMENT = re.compile(r"[/\\\x00-\x1f\x7f]")


def valid_segment(name: str) -> bool:
    return bool(name) and len(name) <= 255 and not name.startswith(".") \
        and not _BAD_SEGMENT.search(name)


def valid_relative(text: str) -> list[str] | None:
    """TEXT's segments when it is a plain relative path (a/b/c), else None."""
    if not isinstance(text, str) or not text or text.startswith("/"):
        return None
    parts = text.split("/")
    return parts if all(valid_segment(p) for p in parts) else None


@dataclass(frozen=True)
class Found:
    """One run, compare or sweep folder under a root."""
    kind: str
    key: str
    path: Path
    group: str | None = None
    """Key of the compare or sweep folder this one lies in, if any."""


def kind_of(path: Path) -> str | None:
    for kind, names in MARKERS:
        if any(os.path.isfile(path / n) for n in names):
            return kind
    return None


class Roots:
    """The folders given with --runs; nothing outside them is ever read."""

    def __init__(self, paths):
        self.given = [Path(p) for p in paths]

    def real(self, index: int) -> Path | None:
        """Root INDEX as it resolves now (it may be created after the dashboard starts)."""
        try:
            real = self.given[index].resolve()
        except (OSError, RuntimeError):
            return None
        return real if real.is_dir() else None

    def describe(self) -> list[dict]:
        return [{"index": i, "path": str(p), "exists": self.real(i) is not None}
                for i, p in enumerate(self.given)]

    def resolve(self, key: str, kind: str | None = None) -> Path | None:
        """The folder KEY names, if it is inside its root (and of KIND when given)."""
        if not isinstance(key, str) or not key:
            return None
        head, slash, rest = key.partition("/")
        if not re.fullmatch(r"0|[1-9][0-9]{0,3}", head) or int(head) >= len(self.given) \
                or (slash and not rest):
            return None
        root = self.real(int(head))
        if root is None:
            return None
        real = inside(root, rest, Path.is_dir) if rest else root
        if real is None:
            return None
        if kind is not None and kind_of(real) != kind:
            return None
        return real

    def key_for(self, path: Path) -> str | None:
        """The key of PATH (resolved), if it lies inside one of the roots."""
        try:
            real = Path(path).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        for index in range(len(self.given)):
            root = self.real(index)
            if root is not None and real.is_relative_to(root):
                rel = real.relative_to(root).as_posix()
                key = str(index) if rel == "." else f"{index}/{rel}"
                return key if self.resolve(key) == real else None
        return None

    def discover(self) -> list[Found]:
        """Every run, compare and sweep folder under the roots. Symlinked folders are not
        descended into (no cycles, nothing outside a root); a run folder is not searched."""
        found: list[Found] = []
        for index in range(len(self.given)):
            root = self.real(index)
            if root is None:
                continue
            stack = [(root, str(index), 0, None)]
            visited = 0
            while stack and visited < MAX_FOLDERS:
                path, key, depth, group = stack.pop()
                visited += 1
                kind = kind_of(path)
                if kind is not None:
                    found.append(Found(kind, key, path, group))
                    if kind == RUN:
                        continue
                    group = key
                if depth >= MAX_DEPTH:
                    continue
                try:
                    with os.scandir(path) as entries:
                        subdirs = [e.name for e in entries
                                   if valid_segment(e.name) and e.is_dir(follow_symlinks=False)]
                except OSError:
                    continue
                for name in sorted(subdirs, reverse=True):
                    stack.append((path / name, f"{key}/{name}", depth + 1, group))
        return found


def inside(folder: Path, rel: str, is_kind=Path.is_file) -> Path | None:
    """What REL names inside FOLDER (already resolved), or None: REL must be a plain
    relative path, and it must resolve, symlinks followed, inside FOLDER and be of the kind
    asked (a file by default). The one confinement rule of every path the UI serves."""
    parts = valid_relative(rel) if isinstance(rel, str) else None
    if parts is None:
        return None
    try:
        real = folder.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if real.is_relative_to(folder) and is_kind(real) else None


def file_inside(folder: Path, rel: str) -> Path | None:
    """The regular file REL names inside FOLDER, or None (see `inside`)."""
    return inside(folder, rel)
