"""Finding the checkpoint a resumed run continues from."""

from __future__ import annotations

from pathlib import Path


def latest_hf_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N/` a Hugging Face Trainer wrote (trainer_state.json
    is written last, so a checkpoint cut short by a kill is skipped)."""
    best: tuple[int, Path | None] = (-1, None)
    if not output_dir.is_dir():
        return None
    for path in output_dir.glob("checkpoint-*"):
        step = path.name.rsplit("-", 1)[-1]
        if step.isdigit() and (path / "trainer_state.json").is_file() and int(step) > best[0]:
            best = (int(step), path)
    return best[1]
