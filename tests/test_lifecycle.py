"""The run lifecycle: every way out finishes run.json; one owner per run folder.

Faults reach each phase deterministically: JESSY_PAUSE_AT=<phase> holds the run at that
boundary (it writes `.paused-<phase>` and waits), then the test signals it. The backend is
the fake one (tests/fake_backend.py): this proves the core, not a backend.
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
from conftest import assert_finished, write_spec

from jessy_adapters.run.lifecycle import PHASES, RunBusy, owning
from jessy_adapters.run.rundir import RunDir
from jessy_adapters.spec import load_spec

FAKE_RUN = Path(__file__).with_name("fake_run.py")


@pytest.fixture
def spec_file(tmp_path, toy_data):
    return write_spec(tmp_path / "spec.yaml", f"model:\n  name_or_path: {tmp_path}\n"
                                              f"data:\n  train: {toy_data}\n")


def start(*args, pause=None) -> subprocess.Popen:
    env = {**os.environ, **({"JESSY_PAUSE_AT": pause} if pause else {})}
    return subprocess.Popen([sys.executable, str(FAKE_RUN), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(pattern: str, root: Path, timeout: float = 30) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(root.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"nothing matched {pattern} under {root}")


def manifest_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", PHASES)
def test_a_signal_at_every_phase_finishes_the_run_as_interrupted(phase, sig, spec_file,
                                                                 tmp_path):
    out = tmp_path / "runs"
    proc = start(spec_file, out, "ok", pause=phase)
    marker = wait_for(f"*/.paused-{phase}", out)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert proc.returncode == 130, err
    assert_finished(manifest_of(marker.parent), "interrupted")
    assert (marker.parent / ".lock").stat().st_size <= 16  # the disk reserve is given back


def test_an_exception_in_jessy_finishes_the_run_and_is_not_hidden(spec_file, tmp_path):
    run = RunDir.create(tmp_path / "runs", load_spec(spec_file), ["x"])
    run.manifest["attempts"].append({"number": 1, "backend": "x", "status": "running"})
    with pytest.raises(ZeroDivisionError), owning(run, console=lambda m: None):
        raise ZeroDivisionError("a bug in jessy or a plugin")
    m = manifest_of(run.path)
    assert_finished(m, "failed")
    assert m["failure"]["kind"] == "crashed" and "ZeroDivisionError" in m["failure"]["reason"]


def test_one_owner_per_run_folder(spec_file, tmp_path):
    out = tmp_path / "runs"
    proc = start(spec_file, out, "sleep", pause=None)
    run_dir = wait_for("*/attempts/01-fake0/stdout.log", out).parents[2]
    try:
        resumed = subprocess.run([sys.executable, str(FAKE_RUN), "--resume", run_dir, "ok"],
                                 capture_output=True, text=True, timeout=60)
        assert resumed.returncode != 0 and "in use by another jessy process" in resumed.stderr
        assert manifest_of(run_dir)["status"] == "running"  # the live run is untouched
        with pytest.raises(RunBusy), owning(RunDir.open(run_dir)):
            pass
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert_finished(manifest_of(run_dir), "interrupted")
    assert len(manifest_of(run_dir)["attempts"]) == 1


def test_sigkill_then_resume_leaves_no_attempt_running(spec_file, tmp_path):
    out = tmp_path / "runs"
    proc = start(spec_file, out, "sleep")
    run_dir = wait_for("*/attempts/01-fake0/stdout.log", out).parents[2]
    time.sleep(0.3)
    proc.kill()  # the owner dies: its lock goes with it
    proc.communicate(timeout=30)
    assert manifest_of(run_dir)["attempts"][0]["status"] == "running"
    resumed = subprocess.run([sys.executable, str(FAKE_RUN), "--resume", run_dir, "ok"],
                             capture_output=True, text=True, timeout=60)
    m = manifest_of(run_dir)
    assert resumed.returncode in (0, 1), resumed.stderr  # the fake cannot really resume
    first = m["attempts"][0]
    assert first["status"] == "failed" and "died" in first["failure"]["reason"]
    assert len(m["attempts"]) == 2 and m["status"] != "running"
    assert all(a["status"] != "running" for a in m["attempts"])


@pytest.mark.parametrize("content", [None, "", "{", "[]", '{"attempts": 3}'])
def test_jessy_run_resume_of_a_folder_that_is_no_run_is_bad_input(content, tmp_path):
    """Exit 2 with the folder named, no traceback, nothing written: what was given is wrong
    (a finished or busy run is exit 1: the run's state, not the input)."""
    if content is not None:
        (tmp_path / "run.json").write_text(content)
    before = sorted(p.name for p in tmp_path.iterdir())
    done = subprocess.run([sys.executable, "-m", "jessy_adapters.cli", "run", "--resume",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and str(tmp_path) in done.stderr
    assert ("not a jessy run folder" if content is None else "cannot be resumed") in \
        done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("content", ["", "{", "[]", '{"attempts": 3}', '{"status": "x"}'])
def test_resume_of_a_broken_folder_is_a_clear_error(content, tmp_path):
    from jessy_adapters.run.runner import ResumeError, open_run

    (tmp_path / "run.json").write_text(content)
    with pytest.raises(ResumeError, match="cannot be resumed|not a jessy run"):
        open_run(tmp_path)
    with pytest.raises(ResumeError, match="not a jessy run folder"):
        open_run(tmp_path / "nothing-here")


def fill(disk: Path) -> None:
    subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=64k"],
                   capture_output=True)


@pytest.mark.parametrize("phase", ["prepared", "launch"])
def test_a_full_disk_finishes_the_run_with_the_reason(phase, spec_file, small_disk):
    out = small_disk / "runs"
    proc = start(spec_file, out, "ok", pause=phase)
    marker = wait_for(f"*/.paused-{phase}", out)
    fill(small_disk)
    with open(marker, "r+") as fh:  # release the pause without freeing the page it holds
        fh.write("go")
        fh.truncate()
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert proc.returncode == 1, err
    m = manifest_of(marker.parent)
    assert_finished(m, "failed")
    assert "No space left on device" in m["failure"]["reason"], m["failure"]
    assert (marker.parent / "spec.yaml").is_file()  # what was written before stays
