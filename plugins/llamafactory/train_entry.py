"""Runs inside the LLaMA-Factory environment: its own trainer (run_exp) with structured metrics.

Usage: python train_entry.py CONFIG.yaml

`llamafactory-cli train CONFIG.yaml` runs the same config through the same run_exp; this
entry only adds a TrainerCallback that prints one JSON event per log line (instead of
tailing trainer_log.jsonl). Only the standard library and the backend's packages may be
imported: jessy is not installed here.
"""

from __future__ import annotations

import json
import resource
import sys
import time

EVENT_PREFIX = "JESSY_EVENT "


def emit(event: dict) -> None:
    print(EVENT_PREFIX + json.dumps(event), flush=True)


def main(config_path: str) -> int:
    import yaml

    with open(config_path) as fh:
        cfg = yaml.safe_load(fh)

    import torch
    from transformers import TrainerCallback

    import llamafactory
    from llamafactory.train.tuner import run_exp

    emit({"type": "runtime", "llamafactory": llamafactory.__version__,
          "torch": torch.__version__, "device": "cuda" if torch.cuda.is_available() else "cpu",
          "threads": torch.get_num_threads()})

    class Events(TrainerCallback):
        def __init__(self):
            self.last = (time.monotonic(), 0)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            peak = (torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available()
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
            event = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4),
                     "peak_memory_gb": round(peak, 3)}
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

    run_exp(cfg, callbacks=[Events()])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
