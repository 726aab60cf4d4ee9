"""`jessy sweep` with a fake backend (the orchestration: space checks, trials as run folders,
pruning through the runner, the report, resuming after a kill, the folder lock, the budget).
The real-backend sweep with a really pruned trial is test_sweep_prunes_a_real_training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import write_spec
from fake_backend import Plugin, make_backend

from jessy_adapters.backend import Translation
from jessy_adapters.cli import cli
from jessy_adapters.plugins import load_registry
from jessy_adapters.schedule import run_schedule

TRAINER = Path(__file__).with_name("fake_sweep_trainer.py")
TESTS = Path(__file__).parent


class Learner(make_backend("learner")):
    """Trains as fast as the spec's learning rate says (tests/fake_sweep_trainer.py)."""

    step_seconds = float(os.environ.get("FAKE_STEP_SECONDS", "0.05"))

    def translate(self, spec, inputs, attempt_dir, env):
        steps = run_schedule(spec, inputs).optimizer_steps
        cfg = {"learning_rate": spec["training"]["learning_rate"], "r": spec["lora"]["r"],
               "steps": steps, "out": str(attempt_dir / "out"),
               "step_seconds": self.step_seconds}
        return Translation(files={"fake.json": json.dumps(cfg)},
                           command=[sys.executable, str(TRAINER), str(attempt_dir / "fake.json")],
                           total_steps=steps)


def registry():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JESSY_LOAD_PLUGINS", "")
        return load_registry(extra_plugins=(Plugin(Learner),))


@pytest.fixture
def spec_file(tmp_path, toy_data):
    model = tmp_path / "model"
    model.mkdir()
    return write_spec(tmp_path / "spec.yaml", f"""\
name: swept
model:
  name_or_path: {model}
data:
  train: [{toy_data.name}]
  validation_split: 0.25
lora: {{r: 8, alpha: 16}}
training:
  epochs: 2
  batch_size: 2
  learning_rate: 0.001
  eval_steps: 2
output:
  dir: {tmp_path / "runs"}
""")


def space(tmp_path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def sweep(spec_file, space_file, *args):
    return CliRunner().invoke(cli, ["sweep", str(spec_file), "--space", str(space_file),
                                    "--backend", "learner", "--no-fallback", *args],
                              obj={"registry": registry()})


PRUNING_SPACE = """\
    /training/learning_rate: [0.01, 1.0e-9]
    /lora/r: [4, 8]
    start_with:
      - {/training/learning_rate: 0.01, /lora/r: 8}
      - {/training/learning_rate: 1.0e-9, /lora/r: 8}
    """


def test_a_sweep_prunes_the_unlearnable_trial_and_writes_its_report(tmp_path, spec_file):
    result = sweep(spec_file, space(tmp_path, PRUNING_SPACE), "--trials", "3", "--seed", "1",
                   "--prune-after", "1")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "sweep-swept"
    report = json.loads((folder / "sweep.json").read_text())
    trials = {t["number"]: t for t in report["trials"]}
    assert report["finished"] == 3 and len(trials) == 3
    assert trials[0]["state"] == "complete" and trials[0]["params"] == {
        "/training/learning_rate": 0.01, "/lora/r": 8}
    pruned = trials[1]
    assert pruned["state"] == "pruned" and pruned["params"]["/training/learning_rate"] == 1e-9
    run = json.loads((folder / pruned["run_dir"] / "run.json").read_text())
    # a status of its own, with its reason and step; not a failure, no fallback, files kept
    assert run["status"] == "pruned" and run["failure"] is None
    assert run["attempts"][-1]["status"] == "pruned" and len(run["attempts"]) == 1
    assert run["pruned"]["step"] < run["schedule"]["optimizer_steps"]
    assert pruned["last_step"] < pruned["planned_steps"] == run["schedule"]["optimizer_steps"]
    assert (folder / pruned["run_dir"] / "metrics.jsonl").stat().st_size > 0
    assert (folder / pruned["run_dir"] / "attempts" / "01-learner" / "fake.json").is_file()
    # the completed trial ran every planned step and is scored on its last validation loss
    done = json.loads((folder / trials[0]["run_dir"] / "run.json").read_text())
    assert done["status"] == "succeeded"
    assert trials[0]["values"] == [done["summary"]["final_eval_loss"]]
    best = min((t for t in trials.values() if t["state"] == "complete"),
               key=lambda t: t["values"][0])
    assert report["best"] == [best["number"]]
    best_spec = yaml.safe_load((folder / "best.yaml").read_text())
    assert best_spec["training"]["learning_rate"] == best["params"]["/training/learning_rate"]
    # best.yaml runs as it is: its data path was rewritten for its own folder
    check = CliRunner().invoke(cli, ["validate", str(folder / "best.yaml")])
    assert check.exit_code == 0, check.output
    assert (folder / best_spec["data"]["train"][0]).resolve() == (tmp_path / "toy.jsonl")
    md = (folder / "sweep.md").read_text()
    assert "**best** complete" in md and "pruned" in md and "behind the median" in md
    for plot in ("history.png", "importance.png"):
        assert (folder / "plots" / plot).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("text, expected", [
    ("/training/learning_rat: [0.1]\n", "space.yaml:1: /training/learning_rat: the spec "
                                         "schema rejects"),
    ("/lora/r: [0, 8]\n", "space.yaml:1: /lora/r: the spec schema rejects {\"/lora/r\": 0}"),
    ("training/epochs: [1]\n", "not a spec path"),
    ("/training/epochs: {low: 4, high: 1}\n", "low must be below high"),
    ("/training/learning_rate: {low: 0, high: 0.1, log: true}\n", "a log range needs low > 0"),
    ("/training/epochs: {low: 1, hi: 3}\n", "a range is {low: X, high: Y}"),
    ("/training/epochs: []\n", "an empty list of choices"),
    ("/training/epochs: [1, 2]\n/training/epochs: [3]\n", "duplicate key"),
    ("/lora/r: [4]\nstart_with:\n  - {/lora/alpha: 8}\n", "is not a path of this space"),
    ("/training/learning_rate: [.nan]\n", "space.yaml:1"),
    ("[1, 2]\n", "a search space is a mapping"),
])
def test_a_bad_space_is_refused_before_any_trial(tmp_path, spec_file, text, expected):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    result = sweep(spec_file, path, "--trials", "2")
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs" / "sweep-swept" / "trials").exists()


@pytest.mark.parametrize("args, expected", [
    (["--objective", "accuracy"], "unknown metric 'accuracy'"),
    (["--constraint", "general_drop=0.05"], "write METRIC<=X"),
    (["--constraint", "general_drop<=inf"], "finite"),
    (["--objective", "final_eval_loss", "--objective", "final_eval_loss"], "twice"),
])
def test_bad_objectives_and_constraints_exit_2(tmp_path, spec_file, args, expected):
    result = sweep(spec_file, space(tmp_path, "/lora/r: [4, 8]\n"), "--trials", "1", *args)
    assert result.exit_code == 2 and expected in result.output, result.output


DRIVER = """\
import sys
sys.path.insert(0, {tests!r})
from test_sweep import registry
from jessy_adapters.cli import cli
cli.main(args=sys.argv[1:], obj={{"registry": registry()}}, prog_name="jessy")
"""


def test_a_killed_sweep_goes_on_without_rerunning_finished_trials(tmp_path, spec_file):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(TESTS)))
    space_file = space(tmp_path, "/training/learning_rate: {low: 1.0e-3, high: 1.0e-2, "
                                 "log: true}\n")
    args = [sys.executable, str(driver), "sweep", str(spec_file), "--space", str(space_file),
            "--backend", "learner", "--no-fallback", "--trials", "3", "--seed", "3",
            "--no-prune"]
    env = {**os.environ, "FAKE_STEP_SECONDS": "0.3"}
    folder = tmp_path / "runs" / "sweep-swept"
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(folder.glob("trials/0001/*/metrics.jsonl")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-trial 1: no handler runs, the study says RUNNING
    proc.wait()
    subprocess.run(["pkill", "-KILL", "-f", str(tmp_path / "runs")], check=False)
    first = list(folder.glob("trials/0000/*/run.json"))
    assert len(first) == 1
    kept = first[0].stat().st_mtime_ns
    again = subprocess.run(args, env={**env, "FAKE_STEP_SECONDS": "0.02"},
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "cut short by a stopped sweep" in again.stderr
    report = json.loads((folder / "sweep.json").read_text())
    trials = {t["number"]: t for t in report["trials"]}
    assert report["finished"] == 3
    assert trials[1]["abandoned"] and trials[1]["state"] == "fail"
    retry = next(t for t in trials.values() if t.get("retry_of") == 1)
    assert retry["params"] == trials[1]["params"] and retry["state"] == "complete"
    # trial 0 finished before the kill: not run again, its run folder untouched
    assert list(folder.glob("trials/0000/*/run.json")) == first
    assert first[0].stat().st_mtime_ns == kept
    assert [t["number"] for t in report["trials"] if t["state"] == "complete"] == [0, 2, 3]


def test_a_second_sweep_on_the_same_folder_is_refused(tmp_path, spec_file):
    import fcntl

    folder = tmp_path / "runs" / "sweep-swept"
    folder.mkdir(parents=True)
    with open(folder / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = sweep(spec_file, space(tmp_path, "/lora/r: [4, 8]\n"), "--trials", "1")
    assert result.exit_code == 2 and "another jessy sweep is running" in result.output


def test_a_folder_of_another_sweep_is_refused(tmp_path, spec_file):
    first = sweep(spec_file, space(tmp_path, "/lora/r: [4, 8]\n"), "--trials", "1")
    assert first.exit_code == 0, first.output
    other = sweep(spec_file, space(tmp_path, "/lora/r: [4, 16]\n"), "--trials", "2")
    assert other.exit_code == 2 and "holds a sweep of another space_sha256" in other.output
    # more trials of the same sweep are fine: it is extended, the first trial kept
    more = sweep(spec_file, space(tmp_path, "/lora/r: [4, 8]\n"), "--trials", "2")
    assert more.exit_code == 0, more.output
    report = json.loads((tmp_path / "runs" / "sweep-swept" / "sweep.json").read_text())
    assert [t["number"] for t in report["trials"]] == [0, 1]


def test_the_budget_stops_starting_trials_that_would_not_fit(tmp_path, spec_file):
    result = sweep(spec_file, space(tmp_path, "/lora/r: [4, 8, 16]\n"), "--trials", "5",
                   "--budget-minutes", "0.001")
    assert result.exit_code == 0, result.output
    assert "would not fit in --budget-minutes" in result.output
    report = json.loads((tmp_path / "runs" / "sweep-swept" / "sweep.json").read_text())
    assert report["finished"] == 1  # the first has no estimate; after it, none fits


def test_sweep_prunes_a_real_training(tmp_path, tiny_model, toy_data, mlx_env):
    """The issue's proof on a real backend: a learning rate of 1e-9 learns nothing, so its
    trial is stopped at an evaluation step by the pruner, its files kept."""
    from jessy_adapters.contract import tiny_spec

    spec = tiny_spec(tmp_path, tiny_model, toy_data, "realsweep",
                     {"max_steps": 8, "eval_steps": 2, "learning_rate": 0.01},
                     output={"dir": str(tmp_path / "runs")})
    space_file = space(tmp_path, """\
        /training/learning_rate: [0.01, 1.0e-9]
        start_with:
          - {/training/learning_rate: 0.01}
          - {/training/learning_rate: 1.0e-9}
        """)
    jessy = Path(sys.executable).with_name("jessy")
    done = subprocess.run([str(jessy), "sweep", str(spec.source), "--space", str(space_file),
                           "--trials", "2", "--backend", "mlx", "--no-fallback",
                           "--prune-after", "1"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "runs" / "sweep-realsweep"
    trials = json.loads((folder / "sweep.json").read_text())["trials"]
    assert [t["state"] for t in trials] == ["complete", "pruned"], trials
    pruned = trials[1]
    run = json.loads((folder / pruned["run_dir"] / "run.json").read_text())
    assert run["status"] == "pruned" and run["winner"] is None
    assert run["pruned"]["step"] < run["schedule"]["optimizer_steps"] == 8
    assert pruned["last_step"] < 8
    attempt = folder / pruned["run_dir"] / "attempts" / "01-mlx"
    assert (attempt / "stdout.log").stat().st_size > 0  # the backend's files are kept
    evals = [json.loads(line) for line in (folder / pruned["run_dir"] / "metrics.jsonl").open()
             if '"eval_loss"' in line]
    first = json.loads((folder / trials[0]["run_dir"] / "run.json").read_text())["summary"]
    # pruned where it was behind: its loss at the pruning step is above the learner's final
    assert evals[-1]["eval_loss"] > first["final_eval_loss"]


class StopRecorder:
    def __init__(self):
        self.pruned = []

    def prune(self, reason, step):
        self.pruned.append(step)


@pytest.mark.parametrize("direction, sign", [("minimize", 1.0), ("maximize", -1.0)])
def test_the_pruner_judges_validation_loss_whatever_the_objective_direction(
        tmp_path, direction, sign):
    """A trial with a higher validation loss is behind, also when the study maximises an
    accuracy: the loss reaches the pruner negated then."""
    import optuna

    from jessy_adapters.sweep.study import _pruning

    study = optuna.create_study(direction=direction, pruner=optuna.pruners.MedianPruner(
        n_startup_trials=1, n_warmup_steps=1))
    first = study.ask()
    _pruning(first, StopRecorder(), tmp_path, sign)({"eval_loss": 1.0, "step": 2})
    study.tell(first, 0.5)
    for loss, pruned in ((3.0, [2]), (0.5, [])):
        runner = StopRecorder()
        trial = study.ask()
        _pruning(trial, runner, tmp_path, sign)({"eval_loss": loss, "step": 2})
        assert runner.pruned == pruned, (direction, loss)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def test_the_shipped_search_spaces_fit_the_quickstart():
    from jessy_adapters.spec import load_spec
    from jessy_adapters.sweep import load_space

    root = Path(__file__).parents[1] / "specs"
    quickstart = load_spec(root / "examples" / "quickstart.yaml")
    spaces = sorted((root / "spaces").glob("*.yaml"))
    assert spaces
    for path in spaces:
        assert load_space(path, quickstart.raw).dimensions


def test_a_trial_that_breaks_a_constraint_is_never_best(tmp_path, spec_file):
    """The fast learner has the lowest validation loss but breaks final_loss>=1.5: the
    slower, feasible trial is best, and the table says why the other is not."""
    result = sweep(spec_file, space(tmp_path, """\
        /training/learning_rate: [0.01, 0.00002]
        start_with:
          - {/training/learning_rate: 0.01}
          - {/training/learning_rate: 0.00002}
        """), "--trials", "2", "--no-prune", "--constraint", "final_loss>=1.5")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "sweep-swept"
    trials = json.loads((folder / "sweep.json").read_text())["trials"]
    fast, slow = trials
    assert fast["values"][0] < slow["values"][0]
    assert fast["feasible"] is False and slow["feasible"] is True
    assert json.loads((folder / "sweep.json").read_text())["best"] == [1]
    md = (folder / "sweep.md").read_text()
    assert "violates a constraint" in md
    assert "| final_eval_loss | final_loss |" in md  # the bounded metric has its column
    assert yaml.safe_load((folder / "best.yaml").read_text())["training"][
        "learning_rate"] == 0.00002


def test_an_unknown_backend_is_refused_before_any_trial(tmp_path, spec_file):
    result = CliRunner().invoke(cli, ["sweep", str(spec_file), "--space",
                                      str(space(tmp_path, "/lora/r: [4, 8]\n")), "--trials",
                                      "2", "--backend", "nosuch", "--no-fallback"],
                                obj={"registry": registry()})
    assert result.exit_code == 2 and "unknown backend(s) 'nosuch'" in result.output
    assert not (tmp_path / "runs" / "sweep-swept").exists()


def test_values_that_break_a_cross_field_rule_together_fail_that_trial_only(tmp_path,
                                                                          spec_file):
    """Each edge passes alone; together warmup_steps and warmup_ratio break the spec's rule:
    the trial fails with the rule's words (no traceback), nothing trains."""
    result = sweep(spec_file, space(tmp_path, """\
        /training/warmup_steps: [1]
        /training/warmup_ratio: [0.1]
        """), "--trials", "1")
    assert result.exit_code == 1, result.output
    assert "the spec rejects these values" in result.output and "warmup" in result.output
    trials = json.loads((tmp_path / "runs" / "sweep-swept" / "sweep.json").read_text())[
        "trials"]
    assert trials[0]["state"] == "fail" and "warmup" in trials[0]["failure"]
    assert not (tmp_path / "runs" / "sweep-swept" / "trials").exists()
