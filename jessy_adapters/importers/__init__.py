"""Native backend configs -> a canonical spec (`jessy import`), one module per dialect.

Each key of the source is mapped (to a spec path, with its meaning converted), dropped
(it cannot change the trained weights: output folders, logging, tracking) or refused (it
changes training in a way the spec cannot say); nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..spec import SpecError, spec_from_dict
from . import axolotl, llamafactory, mlx
from .common import Context, NativeFileError, classify, read_native, unclassified

DIALECTS = {"axolotl": axolotl, "llamafactory": llamafactory, "mlx": mlx}


class ImportRefused(Exception):
    """The file cannot become a spec; `problems` are (native key, reason)."""

    def __init__(self, problems: list[tuple[str, str]], ctx: Context | None = None):
        self.problems, self.ctx = problems, ctx
        super().__init__("; ".join(f"{k}: {r}" for k, r in problems))


@dataclass
class Imported:
    spec: dict
    """The canonical spec as written (the backend's defaults made explicit)."""
    ctx: Context


def detect(data: dict) -> list[str]:
    """The dialects whose signature keys the file has."""
    return [name for name, module in DIALECTS.items() if module.recognise(data)]


def choose_dialect(data: dict, wanted: str | None) -> str:
    found = detect(data)
    if wanted is None:
        if len(found) == 1:
            return found[0]
        what = f"it looks like {' and '.join(found)}" if found else "no dialect's keys match"
        raise ImportRefused([("--from", f"cannot tell the dialect ({what}); give --from "
                                        f"{'|'.join(DIALECTS)}")])
    if wanted not in found and len(found) == 1:
        raise ImportRefused([("--from", f"the file looks like {found[0]}, not {wanted}; "
                                        f"check --from")])
    return wanted


def import_data(data: dict, dialect: str, native_path: Path, model_path: str | None = None,
                data_path: str | None = None) -> Imported:
    """Classify every key, apply the backend's defaults, validate the spec."""
    ctx = Context(dialect, data, native_path, model_path, data_path)
    classify(ctx, DIALECTS[dialect])
    missing = unclassified(ctx)
    if missing:  # a converter that forgot a key: never let it pass as dropped
        ctx.refused.extend((k, "no verdict (an importer bug)") for k in missing)
    if ctx.refused:
        raise ImportRefused(ctx.refused, ctx)
    try:
        spec_from_dict(ctx.spec, native_path.parent)
    except SpecError as exc:
        by_path = {path: key for key, path, _ in ctx.mapped}
        raise ImportRefused([(by_path.get(i.path, i.path), f"{i.path}: {i.message} (got "
                                                           f"{ctx.get(i.path)!r})")
                             for i in exc.issues], ctx) from None
    return Imported(ctx.spec, ctx)


def import_file(path: str | Path, dialect: str | None = None, model_path: str | None = None,
                data_path: str | None = None) -> Imported:
    path = Path(path).resolve()  # the files it names are relative to it
    data = read_native(path)
    return import_data(data, choose_dialect(data, dialect), path, model_path, data_path)


__all__ = ["DIALECTS", "ImportRefused", "Imported", "NativeFileError", "detect", "import_data",
           "import_file"]
