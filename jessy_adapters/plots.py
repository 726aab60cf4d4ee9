"""Loss curves from metrics.jsonl (any backend), as a PNG a person can look at."""

from __future__ import annotations

import threading
from pathlib import Path

_preload: threading.Thread | None = None


def preload_in_background() -> None:
    """Import matplotlib and draw one throw-away figure (fonts, Agg) in a daemon thread while
    a backend trains, so the loss plot adds ~0.05 s to the end of a run instead of ~0.8 s
    (benchmarks/overhead.py)."""
    global _preload
    if _preload is not None:
        return

    def warm() -> None:
        try:
            import io

            _draw([(1, 1.0), (20, 0.5)], [(20, 0.6)], "loss (warm-up)", io.BytesIO())
        except ImportError:
            pass

    _preload = threading.Thread(target=warm, name="jessy-preload-matplotlib", daemon=True)
    _preload.start()


def plot_losses(events: list[dict], out: Path) -> Path | None:
    train = [(e["step"], e["loss"]) for e in events if e.get("loss") is not None]
    evals = [(e["step"], e["eval_loss"]) for e in events if e.get("eval_loss") is not None]
    if not train and not evals:
        return None
    if _preload is not None:
        _preload.join()  # one thread draws at a time: matplotlib's font cache is shared
    out.parent.mkdir(parents=True, exist_ok=True)
    backends = ", ".join(sorted({e.get("backend", "?") for e in events}))
    _draw(train, evals, f"loss ({backends})", out)
    return out


def _draw(train: list, evals: list, title: str, target) -> None:
    """The object API (Figure + Agg canvas), not pyplot: no global figure state, no GUI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train, strict=False), marker="o", ms=3, label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=False), marker="s", ms=4, label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    # fixed margins that fit these labels: tight_layout would draw the figure twice
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.12, top=0.92)
    fig.savefig(target, dpi=110, format="png")
