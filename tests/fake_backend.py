"""A fake backend for testing the core's orchestration only (never evidence a backend works).

Its "trainer" is fake_trainer.py run as a real subprocess, so supervision, signals, logs and
exit codes are real; only the training is pretend.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jessy_adapters import hookimpl
from jessy_adapters.backend import Availability, Backend, Refusal, Translation, TranslationRefused

TRAINER = Path(__file__).with_name("fake_trainer.py")


def make_backend(name: str, behaviour: str = "ok", available: bool = True,
                 refuse: bool = False):
    class Fake(Backend):
        description = f"fake backend ({behaviour})"

        def check(self, env, require_accelerator=False):
            if not available:
                return Availability(False, "fake: not installed")
            if require_accelerator:
                return Availability(False, "fake: no accelerator")
            return Availability(True, "fake: ready")

        def translate(self, spec, inputs, attempt_dir, env):
            if refuse:
                raise TranslationRefused(self.name, [Refusal("/method", "fake refuses")])
            cfg = {"behaviour": behaviour, "steps": 5, "out": str(attempt_dir / "out")}
            return Translation(files={"fake.json": json.dumps(cfg)},
                               command=[sys.executable, str(TRAINER),
                                        str(attempt_dir / "fake.json")],
                               total_steps=5)

        def normalise(self, attempt_dir, spec, inputs, adapter_dir):
            adapter_dir.mkdir(parents=True, exist_ok=True)
            src = attempt_dir / "out" / "adapter_config.json"
            (adapter_dir / "adapter_config.json").write_text(src.read_text())
            return {"format": "peft"}

    Fake.name = name
    Fake.__name__ = f"Fake_{name}"
    return Fake


class Plugin:
    """A pluggy plugin object registering the given backend classes."""

    def __init__(self, *classes):
        self.classes = classes

    @hookimpl
    def register_backends(self, register):
        for cls in self.classes:
            register(cls)
