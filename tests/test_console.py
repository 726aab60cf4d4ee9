"""jessy run's console: plain progress lines (with the time left) where stderr is not a terminal,
a live tqdm bar where it is; the time left from the attempt's event times and planned steps."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import termios

import pytest
from fake_backend import make_backend
from test_runner import registry_with

from jessy_adapters.run.console import Console, Eta, format_duration, progress_line
from jessy_adapters.run.runner import Runner


@pytest.mark.parametrize("seconds, shown", [(0, "0s"), (44.6, "45s"), (80, "1m20s"),
                                            (3599, "59m59s"), (7500, "2h05m"), (-3, "0s")])
def test_durations_read_as_a_person_says_them(seconds, shown):
    assert format_duration(seconds) == shown


def event(step, time, **extra):
    return {"type": "train", "step": step, "time": time, "backend": "mlx", "attempt": 1,
            **extra}


def test_time_left_is_seconds_per_step_since_the_first_event_times_the_steps_to_go():
    eta = Eta(10)
    assert eta.update(event(1, 100.0)) is None  # one point: no rate yet
    assert eta.update(event(3, 104.0)) == pytest.approx(14.0)  # 2 s/step, 7 steps to go
    assert eta.update({"type": "eval", "step": 3, "time": 106.0}) == pytest.approx(21.0)
    assert eta.update(event(10, 118.0)) == 0.0
    assert Eta(None).update(event(1, 1.0)) is None and Eta(None).update(event(2, 2.0)) is None
    assert Eta(5).update({"type": "train"}) is None


def test_the_plain_line_keeps_its_format_and_appends_the_time_left():
    e = event(2, 1.0, loss=1.23456, eval_loss=None, learning_rate=2e-4,
              trained_tokens_per_second=412.4, peak_rss_gb=1.234)
    assert progress_line(e, 4) == ("[mlx] step 2/4  loss 1.2346  lr 2.00e-04  412 trained tok/s"
                                   "  peak RSS 1.23 GB")
    assert progress_line(e, 4, 80) == progress_line(e, 4) + "  eta 1m20s"
    assert progress_line(event(2, 1.0), None) == "[mlx] step 2"


def test_off_a_terminal_the_console_prints_plain_lines():
    out = io.StringIO()
    console = Console(out)
    assert not console.live
    console("hello")
    console.progress(event(1, 1.0, loss=2.0), 4, None)
    console.progress(event(2, 3.0, loss=1.0), 4, 4.0)
    console.end_progress()
    assert out.getvalue().splitlines() == ["hello", "[mlx] step 1/4  loss 2.0000",
                                           "[mlx] step 2/4  loss 1.0000  eta 4s"]


@pytest.mark.parametrize("columns", [120, 0])  # 0: a terminal that does not say its size
def test_on_a_terminal_the_console_draws_a_live_bar_with_messages_above_it(columns):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    with os.fdopen(slave, "w") as tty:
        console = Console(tty)
        assert console.live
        console.progress(event(1, 1.0, loss=2.0, trained_tokens_per_second=300.0), 8, None)
        console("[mlx] note: a message while training")
        console.progress(event(4, 7.0, loss=0.5), 8, 8.0)
        console.progress({**event(4, 8.0), "type": "eval", "eval_loss": 0.75}, 8, 9.0)
        console.end_progress()
        console("after the bar")
    text = os.read(master, 65536).decode()
    os.close(master)
    assert "\r" in text  # redrawn in place
    last = [ln for ln in re.split(r"[\r\n]+", text) if "4/8" in ln][-1]
    assert "[mlx]" in last and "50%" in last
    assert "eta 9s" in last and "loss 0.5000" in last and "eval_loss 0.7500" in last
    assert "300 trained tok/s" in last
    assert "a message while training" in text
    assert text.rstrip().endswith("after the bar")


def test_a_new_attempt_gets_a_bar_of_its_own():
    out = io.StringIO()
    console = Console(out, live=True)
    console.progress(event(2, 1.0), 5, None)
    first = console._bar
    console.progress({**event(1, 2.0), "attempt": 2, "backend": "unsloth"}, 5, None)
    assert console._bar is not first and first.disable  # closed: tqdm disables a closed bar
    assert "[mlx]" in out.getvalue() and "[unsloth]" in out.getvalue()
    console.end_progress()
    assert console._bar is None


def test_a_run_prints_the_time_left_on_its_progress_lines(tmp_path, toy_data):
    """Through the Supervisor: a plain callable gets progress_line's lines, a Console draws
    them itself; both with the time left once the attempt has two events."""
    from conftest import write_spec

    from jessy_adapters.spec import load_spec

    spec = load_spec(write_spec(tmp_path / "s.yaml", f"""\
model: {{name_or_path: {tmp_path}}}
data: {{train: {toy_data}}}
"""))
    lines: list[str] = []
    Runner(registry_with(make_backend("alpha")), console=lines.append).run(
        spec, ["alpha"], tmp_path / "runs")
    progress = [ln for ln in lines if ln.startswith("[alpha] step ")]
    assert [ln.split("  ")[0] for ln in progress] == [f"[alpha] step {i}/5" for i in
                                                      range(1, 6)]
    assert "eta" not in progress[0] and all(" eta " in ln for ln in progress[1:])
    assert progress[-1].endswith("eta 0s")
    out = io.StringIO()
    Runner(registry_with(make_backend("alpha")), console=Console(out)).run(
        spec, ["alpha"], tmp_path / "runs")
    assert "[alpha] step 5/5" in out.getvalue() and "eta 0s" in out.getvalue()
