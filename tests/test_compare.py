"""`jessy compare` with fake backends: rows, derived figures, scores, plots, resume, bad input.

The fake trainers are real subprocesses (tests/fake_compare_trainer.py), so the runs are real
run directories; only the training is pretend.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_spec
from fake_backend import Plugin, make_backend

from jessy_adapters.backend import Translation
from jessy_adapters.cli import cli
from jessy_adapters.compare import compare, compare_folder
from jessy_adapters.compare.figures import figures, rate, seconds_per_step
from jessy_adapters.compare.run import STATE_FILE
from jessy_adapters.compare.score import (
    DEFAULT_WEIGHTS,
    WeightsError,
    normalise,
    parse_weights,
    score,
)
from jessy_adapters.plugins import load_registry
from jessy_adapters.run.runner import Runner
from jessy_adapters.spec import load_spec

TRAINER = Path(__file__).with_name("fake_compare_trainer.py")
ROW_KEYS = {"backend", "status", "run_dir", "optimizer_steps", "first_eval_loss",
            "final_eval_loss", "final_train_loss", "trained_tokens", "input_tokens",
            "seconds_per_step", "input_tokens_per_second", "trained_tokens_per_second",
            "peak_rss_gb", "wall_s", "eval"}
PNG = b"\x89PNG\r\n\x1a\n"


def registry_with(*classes):
    """Only these fake backends: no installed plugin loads (JESSY_LOAD_PLUGINS empty)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JESSY_LOAD_PLUGINS", "")
        return load_registry(extra_plugins=(Plugin(*classes),))


def measured_backend(name: str, behaviour: str = "ok", **figures_):
    """A fake backend whose trainer reports the new metric vocabulary with these figures."""
    cfg = {"steps": 5, "loss_scale": 1.0, "learning_rate": 1e-3, "input_tokens": 100,
           "trained_tokens": 40, "eval": True, "rates": {}, **figures_}

    class Measured(make_backend(name)):
        def translate(self, spec, inputs, attempt_dir, env):
            config = {**cfg, "behaviour": behaviour, "out": str(attempt_dir / "out")}
            return Translation(files={"fake.json": json.dumps(config)},
                               command=[sys.executable, str(TRAINER),
                                        str(attempt_dir / "fake.json")],
                               total_steps=cfg["steps"])

    return Measured


ALPHA = measured_backend("alpha", rates={"trained_tokens_per_second": 400.0,
                                         "input_tokens_per_second": 1000.0})
BETA = measured_backend("beta", loss_scale=1.25, trained_tokens=20,
                        rates={"trained_tokens_per_second": 200.0})
GAMMA = make_backend("gamma", "crash")
DELTA = make_backend("delta", available=False)


@pytest.fixture
def spec_file(tmp_path, toy_data):
    return write_spec(tmp_path / "spec.yaml", f"""\
name: cmp
model:
  name_or_path: {tmp_path}
data:
  train: {toy_data}
""")


def jessy_compare(spec_file, out, backends, *classes, extra=()):
    registry = registry_with(*classes)
    args = ["compare", str(spec_file), "--backends", backends, "--output", str(out), *extra]
    return CliRunner().invoke(cli, args, obj={"registry": registry})


def events_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_four_backends_rows_figures_scores_verdict_and_plots(spec_file, tmp_path):
    result = jessy_compare(spec_file, tmp_path / "out", "alpha,beta,gamma,delta",
                           ALPHA, BETA, GAMMA, DELTA)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "compare-cmp"
    assert result.stdout.strip() == str(folder.resolve())
    report = json.loads((folder / "compare.json").read_text())
    assert report["spec"]["name"] == "cmp" and report["spec"]["path"] == str(spec_file)
    assert len(report["spec"]["sha256"]) == 64 and report["complete"] is True
    rows = {r["backend"]: r for r in report["backends"]}
    assert list(rows) == ["alpha", "beta", "gamma", "delta"]
    for row in rows.values():
        assert ROW_KEYS <= set(row)
    assert [r["status"] for r in rows.values()] == ["succeeded", "succeeded", "failed", "failed"]
    assert rows["gamma"]["failure_class"] == "crashed"
    assert "fake trainer exploded" in rows["gamma"]["reason"]
    assert rows["delta"]["failure_class"] == "unavailable"
    assert rows["delta"]["reason"] == "fake: not installed"
    assert rows["gamma"]["score"] is None and rows["delta"]["score"] is None

    alpha, beta = rows["alpha"], rows["beta"]
    schedule = json.loads((folder / alpha["run_dir"] / "run.json").read_text()).get("schedule")
    assert alpha["optimizer_steps"] == (schedule or {}).get("optimizer_steps", 5)
    assert alpha["steps_done"] == 5
    assert alpha["trained_tokens"] == 200 and alpha["input_tokens"] == 500
    assert beta["trained_tokens"] == 100
    assert alpha["first_eval_loss"] == pytest.approx(1.25)
    assert alpha["final_eval_loss"] == pytest.approx(0.625)
    assert beta["final_eval_loss"] == pytest.approx(0.78125)
    assert alpha["final_train_loss"] == pytest.approx(0.4)
    beta_events = events_of(folder / beta["run_dir"])
    for row, events in ((alpha, events_of(folder / alpha["run_dir"])), (beta, beta_events)):
        # jessy measures it (from the first event whose process it could read)
        assert row["peak_rss_gb"] == max(e["peak_rss_gb"] for e in events if "peak_rss_gb" in e)
    assert alpha["trained_tokens_per_second"] == 400.0
    assert alpha["input_tokens_per_second"] == 1000.0
    train = [e for e in beta_events if e["type"] == "train"]
    assert beta["seconds_per_step"] == pytest.approx(
        (train[-1]["time"] - train[0]["time"]) / 4)
    # beta reports no input rate: counted tokens after the first event over the time since
    # it, never the older tokens_per_second (1e9 in every event)
    assert beta["input_tokens_per_second"] == pytest.approx(
        400 / (train[-1]["time"] - train[0]["time"]))
    assert alpha["wall_s"] > 0 and rows["gamma"]["steps_done"] == 2

    best_rss = min(alpha["peak_rss_gb"], beta["peak_rss_gb"])
    memory = {r["backend"]: 10 * best_rss / r["peak_rss_gb"] for r in (alpha, beta)}
    assert alpha["score"]["quality"] == 10.0 and alpha["score"]["speed"] == 10.0
    assert beta["score"]["quality"] == pytest.approx(8.0)
    assert beta["score"]["speed"] == pytest.approx(5.0)
    totals = {}
    for row, quality, speed in ((alpha, 10.0, 10.0), (beta, 8.0, 5.0)):
        assert row["score"]["memory"] == pytest.approx(memory[row["backend"]], abs=0.005)
        totals[row["backend"]] = round(
            10 * (35 * quality + 25 * speed + 20 * memory[row["backend"]]) / 80, 1)
        assert row["score"]["total"] == pytest.approx(totals[row["backend"]], abs=0.05)
    scoring = report["scoring"]
    assert scoring["winner"] == "alpha"
    assert scoring["criteria"]["quality"]["measure"] == "final_eval_loss"
    assert scoring["criteria"]["speed"]["measure"] == "trained_tokens_per_second"
    assert scoring["verdict"].startswith(
        f"**alpha** wins with {alpha['score']['total']}/100 (beta {beta['score']['total']})")
    assert "best quality (final_eval_loss 0.625 vs 0.7812)" in scoring["verdict"]

    md = (folder / "compare.md").read_text()
    assert "| | alpha | beta | gamma | delta |" in md
    assert "| final eval loss | 0.625 | 0.7812 | — | — |" in md
    assert "| quality score (final_eval_loss) | 10.00 | 8.00 | — | — |" in md
    assert (f"| **total / 100** | {alpha['score']['total']:.1f} | {beta['score']['total']:.1f}"
            " | — | — |") in md
    assert "crashed: exit code 1" in md and "unavailable: fake: not installed" in md
    assert "10 × best / value" in md and "**Verdict:** **alpha** wins" in md
    for chart in ("loss.png", "lr.png"):
        assert (folder / "plots" / chart).read_bytes().startswith(PNG)
        assert f"(plots/{chart})" in md
    assert sorted(p.name for p in (folder / "runs").iterdir()) == [
        "alpha", "beta", "delta", "gamma"]
    state = json.loads((folder / STATE_FILE).read_text())
    assert state["runs"]["alpha"] == alpha["run_dir"]


def test_interrupted_comparison_writes_a_partial_report_and_resumes(spec_file, tmp_path):
    out = tmp_path / "out"
    stopped = measured_backend("beta", "interrupt")
    first = jessy_compare(spec_file, out, "alpha,beta,gamma", ALPHA, stopped, GAMMA)
    assert first.exit_code == 130, first.output
    folder = out / "compare-cmp"
    partial = json.loads((folder / "compare.json").read_text())
    statuses = {r["backend"]: r["status"] for r in partial["backends"]}
    assert statuses == {"alpha": "succeeded", "beta": "interrupted", "gamma": "not_run"}
    assert partial["complete"] is False and partial["not_run"] == ["gamma"]
    assert "**Partial**" in (folder / "compare.md").read_text()
    alpha_runs = list((folder / "runs" / "alpha").iterdir())
    kept_mtime = (alpha_runs[0] / "run.json").stat().st_mtime_ns
    assert not (folder / "runs" / "gamma").exists()

    second = jessy_compare(spec_file, out, "alpha,beta,gamma", ALPHA, BETA, GAMMA)
    assert second.exit_code == 0, second.output
    assert "alpha: kept" in second.stderr
    assert list((folder / "runs" / "alpha").iterdir()) == alpha_runs
    assert (alpha_runs[0] / "run.json").stat().st_mtime_ns == kept_mtime
    assert len(list((folder / "runs" / "beta").iterdir())) == 2  # the interrupted one stays
    assert len(list((folder / "runs" / "gamma").iterdir())) == 1
    final = json.loads((folder / "compare.json").read_text())
    assert [r["status"] for r in final["backends"]] == ["succeeded", "succeeded", "failed"]
    assert final["complete"] is True

    third = jessy_compare(spec_file, out, "alpha,beta,gamma", ALPHA, BETA, GAMMA)
    assert third.exit_code == 0 and third.stderr.count(": kept") == 3  # failed is final too
    shutil.rmtree(folder / "runs" / "gamma")  # how a user asks for one backend again
    fourth = jessy_compare(spec_file, out, "alpha,beta,gamma", ALPHA, BETA, GAMMA)
    assert fourth.stderr.count(": kept") == 2
    assert len(list((folder / "runs" / "gamma").iterdir())) == 1


def test_ctrl_c_outside_a_backend_stops_the_comparison(spec_file, tmp_path):
    class CtrlCOnBeta(Runner):
        def run(self, spec, chain, output_dir, require_accelerator=False):
            if chain == ["beta"]:
                raise KeyboardInterrupt
            return super().run(spec, chain, output_dir, require_accelerator)

    spec = load_spec(spec_file)
    runner = CtrlCOnBeta(registry_with(ALPHA, BETA), console=lambda m: None)
    folder = compare_folder(tmp_path / "out", spec)
    comparison, report = compare(spec, ["alpha", "beta"], folder, runner, DEFAULT_WEIGHTS,
                                 console=lambda m: None)
    assert comparison.interrupted and report["not_run"] == ["beta"]
    assert report["scoring"]["verdict"].startswith("**alpha** is the only backend")


def test_eval_scores_quality_by_held_out_accuracy_and_is_not_repeated(spec_file, tmp_path,
                                                                      monkeypatch):
    calls = []

    def fake_evaluate(run_dir):
        backend = json.loads((run_dir / "run.json").read_text())["winner"]
        calls.append(backend)
        accuracy = {"alpha": 0.6, "beta": 0.9}[backend]
        results = {"run": str(run_dir), "backend": backend, "model": "m",
                   "models": {"base": {"held_out_accuracy": 0.0},
                              "tuned": {"held_out_accuracy": accuracy}},
                   "seconds": 1.0, "examples": {"held_out": []}}
        (run_dir / "eval.json").write_text(json.dumps(results))
        return results

    monkeypatch.setattr("jessy_adapters.evaluate.evaluate_run", fake_evaluate)
    out = tmp_path / "out"
    for _ in range(2):
        result = jessy_compare(spec_file, out, "alpha,beta,gamma", ALPHA, BETA, GAMMA,
                               extra=["--eval"])
        assert result.exit_code == 0, result.output
    assert calls == ["alpha", "beta"]  # once each; never the failed gamma
    report = json.loads((out / "compare-cmp" / "compare.json").read_text())
    rows = {r["backend"]: r for r in report["backends"]}
    assert rows["beta"]["eval"] == {"models": {"base": {"held_out_accuracy": 0.0},
                                               "tuned": {"held_out_accuracy": 0.9}},
                                    "seconds": 1.0}
    assert rows["gamma"]["eval"] is None
    assert report["scoring"]["criteria"]["quality"]["measure"] == "held_out_accuracy"
    assert rows["beta"]["score"]["quality"] == 10.0
    assert rows["alpha"]["score"]["quality"] == pytest.approx(10 * 0.6 / 0.9, abs=0.01)
    assert "| held-out accuracy (tuned) | 0.6 | 0.9 | — |" in (
        out / "compare-cmp" / "compare.md").read_text()


def test_weights_override_and_unmeasured_measures_fall_back_or_are_left_out(spec_file,
                                                                          tmp_path):
    sparse = measured_backend("beta", trained_tokens=None, eval=False)
    result = jessy_compare(spec_file, tmp_path / "out", "alpha,beta", ALPHA, sparse,
                           extra=["--weights", "quality=1, speed=3"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out/compare-cmp/compare.json").read_text())
    assert [r["status"] for r in report["backends"]] == ["succeeded", "succeeded"]
    scoring = report["scoring"]
    assert scoring["weights"] == {"quality": 1.0, "speed": 3.0}
    assert scoring["criteria"] == {"speed": {"weight": 3.0, "measure": "seconds_per_step",
                                             "better": "lower"}}
    assert "final_eval_loss" in scoring["left_out"]["quality"]
    assert report["backends"][1]["trained_tokens_per_second"] is None


@pytest.mark.parametrize("backends, message", [
    (",,", "names no backend"),
    ("alpha,,beta", "has an empty name"),
    ("alpha,alpha", "names 'alpha' twice"),
    ("alpha,nosuch", "unknown backend(s) 'nosuch' (installed: alpha, beta)"),
])
def test_bad_backends_exit_2_before_any_run(spec_file, tmp_path, backends, message):
    result = jessy_compare(spec_file, tmp_path / "out", backends, ALPHA, BETA)
    assert result.exit_code == 2 and message in result.stderr
    assert "--backends" in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("weights, message", [
    ("quality=abc", "weight of quality is not a number: 'abc'"),
    ("quality=-1", "must be a finite number >= 0 (got -1)"),
    ("speed=nan", "must be a finite number >= 0 (got nan)"),
    ("looks=5", "unknown criterion 'looks' (measurable: quality, speed, memory)"),
    ("quality=35,ease=10", "'ease' is not measurable"),
    ("community=10", "'community' is not measurable"),
    ("quality35", "'quality35' is not criterion=weight"),
    ("quality=1,quality=2", "quality is weighted twice"),
    ("quality=0", "every weight is 0"),
    ("", "no weights given"),
])
def test_bad_weights_exit_2_before_any_run(spec_file, tmp_path, weights, message):
    result = jessy_compare(spec_file, tmp_path / "out", "alpha", ALPHA,
                           extra=["--weights", weights])
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_parse_weights():
    assert parse_weights(None) == {"quality": 35.0, "speed": 25.0, "memory": 20.0}
    assert parse_weights(" quality = 50 ,speed=0") == {"quality": 50.0, "speed": 0.0}
    assert parse_weights("memory=1e1") == {"memory": 10.0}
    with pytest.raises(WeightsError):
        parse_weights("speed=inf")


def test_another_spec_in_the_same_folder_is_refused(spec_file, tmp_path):
    assert jessy_compare(spec_file, tmp_path / "out", "alpha", ALPHA).exit_code == 0
    spec_file.write_text(spec_file.read_text() + "training:\n  learning_rate: 0.5\n")
    result = jessy_compare(spec_file, tmp_path / "out", "alpha", ALPHA)
    assert result.exit_code == 2 and "another version of this spec" in result.stderr


def test_help_has_an_example():
    result = CliRunner().invoke(cli, ["compare", "--help"])
    assert result.exit_code == 0 and "Example" in result.output
    assert "--backends" in result.output and "--weights" in result.output


def test_recorded_figures_win_over_derived_ones():
    events = [{"type": "train", "step": 1, "loss": 2.0, "time": 10.0, "trained_tokens": 5},
              {"type": "eval", "step": 1, "eval_loss": 3.0, "time": 10.5},
              {"type": "train", "step": 3, "loss": 1.0, "time": 14.0, "trained_tokens": 7}]
    manifest = {"schedule": {"optimizer_steps": 4},
                "summary": {"first_eval_loss": 9.0, "peak_rss_gb": 2.5},
                "attempts": [{"backend": "x", "number": 1, "seconds": 12.0}]}
    got = figures(manifest, events, "x")
    assert got["optimizer_steps"] == 4 and got["first_eval_loss"] == 9.0
    assert got["final_eval_loss"] == 3.0 and got["final_train_loss"] == 1.0
    assert got["peak_rss_gb"] == 2.5 and got["wall_s"] == 12.0
    assert got["trained_tokens"] == 12 and got["input_tokens"] is None
    assert got["seconds_per_step"] == pytest.approx(2.0)  # (14 - 10) / (3 - 1)
    assert got["trained_tokens_per_second"] == pytest.approx(7 / 4)
    assert got["input_tokens_per_second"] is None
    bare = figures({}, events, "x")
    assert bare["optimizer_steps"] == 3 and bare["first_eval_loss"] == 3.0
    assert bare["peak_rss_gb"] is None and bare["wall_s"] is None


def test_rates_and_pace_need_two_timed_events():
    one = [{"type": "train", "step": 1, "time": 1.0, "trained_tokens": 3,
            "tokens_per_second": 50.0}]
    assert seconds_per_step(one) is None
    assert rate(one, "trained_tokens_per_second", "trained_tokens") is None


def test_normalise_and_scoring_edges():
    assert normalise({"a": 2.0, "b": 4.0}, higher_is_better=False) == {"a": 10.0, "b": 5.0}
    assert normalise({"a": 0.0, "b": 0.0}, higher_is_better=True) == {"a": 10.0, "b": 10.0}
    assert normalise({"a": 0.0, "b": 1.0}, higher_is_better=False) == {"a": 10.0, "b": 0.0}
    failed = [{"backend": "a", "status": "failed", "failure_class": "crashed"}]
    assert score(failed, DEFAULT_WEIGHTS).verdict == "No backend succeeded: no verdict."
    unmeasured = [{"backend": b, "status": "succeeded", "final_eval_loss": None,
                   "seconds_per_step": math.nan} for b in "ab"]
    result = score(unmeasured, DEFAULT_WEIGHTS)
    assert result.scores == {} and set(result.left_out) == {"quality", "speed", "memory"}
    tie = [{"backend": b, "status": "succeeded", "final_eval_loss": 1.0} for b in "ab"]
    tied = score(tie, {"quality": 1.0})
    assert tied.verdict == "a and b tie at 100.0/100." and tied.winner is None
