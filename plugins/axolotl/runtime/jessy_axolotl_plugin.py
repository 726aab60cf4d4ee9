"""An Axolotl plugin (config key `plugins:`) that prints jessy's metric events while it trains.

Axolotl's own extension point, so `axolotl train CONFIG` by hand behaves the same. Runs inside
the Axolotl environment: only Axolotl's packages and jessy's runtime helpers
(JESSY_RUNTIME_PATH, stdlib + transformers) are imported.
"""

from __future__ import annotations

import os
import sys

from axolotl.integrations.base import BasePlugin

sys.path.insert(0, os.environ["JESSY_RUNTIME_PATH"])
from hf_events import emit, events_callback  # noqa: E402


class JessyPlugin(BasePlugin):
    def post_trainer_create(self, cfg, trainer):
        import axolotl
        import torch

        # Axolotl turns `warmup_steps: 1` into 2 (core/builders/base.py); the core's schedule
        # says 1, and the Trainer builds its scheduler from these arguments only in train()
        warmup = os.environ.get("JESSY_WARMUP_STEPS")
        if warmup is not None:
            trainer.args.warmup_steps = int(warmup)
        # Axolotl's config has no key for it: NaN/inf losses must reach jessy's guard
        trainer.args.logging_nan_inf_filter = False

        if int(os.environ.get("RANK", "0")) == 0:
            emit({"type": "runtime", "axolotl": axolotl.__version__, "torch": torch.__version__,
                  "device": "cuda" if torch.cuda.is_available() else "cpu",
                  "threads": torch.get_num_threads(),
                  "world_size": int(os.environ.get("WORLD_SIZE", "1"))})

    def add_callbacks_post_trainer(self, cfg, trainer):
        import torch

        return [events_callback(torch, trainer)]
