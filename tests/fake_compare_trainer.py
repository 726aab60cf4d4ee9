"""Pretend trainer for test_compare.py: the new metric vocabulary (per-step input and trained
tokens, their rates, eval events), with figures the config sets, so the comparison's derivations
can be checked against known numbers. A real process, as fake_trainer.py."""

import json
import os
import signal
import sys
import time
from pathlib import Path

cfg = json.loads(Path(sys.argv[1]).read_text())
steps = cfg["steps"]


def event(**kw):
    print("JESSY_EVENT " + json.dumps(kw), flush=True)


stop = {"now": False}
signal.signal(signal.SIGINT, lambda s, f: stop.update(now=True))

for step in range(1, steps + 1):
    time.sleep(0.02)
    train = {"type": "train", "step": step, "loss": cfg["loss_scale"] * 2.0 / step,
             "learning_rate": cfg["learning_rate"] * (steps - step + 1) / steps,
             "input_tokens": cfg["input_tokens"], "tokens_per_second": 1e9}
    if cfg["trained_tokens"] is not None:
        train["trained_tokens"] = cfg["trained_tokens"]
    train.update(cfg["rates"])
    event(**train)
    if cfg["eval"] and step % 2 == 0:
        event(type="eval", step=step, eval_loss=cfg["loss_scale"] * 2.5 / step)
    if cfg["behaviour"] == "interrupt" and step == 2:
        time.sleep(0.3)  # jessy's SIGINT handler is in place by now
        os.kill(os.getppid(), signal.SIGINT)  # as a user's Ctrl-C reaches jessy
        for _ in range(400):
            if stop["now"]:
                sys.exit(130)
            time.sleep(0.05)
out = Path(cfg["out"])
out.mkdir(parents=True, exist_ok=True)
(out / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
