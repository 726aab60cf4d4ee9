"""Reading a YAML file a stranger wrote: yaml.safe_load's meaning, within fixed limits.

A spec is a few dozen lines, so anything far bigger is a mistake or an attack: a huge or
endless file (/dev/zero, a FIFO), bytes that are not UTF-8 text, an alias bomb ("billion
laughs"), nesting deep enough to exhaust the stack, or a second `training:` block that
would silently replace the first. Each is refused with a YamlInputError that says where
(line, and the key path of the value) and what is allowed, before it can cost time or memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1 << 20  # 1 MiB
MAX_NODES = 10_000  # values, keys included, counted after aliases are expanded
MAX_DEPTH = 50  # collections nested inside one another, aliases expanded
_MERGE = "tag:yaml.org,2002:merge"

# Leading bytes that say what a file that is not UTF-8 text probably is.
_SIGNATURES = ((b"\xff\xfe\x00\x00", "UTF-32 text"), (b"\x00\x00\xfe\xff", "UTF-32 text"),
               (b"\xff\xfe", "UTF-16 text"), (b"\xfe\xff", "UTF-16 text"),
               (b"\x1f\x8b", "gzip-compressed data"))

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class YamlInputError(Exception):
    """Input refused before or while parsing; `path` is the JSON pointer of the value."""

    def __init__(self, message: str, line: int | None = None, path: str = ""):
        self.message, self.line, self.path = message, line, path
        super().__init__(message)


def read_text(path: str | Path, limit: int = MAX_BYTES) -> str:
    """The file's text, read only if it is a regular file of at most `limit` bytes of UTF-8.

    Opened without blocking (a FIFO would otherwise wait for a writer) and checked on the
    open descriptor, so what is checked is what is read; at most limit + 1 bytes are read
    even if the file grows meanwhile. OSError (missing, unreadable) is left to the caller.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise YamlInputError(f"is {kind}, not a spec file; give the path of a YAML file")
        data = f.read(limit + 1)
        if len(data) > limit:
            size = max(os.fstat(fd).st_size, len(data))
            raise YamlInputError(f"the file has {size:,} bytes, more than the {limit:,} "
                                 f"({limit / 2**20:g} MiB) a spec may have; it was not parsed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        guess = next((f"; it looks like {what}" for sig, what in _SIGNATURES
                      if data.startswith(sig)), "")
        raise YamlInputError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
                             f"{exc.start} (line {line}, column {column}) cannot be decoded"
                             f"{guess}; a spec must be saved as UTF-8", line) from None


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts, measures and checks as it builds the node tree.

    Aliases share one node, so a bomb is small as nodes and exponential only once expanded
    (by a validator, a deep copy, an error message): every node records its expanded size
    and height, and an alias adds its target's to the running totals.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._expanded = 0  # nodes so far, aliases expanded
        self._measure: dict[int, tuple[int, int]] = {}  # id(node) -> (size, height)
        self._depth = 0  # collections enclosing the node being composed
        self._path: list[str] = []  # JSON pointer segments of the node being composed

    def _refuse(self, message: str, mark) -> None:
        raise YamlInputError(message, mark.line + 1 if mark else None,
                             "".join(f"/{s}" for s in self._path))

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        segment = None
        if isinstance(parent, SequenceNode):
            segment = str(index)
        elif isinstance(parent, MappingNode) and isinstance(index, Node):  # a value
            segment = self._segment(index)
        if segment is not None:
            self._path.append(segment)
        try:
            return self._compose_counted(parent, index)
        finally:
            if segment is not None:
                self._path.pop()

    def _compose_counted(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self._measure:
                self._refuse(f"the alias *{event.anchor} is used inside the value it names "
                             "(a recursive alias)", event.start_mark)
            size, height = self._measure[id(node)]
            self._count(size, event.start_mark)
            if self._depth + height > MAX_DEPTH:
                self._refuse(f"the alias *{event.anchor} nests values more than {MAX_DEPTH} "
                             "levels deep", event.start_mark)
            return node
        self._count(1, event.start_mark)
        collection = isinstance(event, (SequenceStartEvent, MappingStartEvent))
        if collection and self._depth >= MAX_DEPTH:
            self._refuse(f"values nested more than {MAX_DEPTH} levels deep", event.start_mark)
        self._depth += collection
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= collection
        if isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = node.value if isinstance(node, SequenceNode) else []
        measures = [self._measure[id(c)] for c in children]
        self._measure[id(node)] = (1 + sum(s for s, _ in measures),
                                   collection + max((h for _, h in measures), default=0))
        return node

    def _segment(self, key_node: Node) -> str:
        """The key as the data will spell it (`null:` is None), so paths match the data's."""
        if not isinstance(key_node, ScalarNode):
            return "?"  # complex keys are refused when built (unhashable)
        return key_node.value if key_node.tag == _MERGE else str(self.construct_object(key_node))

    def line_index(self, root: Node | None) -> dict[str, int]:
        """JSON pointer -> 1-based line of every value (a mapping value: its key's line)."""
        lines: dict[str, int] = {}

        def walk(node: Node, pointer: str) -> None:
            lines.setdefault(pointer, node.start_mark.line + 1)
            if isinstance(node, MappingNode):
                for key_node, value_node in node.value:
                    child = f"{pointer}/{self._segment(key_node)}"
                    lines[child] = key_node.start_mark.line + 1
                    walk(value_node, child)
            elif isinstance(node, SequenceNode):
                for i, item in enumerate(node.value):
                    walk(item, f"{pointer}/{i}")

        if root is not None:
            walk(root, "")
        return lines

    def _count(self, nodes: int, mark) -> None:
        self._expanded += nodes
        if self._expanded > MAX_NODES:
            self._refuse(f"more than {MAX_NODES:,} values once aliases are expanded; a spec "
                         "is far smaller (an alias bomb?)", mark)

    def compose_mapping_node(self, anchor: str | None) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[Any, Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE:
                continue  # merges (<<) may repeat, and their keys may be overridden
            key = self.construct_object(key_node)
            try:
                seen = key in first
            except TypeError:  # `? !!set x`: refused when built (unhashable)
                continue
            if seen:
                self._path.append(self._segment(key_node))
                self._refuse(f"duplicate key {key_node.value!r}: first at line "
                             f"{first[key].start_mark.line + 1}, again at line "
                             f"{key_node.start_mark.line + 1}; a key may appear once",
                             key_node.start_mark)
            first[key] = key_node
        return node

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """Python's own refusals (a 5,000-digit integer, 2024-13-45) as YAML errors."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise ConstructorError(None, None, f"cannot read this value: {exc}",
                                   node.start_mark) from None


def load(text: str) -> tuple[Any, dict[str, int]]:
    """yaml.safe_load(text) within the limits, and the line of every value by JSON pointer
    (from the same checked node tree). Raises YamlInputError or yaml.YAMLError."""
    if len(text) > MAX_BYTES:  # text not from read_text
        raise YamlInputError(f"the text is longer than {MAX_BYTES:,} characters, the most a "
                             "spec may be; it was not parsed")
    try:
        loader = _LimitedLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise YamlInputError(f"not valid YAML: the control character U+{exc.character:04X} at "
                             f"line {line}, column {column} is not allowed in YAML", line) from None
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
        return data, loader.line_index(node)  # after merge keys (<<) are flattened
    finally:
        loader.dispose()
