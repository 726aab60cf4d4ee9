"""The normalised run directory every backend's output ends up in.

runs/<run-id>/ run.json, spec.yaml, data/, attempts/NN-<backend>/, metrics.jsonl, adapter/,
plots/. A run id is claimed with an exclusive mkdir, so no run ever overwrites another.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..jsonio import write_json_atomic, write_text_atomic
from ..spec import Spec


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def process_age() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere): jessy's own start-up
    (interpreter, imports, plugin loading) counted from the real start, not from an import."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime, in clock ticks after boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round(uptime - ticks / os.sysconf("SC_CLK_TCK"), 3)
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class RunDir:
    path: Path
    manifest: dict

    @classmethod
    def create(cls, parent: Path, spec: Spec, plan: list[str]) -> RunDir:
        parent = parent.resolve()
        parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for _ in range(100):
            run_id = f"{stamp}-{spec.name}-{secrets.token_hex(2)}"
            path = parent / run_id
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 100 collisions of 16 random bits in one second
            raise RuntimeError(f"could not claim a run directory in {parent}")
        manifest = {
            "schema_version": 1,
            "run_id": run_id,
            "status": "running",
            "created": _now(),
            "finished": None,
            "jessy_version": __version__,
            "spec_file": str(spec.source) if spec.source else None,
            "spec_sha256": spec.digest(),
            "plan": plan,
            "attempts": [],
            "winner": None,
            "data": None,
            "adapter": None,
            "summary": None,
            "failure": None,
            "timings": {},
        }
        run = cls(path, manifest)
        write_text_atomic(path / "spec.yaml", spec.to_yaml())
        run.save()
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        return cls(path, json.loads((path / "run.json").read_text()))

    def save(self) -> None:
        write_json_atomic(self.path / "run.json", self.manifest)

    def attempt_dir(self, number: int, backend: str) -> Path:
        d = self.path / "attempts" / f"{number:02d}-{backend}"
        d.mkdir(parents=True, exist_ok=False)
        return d

    def append_metric(self, event: dict) -> None:
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def metrics(self) -> list[dict]:
        p = self.path / "metrics.jsonl"
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    @property
    def timings(self) -> dict:
        """Where the wall time went (seconds): start-up, data preparation, whole process."""
        return self.manifest.setdefault("timings", {})

    @contextlib.contextmanager
    def timed(self, key: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[key] = round(time.monotonic() - start, 3)

    def finish(self, status: str) -> None:
        age = process_age()
        if age is not None:
            self.timings["process_s"] = age
        # jessy's own CPU (backends excluded): on a machine whose cores the backend uses,
        # this is what the layer can take from training
        own = resource.getrusage(resource.RUSAGE_SELF)
        self.timings["cpu_s"] = round(own.ru_utime + own.ru_stime, 3)
        self.manifest["status"] = status
        self.manifest["finished"] = _now()
        self.save()


class RunFolderError(ValueError):
    """A folder that post-training commands cannot use, with what is wrong in it."""


def finished_run(path: Path) -> tuple[dict, dict, Path]:
    """(manifest, spec, the tuned output folder) of a succeeded run, checked before anything
    is computed or written: run.json and spec.yaml readable, the adapter (or full model)
    present, and each safetensors file whole (its header's tensors fit in the file)."""
    import yaml

    from ..toolkit.adapters import read_safetensors_header

    path = Path(path)
    if not (path / "run.json").is_file():
        raise RunFolderError(f"{path} is not a jessy run folder (no run.json)")
    try:
        manifest = json.loads((path / "run.json").read_text(encoding="utf-8"))
        spec = yaml.safe_load((path / "spec.yaml").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or not isinstance(spec, dict):
            raise TypeError("run.json and spec.yaml must hold objects")
    except (OSError, UnicodeDecodeError, ValueError, TypeError, yaml.YAMLError) as exc:
        raise RunFolderError(f"{path}: unreadable run folder: {type(exc).__name__}: {exc}"
                             ) from None
    if manifest.get("status") != "succeeded":
        raise RunFolderError(f"{path}: the run did not succeed (status "
                             f"{manifest.get('status')!r}); nothing to use")
    tuned = path / ("model" if manifest.get("full_model") else "adapter")
    weights = sorted(tuned.glob("*.safetensors")) if tuned.is_dir() else []
    if not weights:
        raise RunFolderError(f"{path}: no {tuned.name}/ with safetensors weights")
    for file in weights:
        try:
            header, n = read_safetensors_header(file)
            end = max((m["data_offsets"][1] for k, m in header.items() if k != "__metadata__"),
                      default=0)
            size = file.stat().st_size
        except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
            raise RunFolderError(f"{file}: not a readable safetensors file ({exc})") from None
        if size < 8 + n + end:
            raise RunFolderError(f"{file}: truncated ({size} bytes, its header needs "
                                 f"{8 + n + end})")
    return manifest, spec, tuned
