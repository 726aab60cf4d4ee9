"""Pretend trainer for test_sweep.py: its loss falls with the spec's learning rate (a rate of
1e-9 learns nothing), eval events every 2 steps, so pruning and the objective have something
to judge. A real process, as fake_trainer.py; SIGINT stops it (exit 130)."""

import json
import math
import signal
import sys
import time
from pathlib import Path

cfg = json.loads(Path(sys.argv[1]).read_text())
signal.signal(signal.SIGINT, lambda s, f: sys.exit(130))
rate = cfg["learning_rate"] * cfg["r"] / 8


def event(**kw):
    print("JESSY_EVENT " + json.dumps(kw), flush=True)


def loss(step):
    return 1.0 + 2.0 * math.exp(-1000 * rate * step)


event(type="eval", step=0, eval_loss=loss(0))
for step in range(1, cfg["steps"] + 1):
    time.sleep(cfg.get("step_seconds", 0.05))
    event(type="train", step=step, loss=loss(step), learning_rate=cfg["learning_rate"])
    if step % 2 == 0 or step == cfg["steps"]:
        event(type="eval", step=step, eval_loss=loss(step) + 0.1)
out = Path(cfg["out"])
out.mkdir(parents=True, exist_ok=True)
(out / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": cfg["r"]}))
