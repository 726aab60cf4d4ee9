"""Interrupt a real run, then `jessy run --resume`: it continues from the last checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from conftest import require_env

from jessy_adapters import failures
from jessy_adapters.contract import tiny_spec
from jessy_adapters.plugins import load_registry
from jessy_adapters.run.runner import ResumeError, Runner


def spec_for(tmp_path, model, data, steps, save):
    return tiny_spec(tmp_path, model, data, "resume-test",
                     {"max_steps": steps, "save_steps": save, "eval_steps": 100})


def interrupt_after(runner: Runner, tmp_path, backend: str, step: int, run_fn):
    """Run in a thread; stop it like Ctrl-C once `backend` has logged `step`."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(run=run_fn()))
    thread.start()
    deadline = time.monotonic() + 300
    while thread.is_alive() and time.monotonic() < deadline:
        for metrics in (tmp_path / "runs").glob("*/metrics.jsonl"):
            steps = [json.loads(x).get("step", 0) for x in metrics.read_text().splitlines()
                     if f'"backend": "{backend}"' in x and '"loss"' in x]
            if steps and max(steps) >= step:
                runner._stop(failures.INTERRUPTED)
        time.sleep(0.2)
    thread.join(timeout=120)
    return box["run"]


# enough steps that the stop lands well before the end: with two threads a tiny-model
# Unsloth step takes ~0.06 s, and 60 steps once finished before the stop took effect;
# LLaMA-Factory's take ~10x longer (its resumed 300 would cost minutes)
STEPS = {"mlx": 300, "unsloth": 300, "axolotl": 300, "llamafactory": 60}


@pytest.mark.parametrize("backend", list(STEPS))
def test_interrupted_run_resumes_from_its_checkpoint(backend, tmp_path, tiny_model, toy_data):
    require_env(backend)
    steps = STEPS[backend]
    spec = spec_for(tmp_path, tiny_model, toy_data, steps=steps, save=8)
    runner = Runner(load_registry(), console=lambda m: None)
    first = interrupt_after(runner, tmp_path, backend, 9,
                            lambda: runner.run(spec, [backend], tmp_path / "runs"))
    m = first.manifest
    assert m["status"] == "interrupted", m
    assert m["attempts"][0]["failure"]["kind"] == "interrupted"

    resumed = Runner(load_registry(), console=lambda m: None).resume(first.path)
    m = resumed.manifest
    assert m["status"] == "succeeded", m["failure"]
    assert [a["backend"] for a in m["attempts"]] == [backend, backend]
    assert any("resuming from" in n for n in m["attempts"][1]["notes"])
    assert m["resumed"][0]["from_attempt"] == 1
    events = [json.loads(x) for x in (resumed.path / "metrics.jsonl").open()]
    second = [e for e in events if e["attempt"] == 2 and e.get("loss") is not None]
    assert second, "the resumed attempt logged nothing"
    if backend != "mlx":
        # HF checkpoints restore the step counter: the resumed attempt starts after step 8
        assert second[0]["step"] > 8 and second[-1]["step"] == steps
    else:
        # mlx-lm restores weights only: fewer iterations remain, counted from 1 again
        assert len(second) <= steps - 8
    assert (resumed.path / "adapter" / "adapter_model.safetensors").exists()


def test_resume_refuses_a_finished_run(tmp_path, tiny_model, toy_data, mlx_env):
    spec = spec_for(tmp_path, tiny_model, toy_data, steps=2, save=2)
    run = Runner(load_registry(), console=lambda m: None).run(spec, ["mlx"], tmp_path / "runs")
    assert run.manifest["status"] == "succeeded"
    with pytest.raises(ResumeError, match="already succeeded"):
        Runner(load_registry(), console=lambda m: None).resume(run.path)
    proc = subprocess.run([sys.executable, "-m", "jessy_adapters.cli", "run", "--resume",
                           str(run.path)], capture_output=True, text=True)
    assert proc.returncode == 1 and "already succeeded" in proc.stderr
