"""The run lifecycle's fault tests on real backends, through the `jessy` command itself.

tests/test_lifecycle.py proves the core with a fake backend; here the same faults meet a real
MLX (and, during training, a real Unsloth) run of the tiny model: a signal at every phase
boundary (JESSY_PAUSE_AT holds the run there) and during training, a full disk on a small
tmpfs, an output folder on a read-only mount, a second process resuming a live run, and
SIGKILL of jessy itself followed by `--resume`. Each must end with run.json finished (a
status and a reason), no attempt left `running`, the exit code the CLI promises, and no
backend process left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_finished, require_env, write_spec

from jessy_adapters.run.lifecycle import PHASES

pytestmark = pytest.mark.backend("mlx + unsloth")

JESSY = [sys.executable, "-m", "jessy_adapters.cli"]


def spec(tmp_path: Path, model: str, data: Path, steps: int, save: int | None = None) -> Path:
    return write_spec(tmp_path / "spec.yaml", f"""\
name: faults
model:
  name_or_path: {model}
  max_seq_length: 128
data:
  train: {data}
  validation_split: 0.25
lora:
  r: 4
  alpha: 8
training:
  max_steps: {steps}
  batch_size: 2
  learning_rate: 1.0e-3
  logging_steps: 1
  eval_steps: 1000
  save_steps: {save or steps}
""")


def start(args: list, pause: str | None = None) -> subprocess.Popen:
    env = {**os.environ, **({"JESSY_PAUSE_AT": pause} if pause else {})}
    env.pop("JESSY_CAPTURE_ROWS", None)
    return subprocess.Popen([*JESSY, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(pattern: str, root: Path, timeout: float = 120, proc=None) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"jessy ended ({proc.returncode}) before {pattern}: "
                                 f"{proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"nothing matched {pattern} under {root}")


def wait_for_step(run_dir: Path, step: int, proc, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    metrics = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.exists():
            steps = [json.loads(x).get("step", 0) for x in metrics.read_text().splitlines()
                     if '"train"' in x]
            if steps and max(steps) >= step:
                return
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.1)
    raise AssertionError(f"step {step} never came")


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def backend_processes(run_dir: Path) -> list[str]:
    """Live processes whose command line names this run folder (a backend left behind)."""
    alive = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(run_dir) in cmd and "pytest" not in cmd:
            alive.append(cmd)
    return alive


def assert_no_backend_left(run_dir: Path) -> None:
    deadline = time.monotonic() + 15  # PR_SET_PDEATHSIG and the stop take a moment
    while backend_processes(run_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert backend_processes(run_dir) == []


@pytest.mark.parametrize("phase", PHASES)
def test_sigint_at_every_phase_of_a_real_run(phase, tmp_path, tiny_model, toy_data, mlx_env):
    out = tmp_path / "runs"
    proc = start(["run", "--backend", "mlx", "--no-fallback", spec(tmp_path, tiny_model,
                                                                     toy_data, 4),
                  "--output", out], pause=phase)
    marker = wait_for(f"*/.paused-{phase}", out, proc=proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert proc.returncode == 130, err
    assert_finished(manifest(marker.parent), "interrupted")
    assert_no_backend_left(marker.parent)


@pytest.mark.parametrize("backend", ["mlx", "unsloth"])
def test_sigterm_during_training_stops_the_backend_and_finishes_the_run(
        backend, tmp_path, tiny_model, toy_data):
    require_env(backend)
    out = tmp_path / "runs"
    proc = start(["run", "--backend", backend, "--no-fallback",
                  spec(tmp_path, tiny_model, toy_data, 2000), "--output", out])
    run_dir = wait_for("*/run.json", out, proc=proc).parent
    wait_for_step(run_dir, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert proc.returncode == 130, err
    m = manifest(run_dir)
    assert_finished(m, "interrupted")
    assert m["attempts"][0]["failure"]["kind"] == "interrupted"
    assert_no_backend_left(run_dir)


def test_a_full_disk_during_a_real_run_finishes_it_with_the_reason(tmp_path, tiny_model,
                                                                   toy_data, small_disk,
                                                                   mlx_env):
    out = small_disk / "runs"
    proc = start(["run", "--backend", "mlx", "--no-fallback",
                  spec(tmp_path, tiny_model, toy_data, 4), "--output", out], pause="launch")
    marker = wait_for("*/.paused-launch", out, proc=proc)
    subprocess.run(["dd", "if=/dev/zero", f"of={small_disk / 'filler'}", "bs=64k"],
                   capture_output=True)
    with open(marker, "r+") as fh:  # release the pause without freeing the page it holds
        fh.write("go")
        fh.truncate()
    _, err = proc.communicate(timeout=180)
    assert "Traceback" not in err, err
    assert proc.returncode != 0, err
    m = manifest(marker.parent)
    assert_finished(m, "failed")
    assert_no_backend_left(marker.parent)


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only bind mount (root can write anywhere else: chmod would not stop it)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "existing").write_text("kept")
    made = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {made.stderr.decode().strip()}")
    subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_an_output_folder_on_a_read_only_mount_is_refused_before_anything(
        tmp_path, tiny_model, toy_data, read_only_folder, mlx_env):
    proc = subprocess.run([*JESSY, "run", "--backend", "mlx", "--no-fallback",
                           str(spec(tmp_path, tiny_model, toy_data, 2)),
                           "--output", str(read_only_folder / "runs")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(read_only_folder) in proc.stderr, proc.stderr
    assert sorted(p.name for p in read_only_folder.iterdir()) == ["existing"]


def test_resume_of_a_live_real_run_is_refused_and_sigkill_then_resume_finishes_it(
        tmp_path, tiny_model, toy_data, mlx_env):
    out = tmp_path / "runs"
    proc = start(["run", "--backend", "mlx", "--no-fallback",
                  spec(tmp_path, tiny_model, toy_data, 80, save=2), "--output", out])
    run_dir = wait_for("*/run.json", out, proc=proc).parent
    wait_for_step(run_dir, 4, proc)
    second = subprocess.run([*JESSY, "run", "--resume", str(run_dir)], capture_output=True,
                            text=True, timeout=60)
    # refused as `--resume` refuses a run it cannot continue (exit 1, like "already
    # succeeded"), nothing changed
    assert second.returncode == 1 and "in use by another jessy process" in second.stderr, \
        second.stderr
    assert manifest(run_dir)["status"] == "running" and len(manifest(run_dir)["attempts"]) == 1

    os.killpg(proc.pid, signal.SIGKILL)  # jessy itself dies; its backend follows (PDEATHSIG)
    proc.communicate(timeout=30)
    assert_no_backend_left(run_dir)
    assert manifest(run_dir)["attempts"][0]["status"] == "running"  # nobody could finish it

    resumed = subprocess.run([*JESSY, "run", "--resume", str(run_dir)], capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    m = manifest(run_dir)
    assert_finished(m, "succeeded")
    first, last = m["attempts"][0], m["attempts"][-1]
    assert first["status"] == "failed" and "died" in first["failure"]["reason"], first
    assert any("resuming from" in n for n in last["notes"]), last["notes"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
