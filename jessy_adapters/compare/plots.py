"""Every backend's curves on one chart: plots/loss.png (train and validation) and lr.png.

One colour per backend; train loss solid, validation loss dashed. Drawn with matplotlib's
object API (Figure + Agg canvas), as jessy_adapters/plots.py, not pyplot's global state.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .. import plots as run_plots


def plot_comparison(series: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """backend -> its metric events; returns the charts written (none without matplotlib)."""
    if importlib.util.find_spec("matplotlib") is None:
        return []
    if run_plots._preload is not None:
        run_plots._preload.join()  # a run's warm-up draw: matplotlib's font cache is shared
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if _draw(series, out_dir / "loss.png", "loss", (("loss", "-", "train"),
                                                    ("eval_loss", "--", "validation"))):
        written.append(out_dir / "loss.png")
    if _draw(series, out_dir / "lr.png", "learning rate", (("learning_rate", "-", None),)):
        written.append(out_dir / "lr.png")
    return written


def _draw(series: dict[str, list[dict]], target: Path, ylabel: str,
          curves: tuple[tuple[str, str, str | None], ...]) -> bool:
    """One line per backend and curve (metric key, line style, what it is); False, and no
    chart, when no backend has a point to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    drawn: dict[str, None] = {}  # the backends with a line, in order
    for index, (backend, events) in enumerate(series.items()):
        colour = f"C{index % 10}"
        for key, style, what in curves:
            points = [(e["step"], e[key]) for e in events
                      if e.get(key) is not None and e.get("step") is not None]
            if not points:
                continue
            label = f"{backend} {what}" if what else backend
            ax.plot(*zip(*points, strict=True), style, color=colour, marker="o", ms=3,
                    label=label)
            drawn[backend] = None
    if not drawn:
        target.unlink(missing_ok=True)  # an earlier invocation's chart would mislead
        return False
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel}: {', '.join(drawn)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.12, top=0.92)
    fig.savefig(target, dpi=110, format="png")
    return True
