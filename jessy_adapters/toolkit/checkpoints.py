"""Finding the checkpoint a resumed run continues from."""

from __future__ import annotations

from pathlib import Path

OUTPUT_DIR = "output"
"""Where the built-in HF-Trainer backends point the Trainer's output_dir, relative to the
attempt folder: a plugin with another layout passes its own to the functions below."""


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


def hf_resume(resume_from: Path | None, refusals: list, notes: list,
              output_dir: str = OUTPUT_DIR) -> str | None:
    """The checkpoint an HF-Trainer backend resumes from, or a refusal saying why not;
    `output_dir` is where the backend's Trainer writes checkpoints, relative to an attempt
    folder (HFTrainerBackend.output_dir)."""
    from ..backend import Refusal

    if resume_from is None:
        return None
    checkpoint = latest_hf_checkpoint(resume_from / output_dir)
    if checkpoint is None:
        refusals.append(Refusal("/training/save_steps",
                                f"no checkpoint in {resume_from} to resume from; set "
                                "training.save_steps so runs leave some"))
        return None
    notes.append(f"resuming from {checkpoint.name} (weights, optimizer, scheduler, data "
                 "position)")
    return str(checkpoint)


def hf_checkpoint_as_peft(attempt_dir: Path, output_dir: str = OUTPUT_DIR) -> Path | None:
    """HF Trainer checkpoints of a PEFT model already hold a PEFT adapter folder (the newest
    one in attempt_dir/output_dir)."""
    checkpoint = latest_hf_checkpoint(attempt_dir / output_dir)
    if checkpoint and (checkpoint / "adapter_model.safetensors").is_file():
        return checkpoint
    return None


def check_init_adapter(init: Path | None, spec, refusals: list, notes: list) -> Path | None:
    """The adapter another backend left, if this spec can train it on: refused when its rank
    differs from the spec's, or when the spec fine-tunes every weight (method: full)."""
    import json

    from ..backend import Refusal

    if init is None:
        return None
    if spec["method"] == "full":
        refusals.append(Refusal("/method", f"cannot continue from the LoRA adapter {init}: "
                                           "method full trains whole weights; use lora or qlora"))
        return None
    rank = spec["lora"]["r"]
    config = json.loads((init / "adapter_config.json").read_text())
    if int(config["r"]) != rank:
        refusals.append(Refusal("/lora/r", f"cannot continue from {init}: its rank is "
                                           f"{config['r']}, the spec's is {rank}"))
        return None
    notes.append(f"continuing from another backend's checkpoint {init}")
    return init
