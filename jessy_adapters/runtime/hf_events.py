"""A transformers TrainerCallback that prints jessy metric events (HF-Trainer backends).

Imported by backend entry scripts inside their own environments: only the standard library
and transformers/torch may be used here.
"""

from __future__ import annotations

import json
import math
import resource
import time

EVENT_PREFIX = "JESSY_EVENT "


def emit(event: dict) -> None:
    print(EVENT_PREFIX + json.dumps(event), flush=True)


def peak_memory_gb(torch) -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def _distributed(torch) -> tuple[int, int]:
    """(rank, world size); (0, 1) for a single process."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def track_local_losses(trainer, sink: list) -> None:
    """Record each training micro-batch's loss on this rank (the Trainer logs the mean over
    ranks only), so a multi-process run can show every rank's own loss."""
    compute_loss = trainer.compute_loss

    def recording(model, inputs, *args, **kwargs):
        out = compute_loss(model, inputs, *args, **kwargs)
        if model.training:
            loss = out[0] if isinstance(out, tuple) else out
            sink.append(float(loss.detach()))
        return out

    trainer.compute_loss = recording


def events_callback(torch, trainer=None):
    """Build the callback class lazily, so importing this module needs no transformers.

    With `trainer`, multi-process runs also report `rank_losses` (each rank's mean loss since
    the last log, gathered to rank 0, which alone prints events)."""
    from transformers import TrainerCallback

    local: list[float] = []
    if trainer is not None:
        track_local_losses(trainer, local)

    class Events(TrainerCallback):
        def __init__(self):
            self.last = (time.monotonic(), 0)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            rank, world = _distributed(torch)
            if world > 1:
                gathered = [None] * world
                if "loss" in logs:  # every rank logs the same keys at the same step
                    mine = sum(local) / len(local) if local else None
                    local.clear()
                    finite = mine is not None and math.isfinite(mine)
                    torch.distributed.all_gather_object(gathered, mine if finite else None)
                if rank != 0:
                    return
            event = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4),
                     "peak_memory_gb": round(peak_memory_gb(torch), 3)}
            if "loss" in logs:
                now, seen = time.monotonic(), int(state.num_input_tokens_seen or 0)
                then, before = self.last
                if seen > before and now > then:
                    event["tokens_per_second"] = (seen - before) / (now - then)
                    event["trained_tokens"] = seen
                self.last = (now, seen)
                event.update(type="train", loss=float(logs["loss"]))
                if world > 1:
                    event.update(world_size=world, rank_losses=gathered)
                if "learning_rate" in logs:
                    event["learning_rate"] = float(logs["learning_rate"])
                emit(event)
            elif "eval_loss" in logs:
                event.update(type="eval", eval_loss=float(logs["eval_loss"]))
                emit(event)

    return Events()
