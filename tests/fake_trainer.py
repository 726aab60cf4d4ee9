"""Pretend trainer for fake_backend.py: behaves as its config says, as a real process."""

import json
import os
import signal
import sys
import time
from pathlib import Path

cfg = json.loads(Path(sys.argv[1]).read_text())
behaviour = cfg["behaviour"]


def event(**kw):
    print("JESSY_EVENT " + json.dumps(kw), flush=True)


stop = {"now": False}
signal.signal(signal.SIGINT, lambda s, f: stop.update(now=True))

event(type="runtime", fake=True)
for step in range(1, cfg["steps"] + 1):
    loss = 2.0 / step
    if behaviour == "nan" and step == 3:
        loss = float("nan")
    if behaviour == "diverge" and step == 3:
        loss = 1e6
    event(type="train", step=step, loss=loss, learning_rate=1e-3, tokens_per_second=100.0)
    if behaviour == "crash" and step == 2:
        raise RuntimeError("fake trainer exploded")
    if behaviour == "oom" and step == 2:
        raise MemoryError("Unable to allocate 12.0 GiB")
    if behaviour == "kill" and step == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    if behaviour in ("sleep", "stubborn") or (behaviour in ("nan", "diverge") and step >= 3):
        for _ in range(600):
            if stop["now"] and behaviour != "stubborn":
                print("fake trainer: stopping gracefully", file=sys.stderr, flush=True)
                sys.exit(130)
            time.sleep(0.05)
out = Path(cfg["out"])
out.mkdir(parents=True, exist_ok=True)
(out / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
