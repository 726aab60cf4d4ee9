"""A transformers TrainerCallback that prints jessy metric events (HF-Trainer backends).

Imported by backend entry scripts inside their own environments: only the standard library
and transformers/torch may be used here.
"""

from __future__ import annotations

import json
import resource
import time

EVENT_PREFIX = "JESSY_EVENT "


def emit(event: dict) -> None:
    print(EVENT_PREFIX + json.dumps(event), flush=True)


def peak_memory_gb(torch) -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def events_callback(torch):
    """Build the callback class lazily, so importing this module needs no transformers."""
    from transformers import TrainerCallback

    class Events(TrainerCallback):
        def __init__(self):
            self.last = (time.monotonic(), 0)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
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
                if "learning_rate" in logs:
                    event["learning_rate"] = float(logs["learning_rate"])
                emit(event)
            elif "eval_loss" in logs:
                event.update(type="eval", eval_loss=float(logs["eval_loss"]))
                emit(event)

    return Events()
