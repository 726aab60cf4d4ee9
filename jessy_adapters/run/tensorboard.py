"""TensorBoard event files written by jessy, from the one metric stream, for every backend.

No TensorFlow or TensorBoard is needed to write them: an event file is a TFRecord file (each
record: its length as uint64 little-endian, the masked CRC-32C of those 8 bytes, the data, the
masked CRC-32C of the data) of `Event` protocol buffers, the first one saying the file version
("brain.Event:2"), each later one a `Summary` of scalars at a step:

    Event   {wall_time = 1 (double), step = 2 (int64), file_version = 3 (string),
             summary = 5 (Summary)}
    Summary {value = 1 (repeated Value)}
    Value   {tag = 1 (string), simple_value = 2 (float)}

What becomes a scalar (`scalars`): every number of a metrics.jsonl event but its step, attempt
and time, tagged with its key (`loss`, `eval_loss`, `learning_rate`, ...; a list such as
`rank_losses` as `rank_losses/0`, ...), at the event's step and time. tests/test_tracking.py
reads the files back with TensorBoard's own reader and compares them with metrics.jsonl.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..toolkit.tracking import settings

FILE_VERSION = "brain.Event:2"
NOT_SCALARS = ("step", "attempt", "time")
"""An event's bookkeeping: the step and time are the scalar's own, the attempt is the folder."""


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
        table.append(crc)
    return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: the CRC rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 on the wire: two's complement, 10 bytes when negative
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): a string or an embedded message."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int = 0, file_version: str | None = None,
                 values: list[tuple[str, float]] = ()) -> bytes:
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3) + _varint(step)
    if file_version is not None:
        out += _field(3, file_version.encode())
    if values:
        summary = b"".join(_field(1, _field(1, tag.encode()) + _varint(2 << 3 | 5)
                                  + struct.pack("<f", value)) for tag, value in values)
        out += _field(5, summary)
    return out


def _number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def scalars(event: dict) -> list[tuple[str, float]]:
    """The event's numbers as (tag, value); strings, nulls and non-finite values are not."""
    out = []
    for key, value in event.items():
        if key in NOT_SCALARS:
            continue
        if _number(value):
            out.append((key, float(value)))
        elif isinstance(value, list):
            out.extend((f"{key}/{i}", float(v)) for i, v in enumerate(value) if _number(v))
    return out


class EventWriter:
    """One event file in `folder` (a TensorBoard run), appended to and flushed per event, so
    a TensorBoard watching the folder sees a training as it goes."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = folder / (f"events.out.tfevents.{int(now)}.{socket.gethostname()}."
                              f"{os.getpid()}.jessy")
        self._file = open(self.path, "ab")
        self._write(encode_event(now, file_version=FILE_VERSION))

    def _write(self, data: bytes) -> None:
        self._file.write(tfrecord(data))
        self._file.flush()

    def add_event(self, event: dict) -> None:
        """A metrics.jsonl event's scalars at its step and time (nothing when it has none)."""
        values = scalars(event)
        if values:
            self._write(encode_event(event.get("time") or time.time(),
                                     int(event.get("step") or 0), values=values))

    def close(self) -> None:
        self._file.close()


@contextlib.contextmanager
def metric_sinks(spec, run_path: Path, attempt_name: str
                 ) -> Iterator[list[Callable[[dict], None]]]:
    """What else receives each metric event of an attempt as it is recorded: TensorBoard's
    writer for `<run>/tensorboard/<attempt_name>/` when asked, closed when the attempt ends."""
    if not settings(spec)["tensorboard"]:
        yield []
        return
    writer = EventWriter(run_path / "tensorboard" / attempt_name)
    try:
        yield [writer.add_event]
    finally:
        writer.close()
