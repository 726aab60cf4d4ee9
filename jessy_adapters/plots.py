"""Loss curves from metrics.jsonl (any backend), as a PNG a person can look at."""

from __future__ import annotations

from pathlib import Path


def preload_in_background() -> None:
    """Import matplotlib (~0.8 s) in a daemon thread while a backend trains, so the loss plot
    does not add that to the end of every run (benchmarks/overhead.py)."""
    import sys
    import threading

    if "matplotlib.pyplot" in sys.modules:
        return

    def load() -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401
        except ImportError:
            pass

    threading.Thread(target=load, name="jessy-preload-matplotlib", daemon=True).start()


def plot_losses(events: list[dict], out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in events if e.get("loss") is not None]
    evals = [(e["step"], e["eval_loss"]) for e in events if e.get("eval_loss") is not None]
    if not train and not evals:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    backends = sorted({e.get("backend", "?") for e in events})
    if train:
        ax.plot(*zip(*train, strict=False), marker="o", ms=3, label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=False), marker="s", ms=4, label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(f"loss ({', '.join(backends)})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
