"""Runs inside a backend environment: reads tracking files back with the trackers' own code.

    python read_tracking.py tensorboard FOLDER [FOLDER ...]   # TensorBoard's EventAccumulator
    python read_tracking.py wandb RUN.wandb                    # wandb's own Record protobuf

Prints JSON: for tensorboard {folder: {tag: [[step, value, wall_time], ...]}}, for wandb the
list of history rows ({key: value}) the offline run file holds. A .wandb file is a LevelDB-style
log (a 7-byte header ":W&B" + magic + version, then 32 KiB blocks of chunks: checksum, length,
type FULL/FIRST/MIDDLE/LAST); each record is a wandb_internal_pb2.Record.
"""

from __future__ import annotations

import json
import struct
import sys


def tensorboard(folders: list[str]) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for folder in folders:
        acc = EventAccumulator(folder, size_guidance={"scalars": 0})  # 0: keep every point
        acc.Reload()
        out[folder] = {tag: [[e.step, e.value, e.wall_time] for e in acc.Scalars(tag)]
                       for tag in acc.Tags()["scalars"]}
    return out


def _chunks(path: str):
    data = open(path, "rb").read()
    ident, _magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B", ident
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the zero padding at a block's end
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


def wandb_history(path: str) -> list[dict]:
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    for chunk in _chunks(path):
        record = pb.Record()
        record.ParseFromString(chunk)
        if record.WhichOneof("record_type") == "history":
            rows.append({"/".join(i.nested_key) if i.nested_key else i.key:
                         json.loads(i.value_json) for i in record.history.item})
    return rows


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    print(json.dumps(tensorboard(args) if what == "tensorboard" else wandb_history(args[0])))
