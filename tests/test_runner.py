"""The core's orchestration with a fake backend: fallback, failure classes, signals, manifest.

The fake's trainer is a real subprocess; these tests prove the runner, not any backend.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import jsonschema
import pytest
from conftest import write_spec
from fake_backend import Plugin, make_backend

from jessy_adapters import hookimpl
from jessy_adapters.plugins import Registry, RegistryError, load_registry
from jessy_adapters.run.runner import Runner
from jessy_adapters.spec import load_schema, load_spec


@pytest.fixture
def spec(tmp_path, toy_data):
    path = write_spec(tmp_path / "spec.yaml", f"""\
model:
  name_or_path: {tmp_path}
data:
  train: {toy_data}
""")
    return load_spec(path)


def registry_with(*classes) -> Registry:
    import os

    os.environ["JESSY_LOAD_PLUGINS"] = ""
    try:
        return load_registry(extra_plugins=(Plugin(*classes),))
    finally:
        del os.environ["JESSY_LOAD_PLUGINS"]


def run(spec, tmp_path, *classes, chain=None, **kw):
    reg = registry_with(*classes)
    names = chain or [c.name for c in classes]
    return Runner(reg, console=lambda m: None, **kw).run(spec, names, tmp_path / "runs")


def assert_valid_manifest(run_dir):
    manifest = json.loads((run_dir / "run.json").read_text())
    jsonschema.validate(manifest, load_schema("run-manifest"))
    metrics = run_dir / "metrics.jsonl"
    for line in (metrics.read_text().splitlines() if metrics.exists() else []):
        jsonschema.validate(json.loads(line), load_schema("metrics-event"))
    return manifest


def test_success_writes_a_complete_run_dir(spec, tmp_path):
    result = run(spec, tmp_path, make_backend("alpha"))
    m = assert_valid_manifest(result.path)
    assert m["status"] == "succeeded" and m["winner"] == "alpha"
    assert (result.path / "adapter" / "adapter_config.json").exists()
    assert (result.path / "spec.yaml").exists()
    attempt = result.path / "attempts" / "01-alpha"
    assert {"fake.json", "command.txt", "stdout.log", "stderr.log"} <= {
        p.name for p in attempt.iterdir()}
    assert m["summary"]["steps"] == 5 and m["summary"]["final_loss"] == pytest.approx(0.4)
    assert m["attempts"][0]["runtime"] == {"fake": True}
    assert m["data"]["n_train"] + m["data"]["n_validation"] == 32


def test_unavailable_backend_falls_back(spec, tmp_path):
    result = run(spec, tmp_path, make_backend("first", available=False), make_backend("second"))
    m = assert_valid_manifest(result.path)
    assert m["winner"] == "second"
    assert m["attempts"][0]["status"] == "skipped"
    assert m["attempts"][0]["failure"]["kind"] == "unavailable"
    assert not (result.path / "attempts" / "01-first").exists()


def test_unknown_backend_is_unavailable_not_a_crash(spec, tmp_path):
    result = run(spec, tmp_path, make_backend("real"), chain=["nosuch", "real"])
    m = assert_valid_manifest(result.path)
    assert m["attempts"][0]["failure"]["kind"] == "unavailable"
    assert "nosuch" in m["attempts"][0]["failure"]["reason"]
    assert m["winner"] == "real"


@pytest.mark.parametrize("behaviour, kind, words", [
    ("crash", "crashed", "fake trainer exploded"),
    ("oom", "out_of_memory", "MemoryError"),
    ("kill", "crashed", "SIGKILL"),
])
def test_failures_are_classified_logs_kept_and_fall_back(spec, tmp_path, behaviour, kind, words):
    result = run(spec, tmp_path, make_backend("bad", behaviour), make_backend("good"))
    m = assert_valid_manifest(result.path)
    first = m["attempts"][0]
    assert first["status"] == "failed"
    assert first["failure"]["kind"] == kind and words in first["failure"]["reason"]
    assert (result.path / "attempts" / "01-bad" / "stdout.log").read_text()
    assert m["winner"] == "good" and m["status"] == "succeeded"
    # the failed attempt's metrics stay, tagged with its backend
    backends = {json.loads(x)["backend"] for x in (result.path / "metrics.jsonl").open()}
    assert backends == {"bad", "good"}


def test_refused_translation_is_config_rejected(spec, tmp_path):
    result = run(spec, tmp_path, make_backend("picky", refuse=True), make_backend("easy"))
    m = assert_valid_manifest(result.path)
    assert m["attempts"][0]["failure"]["kind"] == "config_rejected"
    assert "fake refuses" in (result.path / "attempts" / "01-picky" / "refused.txt").read_text()
    assert m["winner"] == "easy"


@pytest.mark.parametrize("behaviour", ["nan", "diverge"])
def test_nan_or_divergent_loss_stops_the_run(spec, tmp_path, behaviour):
    start = time.monotonic()
    result = run(spec, tmp_path, make_backend("unstable", behaviour))
    m = assert_valid_manifest(result.path)
    assert m["status"] == "failed"
    assert m["attempts"][0]["failure"]["kind"] == "nan_loss"
    assert time.monotonic() - start < 20  # stopped, not left to sleep through its steps
    events = [json.loads(x) for x in (result.path / "metrics.jsonl").open()]
    if behaviour == "nan":
        assert events[2]["loss"] is None and events[2]["loss_non_finite"] == "nan"


def test_data_error_stops_without_fallback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "response": "yo"}\n{"prompt": "no response"}\n')
    spec = load_spec(write_spec(tmp_path / "s.yaml",
                                f"model:\n  name_or_path: {tmp_path}\ndata:\n  train: {bad}\n"))
    result = run(spec, tmp_path, make_backend("a"), make_backend("b"))
    m = assert_valid_manifest(result.path)
    assert m["failure"]["kind"] == "data_error"
    assert f"{bad}:2: missing field 'response'" in m["failure"]["reason"]
    assert m["attempts"] == []


def test_timeout_is_classified(spec, tmp_path):
    result = run(spec, tmp_path, make_backend("slow", "sleep"), timeout=1.5)
    m = assert_valid_manifest(result.path)
    assert m["attempts"][0]["failure"]["kind"] == "timeout"


def interrupt_once_training(root, pattern="*/attempts/01-*/stdout.log"):
    """SIGINT to this process once the backend has printed its first line (so the signal
    reaches training on a slow machine too, not data preparation)."""
    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(p.stat().st_size for p in root.glob(pattern)):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()


def test_sigint_interrupts_gracefully_and_keeps_everything(spec, tmp_path):
    reg = registry_with(make_backend("slow", "sleep"), make_backend("never"))
    runner = Runner(reg, console=lambda m: None)
    interrupt_once_training(tmp_path / "runs")
    result = runner.run(spec, ["slow", "never"], tmp_path / "runs")
    m = assert_valid_manifest(result.path)
    assert m["status"] == "interrupted"
    assert len(m["attempts"]) == 1  # no fallback after the user said stop
    assert "stopping gracefully" in (result.path / "attempts/01-slow/stderr.log").read_text()


def test_stubborn_backend_is_killed_after_the_grace(spec, tmp_path, monkeypatch):
    import jessy_adapters.run.supervise as supervise

    monkeypatch.setattr(supervise, "GRACE_SECONDS", 0.5)
    reg = registry_with(make_backend("stubborn", "stubborn"))
    runner = Runner(reg, console=lambda m: None)
    interrupt_once_training(tmp_path / "runs")
    start = time.monotonic()
    result = runner.run(spec, ["stubborn"], tmp_path / "runs")
    assert time.monotonic() - start < 15
    assert result.manifest["status"] == "interrupted"


def test_runs_never_overwrite_each_other(spec, tmp_path):
    a = run(spec, tmp_path, make_backend("x"))
    b = run(spec, tmp_path, make_backend("x"))
    assert a.path != b.path and a.path.exists() and b.path.exists()


def test_registry_refuses_duplicates():
    reg = Registry()
    reg.register(make_backend("dup"), "one")
    with pytest.raises(RegistryError, match="registered twice"):
        reg.register(make_backend("dup"), "two")


def test_a_plugin_that_registers_badly_is_listed_and_the_others_still_load():
    class Bad:
        @hookimpl
        def register_backends(self, register):
            register(make_backend("fine-one"))
            register(dict)

    class Good:
        @hookimpl
        def register_backends(self, register):
            register(make_backend("fine-two"))

    reg = load_registry(extra_plugins=(Bad(), Good()))
    assert "fine-two" in reg.backends and "mlx" in reg.backends
    [(source, error)] = [(s, e) for s, e in reg.load_errors.items() if "dict" in e]
    assert error.startswith("RegistryError") and "not a jessy_adapters.backend.Backend" in error


def test_registry_refuses_non_backends():
    with pytest.raises(RegistryError, match="not a jessy_adapters.backend.Backend"):
        Registry().register(dict, "bad")


def test_allow_list_filters_entry_points(monkeypatch):
    monkeypatch.setenv("JESSY_LOAD_PLUGINS", "")
    assert load_registry().names() == []
    monkeypatch.setenv("JESSY_LOAD_PLUGINS", "mlx")
    assert load_registry().names() == ["mlx"]


def test_several_training_files_are_mixed(tmp_path, toy_data):
    extra = tmp_path / "extra.jsonl"
    extra.write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n"
                             for i in range(8)))
    spec = load_spec(write_spec(tmp_path / "mix.yaml", f"""\
model:
  name_or_path: {tmp_path}
data:
  train: [{toy_data}, {extra}]
  validation_split: 0.25
"""))
    result = run(spec, tmp_path, make_backend("mixer"))
    data = result.manifest["data"]
    assert data["n_train"] + data["n_validation"] == 32 + 8
    rows = (result.path / "data" / "train.jsonl").read_text() + (
        result.path / "data" / "valid.jsonl").read_text()
    assert rows.count('"q3"') == 1


def test_train_must_be_a_file_or_a_list(tmp_path):
    from jessy_adapters.spec import SpecError

    path = write_spec(tmp_path / "bad.yaml", f"model:\n  name_or_path: {tmp_path}\n"
                                             "data:\n  train: 3\n")
    with pytest.raises(SpecError, match="expected a string or a list"):
        load_spec(path)


def test_concurrent_runs_in_one_folder_never_clobber(spec, tmp_path):
    """Eight runs at once into one output folder: eight complete, parseable run dirs."""
    import concurrent.futures

    reg = registry_with(make_backend("par"))

    def one(_):
        return Runner(reg, console=lambda m: None).run(spec, ["par"], tmp_path / "runs")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    paths = {r.path for r in results}
    assert len(paths) == 8
    for path in paths:
        m = assert_valid_manifest(path)
        assert m["status"] == "succeeded"
        assert len((path / "metrics.jsonl").read_text().splitlines()) == 5


def test_on_event_sees_every_recorded_event(spec, tmp_path):
    """`jessy run --events` prints what metrics.jsonl records, as it is recorded (Plan D reads
    the remote run's events this way)."""
    seen = []
    result = run(spec, tmp_path, make_backend("alpha"), on_event=seen.append)
    recorded = [json.loads(x) for x in (result.path / "metrics.jsonl").open()]
    assert seen == recorded and len(seen) >= 5


def test_timings_say_where_the_wall_time_went(spec, tmp_path):
    """run.json splits the wall time into jessy's steps and the backend process, so the layer's
    overhead is read from one run (benchmarks/overhead.py) instead of a noisy difference."""
    started = time.monotonic()
    result = run(spec, tmp_path, make_backend("first", available=False),
                 make_backend("second"))
    wall = time.monotonic() - started
    m = assert_valid_manifest(result.path)
    skipped, won = m["attempts"]
    assert set(skipped["phases"]) == {"check_s"}
    phases = won["phases"]
    assert list(phases) == ["check_s", "translate_s", "backend_s", "normalise_s", "plot_s"]
    # the fake trainer is a real Python process: it takes longer than writing its config
    assert phases["backend_s"] > phases["translate_s"]
    assert sum(phases.values()) <= won["seconds"] + 0.01
    t = m["timings"]
    assert t["prepare_s"] > 0
    # this test process started long before the run (pytest), so start-up covers that, and
    # the whole process outlasts the run's own wall time
    assert t["startup_s"] > 0 and t["process_s"] >= t["startup_s"] + wall - 0.05


def test_a_model_that_cannot_be_had_offline_stops_before_any_attempt(tmp_path, toy_data,
                                                                     monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    path = write_spec(tmp_path / "spec.yaml", f"model:\n  name_or_path: someorg/not-here\n"
                                              f"data:\n  train: {toy_data}\n")
    result = run(load_spec(path), tmp_path, make_backend("fake", "ok"))
    m = result.manifest
    assert m["status"] == "failed" and m["attempts"] == []
    assert m["failure"]["kind"] == "config_rejected"
    assert "neither a local folder nor in the Hugging Face cache" in m["failure"]["reason"]
    (tmp_path / "hub" / "models--someorg--not-here").mkdir(parents=True)
    assert run(load_spec(path), tmp_path, make_backend("fake", "ok")).manifest[
        "status"] == "succeeded"
