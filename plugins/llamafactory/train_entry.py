"""Runs inside the LLaMA-Factory environment: its own trainer (run_exp) with structured metrics.

Usage: python train_entry.py CONFIG.yaml

`llamafactory-cli train CONFIG.yaml` runs the same config through the same run_exp; this
entry only adds a TrainerCallback that prints one JSON event per log line (instead of
tailing trainer_log.jsonl). Only the standard library and the backend's packages may be
imported: jessy is not installed here.
"""

from __future__ import annotations

import os
import sys

# jessy's runtime helpers (stdlib + transformers only), located by the runner.
sys.path.insert(0, os.environ["JESSY_RUNTIME_PATH"])
from hf_events import emit, events_callback  # noqa: E402


def main(config_path: str) -> int:
    import yaml

    with open(config_path) as fh:
        cfg = yaml.safe_load(fh)

    import torch

    import llamafactory
    from llamafactory.train.tuner import run_exp

    emit({"type": "runtime", "llamafactory": llamafactory.__version__,
          "torch": torch.__version__, "device": "cuda" if torch.cuda.is_available() else "cpu",
          "threads": torch.get_num_threads()})
    run_exp(cfg, callbacks=[events_callback(torch)])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
