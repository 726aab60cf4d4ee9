"""The spec's tracking section: TensorBoard files written by jessy (read back with TensorBoard's
own reader and compared with metrics.jsonl), and each backend's own reporting carried into its
native config, offline, with its files in the run folder (wandb read back for real)."""

from __future__ import annotations

import json
import struct
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from conftest import write_spec
from fake_backend import make_backend
from test_runner import registry_with

from jessy_adapters.backend import OFFLINE_ENV, RunInputs, TranslationRefused
from jessy_adapters.contract import tiny_spec
from jessy_adapters.data import prepare
from jessy_adapters.envs import BackendEnv, list_envs
from jessy_adapters.plugins import load_registry
from jessy_adapters.run.runner import Runner
from jessy_adapters.run.tensorboard import crc32c, masked_crc32c, scalars
from jessy_adapters.spec import SpecError, load_spec
from jessy_adapters.toolkit.tracking import REPORTERS

READER = Path(__file__).with_name("read_tracking.py")
BOOKKEEPING = ("step", "attempt", "time")


def tracking_spec(tmp_path, data, tracking: str, model: Path | None = None):
    return load_spec(write_spec(tmp_path / "spec.yaml", f"""\
name: tracked
model:
  name_or_path: {model or tmp_path}
data:
  train: {data}
  validation_split: 0.25
tracking:
{tracking}"""))


# --- the spec -------------------------------------------------------------------------------

def test_tracking_defaults_to_nothing(tmp_path, toy_data):
    spec = load_spec(write_spec(tmp_path / "s.yaml", f"""\
model: {{name_or_path: {tmp_path}}}
data: {{train: {toy_data}}}
"""))
    assert spec["tracking"] == {"tensorboard": False, "report_to": [], "project": None}


@pytest.mark.parametrize("tracking, path, words", [
    ("  report_to: [neptune]", "/tracking/report_to/0", "expected one of wandb, mlflow, trackio"),
    ("  report_to: wandb", "/tracking/report_to", "expected array"),
    ("  report_to: [tensorboard]", "/tracking/report_to", "set tracking.tensorboard: true"),
    ("  report_to: [wandb, wandb]", "/tracking/report_to", "expected each item once"),
    ("  tensorboard: 'yes'", "/tracking/tensorboard", "expected boolean"),
    ("  project: my project", "/tracking/project", "expected text matching"),
    ("  tensorbord: true", "/tracking/tensorbord", "unknown key; allowed here: project, "
                                                   "report_to, tensorboard"),
])
def test_bad_tracking_is_named_by_path(tmp_path, toy_data, tracking, path, words):
    with pytest.raises(SpecError) as caught:
        tracking_spec(tmp_path, toy_data, tracking)
    assert any(i.path == path and words in i.message for i in caught.value.issues), \
        str(caught.value)


# --- jessy's TensorBoard writer ---------------------------------------------------------------

def test_crc32c_is_castagnoli_and_masked_as_tfrecord_does():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0
    crc = crc32c(b"abc")
    assert masked_crc32c(b"abc") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_every_number_of_an_event_is_a_scalar_and_nothing_else():
    event = {"type": "train", "step": 3, "attempt": 1, "time": 1.5, "backend": "mlx",
             "loss": 0.5, "eval_loss": None, "trained_tokens": 12, "rank_losses": [0.4, None],
             "loss_non_finite": "nan", "flag": True}
    assert scalars(event) == [("loss", 0.5), ("trained_tokens", 12.0), ("rank_losses/0", 0.4)]


def tfrecords(path: Path) -> list[bytes]:
    """The records of a TFRecord file, each checked against both of its checksums."""
    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        head = data[pos:pos + 8]
        (length,), (head_crc,) = struct.unpack("<Q", head), struct.unpack(
            "<I", data[pos + 8:pos + 12])
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        assert head_crc == masked_crc32c(head) and body_crc == masked_crc32c(body)
        out.append(body)
        pos += 16 + length
    return out


def fake_run(tmp_path, toy_data, tracking: str, *classes):
    tmp_path.mkdir(exist_ok=True)
    spec = tracking_spec(tmp_path, toy_data, tracking)
    return Runner(registry_with(*classes), console=lambda m: None).run(
        spec, [c.name for c in classes], tmp_path / "runs")


def test_a_run_writes_one_tensorboard_run_per_attempt(tmp_path, toy_data):
    run = fake_run(tmp_path, toy_data, "  tensorboard: true",
                   make_backend("first", "crash"), make_backend("second"))
    assert run.manifest["status"] == "succeeded"
    folders = sorted(p.name for p in (run.path / "tensorboard").iterdir())
    assert folders == ["01-first", "02-second"]
    for folder in folders:
        (events,) = (run.path / "tensorboard" / folder).glob("events.out.tfevents.*")
        records = tfrecords(events)
        assert b"brain.Event:2" in records[0]
        attempt = int(folder[:2])
        assert len(records) - 1 == sum(1 for e in run.metrics() if e["attempt"] == attempt)


def test_without_tensorboard_nothing_is_written_and_the_run_is_the_same(tmp_path, toy_data):
    plain = fake_run(tmp_path / "a", toy_data, "  tensorboard: false", make_backend("alpha"))
    tracked = fake_run(tmp_path / "b", toy_data, "  tensorboard: true", make_backend("alpha"))
    assert not (plain.path / "tensorboard").exists()
    assert (tracked.path / "tensorboard" / "01-alpha").is_dir()
    # peak_rss_gb is there once jessy could read the process's /proc (a fake trainer may end
    # before the first read): the rest of every event has the same keys
    def shape(run):
        return [sorted(k for k in e if k != "peak_rss_gb") for e in run.metrics()]

    assert shape(plain) == shape(tracked)
    assert sorted(plain.manifest) == sorted(tracked.manifest)
    assert plain.manifest["attempts"][0].keys() == tracked.manifest["attempts"][0].keys()


# --- read back with TensorBoard's own reader ---------------------------------------------------

def _has(env, module: str) -> bool:
    return any(Path(env.root).glob(f"lib/python3*/site-packages/{module}/__init__.py"))


@pytest.fixture(scope="session")
def tensorboard_env():
    """A backend environment with TensorBoard installed (Axolotl's has it)."""
    for env in list_envs():
        if _has(env, "tensorboard"):
            return env
    pytest.skip("no backend environment has tensorboard (jessy env create axolotl)")


def read_back(env, what: str, *paths) -> dict | list:
    out = subprocess.run([str(env.python), str(READER), what, *map(str, paths)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def assert_tensorboard_matches_metrics(env, run_path: Path) -> int:
    """Every number of every metrics.jsonl event, and nothing else, is in the attempt's
    TensorBoard run at its step and time, as TensorBoard reads it. Returns the points."""
    events = [json.loads(x) for x in (run_path / "metrics.jsonl").read_text().splitlines()]
    expected: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for e in events:
        folder = str(run_path / "tensorboard" / f"{e['attempt']:02d}-{e['backend']}")
        for key, value in e.items():
            if key in BOOKKEEPING or isinstance(value, bool) or value is None:
                continue
            if isinstance(value, (int, float)):
                expected[folder][key].append([e["step"], _f32(value), e["time"]])
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    if v is not None:
                        expected[folder][f"{key}/{i}"].append([e["step"], _f32(v), e["time"]])
    got = read_back(env, "tensorboard", *expected)
    assert set(got) == set(expected)
    for folder, tags in expected.items():
        assert set(got[folder]) == set(tags), folder
        for tag, points in tags.items():
            seen = got[folder][tag]
            assert [p[:2] for p in seen] == [p[:2] for p in points], (folder, tag)
            assert [p[2] for p in seen] == pytest.approx([p[2] for p in points], abs=1e-3)
    return sum(len(p) for tags in expected.values() for p in tags.values())


def test_tensorboard_reads_back_every_scalar_of_metrics_jsonl(tmp_path, toy_data,
                                                               tensorboard_env):
    """A fake two-attempt run (fast): both attempts' TensorBoard runs hold exactly
    metrics.jsonl's numbers."""
    run = fake_run(tmp_path, toy_data, "  tensorboard: true",
                   make_backend("first", "crash"), make_backend("second"))
    assert assert_tensorboard_matches_metrics(tensorboard_env, run.path) > 10


def test_a_real_mlx_run_gets_tensorboard_files(tmp_path, mlx_env, tensorboard_env, tiny_model,
                                              toy_data):
    """MLX has no TensorBoard writer of its own: jessy's, fed by the one metric stream."""
    spec = tiny_spec(tmp_path, tiny_model, toy_data, name="mlx-tensorboard",
                     training={"eval_steps": 4}, tracking={"tensorboard": True})
    run = Runner(load_registry(), console=lambda m: None).run(spec, ["mlx"], tmp_path / "runs")
    assert run.manifest["status"] == "succeeded", run.manifest["failure"]
    assert_tensorboard_matches_metrics(tensorboard_env, run.path)
    events = run.metrics()
    assert any(e.get("eval_loss") is not None for e in events)
    assert sum(1 for e in events if e.get("loss") is not None) == 8


# --- the backends' own reporting: translation ------------------------------------------------

TRAINERS = ("unsloth", "llamafactory", "axolotl")
NATIVE = {"unsloth": ("unsloth_config.json", json.loads),
          "llamafactory": ("llamafactory.yaml", yaml.safe_load),
          "axolotl": ("axolotl.yaml", yaml.safe_load), "mlx": ("mlx_lora.yaml", yaml.safe_load)}


@pytest.fixture
def stand_in(tmp_path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"num_hidden_layers": 4, "model_type": "llama"}))
    return d


def env_with(tmp_path, name: str, modules=REPORTERS) -> BackendEnv:
    """A backend environment folder in which `modules` look installed."""
    root = tmp_path / f"env-{name}"
    for module in modules:
        package = root / "lib" / "python3.11" / "site-packages" / module
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
    return BackendEnv(name, root)


def translate(tmp_path, toy_data, model, name, tracking, env=None):
    spec = tracking_spec(tmp_path, toy_data, tracking, model)
    data = prepare(spec, tmp_path / "data")
    out = load_registry().get(name).translate(spec, RunInputs(str(model), data),
                                              tmp_path / "attempt",
                                              env or env_with(tmp_path, name))
    file, parse = NATIVE[name]
    return parse(out.files[file]), out


ALL = "  report_to: [wandb, mlflow, trackio]\n  project: jessy-lab"


@pytest.mark.parametrize("name", TRAINERS)
def test_report_to_reaches_the_native_config_offline_and_in_the_attempt(tmp_path, toy_data,
                                                                        stand_in, name):
    cfg, out = translate(tmp_path, toy_data, stand_in, name, ALL)
    attempt = tmp_path / "attempt"
    if name == "axolotl":  # Axolotl's own keys (axolotl/utils/schemas/integrations.py)
        assert cfg["use_wandb"] and cfg["wandb_project"] == "jessy-lab"
        assert cfg["wandb_mode"] == "offline"
        assert cfg["use_mlflow"] and cfg["mlflow_experiment_name"] == "jessy-lab"
        assert cfg["mlflow_tracking_uri"] == (attempt / "mlruns").as_uri()
        assert cfg["use_trackio"] and cfg["trackio_project_name"] == "jessy-lab"
    else:  # the HF Trainer's
        args = cfg["sft"] if name == "unsloth" else cfg
        assert args["report_to"] == ["wandb", "mlflow", "trackio"]
        assert args["project"] == "jessy-lab"
    assert OFFLINE_ENV["WANDB_MODE"] == "disabled"  # every other run
    assert out.env["WANDB_MODE"] == "offline" and out.env["WANDB_DIR"] == str(attempt)
    assert out.env["WANDB_PROJECT"] == out.env["MLFLOW_EXPERIMENT_NAME"] == "jessy-lab"
    assert out.env["MLFLOW_TRACKING_URI"] == (attempt / "mlruns").as_uri()
    assert out.env["TRACKIO_DIR"] == str(attempt / "trackio")
    assert out.env["HF_HUB_OFFLINE"] == "1"
    assert {"/tracking/report_to", "/tracking/project"} <= set(out.carried)


@pytest.mark.parametrize("name", [*TRAINERS, "mlx"])
def test_no_tracking_changes_nothing(tmp_path, toy_data, stand_in, name):
    cfg, out = translate(tmp_path, toy_data, stand_in, name, "  tensorboard: true",
                         env=BackendEnv(name, tmp_path / "no-env"))
    assert out.env["WANDB_MODE"] == "disabled"
    assert not {"WANDB_DIR", "MLFLOW_TRACKING_URI", "TRACKIO_DIR"} & set(out.env)
    text = json.dumps(cfg)
    assert "wandb" not in text and "mlflow" not in text and "trackio" not in text
    if name in ("unsloth", "llamafactory"):
        assert (cfg["sft"] if name == "unsloth" else cfg)["report_to"] == "none"


def test_the_project_defaults_to_the_spec_name(tmp_path, toy_data, stand_in):
    cfg, out = translate(tmp_path, toy_data, stand_in, "axolotl", "  report_to: [wandb]")
    assert cfg["wandb_project"] == out.env["WANDB_PROJECT"] == "tracked"
    assert "use_mlflow" not in cfg and "MLFLOW_TRACKING_URI" not in out.env


@pytest.mark.parametrize("name", [*TRAINERS, "mlx"])
def test_a_reporter_missing_from_the_environment_is_refused_by_path(tmp_path, toy_data,
                                                                    stand_in, name):
    env = env_with(tmp_path, name, modules=("trackio",))
    with pytest.raises(TranslationRefused) as caught:
        translate(tmp_path, toy_data, stand_in, name, "  report_to: [wandb]", env=env)
    (refusal,) = caught.value.refusals
    assert refusal.spec_path == "/tracking/report_to"
    assert "wandb not installed" in refusal.reason and "pip install wandb" in refusal.reason


def test_mlx_carries_wandb_through_mlx_lms_own_reporter(tmp_path, toy_data, stand_in):
    cfg, out = translate(tmp_path, toy_data, stand_in, "mlx",
                         "  report_to: [wandb]\n  project: jessy-lab")
    assert cfg["report_to"] == "wandb" and cfg["project_name"] == "jessy-lab"
    assert out.env["WANDB_MODE"] == "offline"


@pytest.mark.parametrize("reporter", ["mlflow", "trackio"])
def test_mlx_refuses_what_mlx_lm_cannot_report_to(tmp_path, toy_data, stand_in, reporter):
    with pytest.raises(TranslationRefused) as caught:
        translate(tmp_path, toy_data, stand_in, "mlx", f"  report_to: [{reporter}]")
    (refusal,) = caught.value.refusals
    assert refusal.spec_path == "/tracking/report_to"
    assert f"not {reporter}" in refusal.reason and "tracking.tensorboard" in refusal.reason


# --- wandb for real, offline ------------------------------------------------------------------

@pytest.fixture(scope="module")
def axolotl_env():
    from conftest import require_env

    return require_env("axolotl")


def wandb_rows(env, attempt: Path) -> list[dict]:
    """The history rows of the attempt's one offline wandb run, read from its .wandb file."""
    (offline,) = (attempt / "wandb").glob("offline-run-*")
    (log,) = offline.glob("run-*.wandb")
    return read_back(env, "wandb", log)


def test_axolotls_own_validator_accepts_the_tracking_keys(tmp_path, axolotl_env, stand_in,
                                                          toy_data):
    from test_axolotl_backend import validate

    _, out = translate(tmp_path, toy_data, stand_in, "axolotl", ALL)
    path = tmp_path / "attempt" / "axolotl.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out.files["axolotl.yaml"])
    (result,) = validate(axolotl_env, [path])
    assert result["ok"] and result["dropped"] == [], result


def test_a_real_axolotl_run_reports_to_wandb_offline_inside_the_run(tmp_path, axolotl_env,
                                                                    tiny_model, toy_data):
    if not _has(axolotl_env, "wandb"):
        pytest.skip("wandb is not installed in the Axolotl environment")
    spec = tiny_spec(tmp_path, tiny_model, toy_data, name="axolotl-wandb",
                     training={"eval_steps": 4},
                     tracking={"report_to": ["wandb"], "project": "jessy-test"})
    run = Runner(load_registry(), console=lambda m: None).run(spec, ["axolotl"],
                                                              tmp_path / "runs")
    assert run.manifest["status"] == "succeeded", run.manifest["failure"]
    attempt = run.path / "attempts" / "01-axolotl"
    assert run.manifest["attempts"][0]["env"]["WANDB_MODE"] == "offline"
    rows = wandb_rows(axolotl_env, attempt)
    logged = {r["train/global_step"]: r["train/loss"] for r in rows if "train/loss" in r}
    events = run.metrics()
    trained = {e["step"]: e["loss"] for e in events if e.get("loss") is not None}
    assert len(trained) == 8 and logged == trained  # the Trainer's logs, jessy's loss
    evals = {r["train/global_step"]: r["eval/loss"] for r in rows if "eval/loss" in r}
    jessy_evals = {e["step"]: e["backend_eval_loss"] for e in events
                   if e.get("backend_eval_loss") is not None}
    assert evals and evals.keys() <= jessy_evals.keys()
    assert evals == pytest.approx({s: jessy_evals[s] for s in evals})
    assert not list(tmp_path.glob("wandb")) and not list(Path.cwd().glob("wandb"))


def test_a_real_mlx_run_reports_to_wandb_when_its_environment_has_it(tmp_path, mlx_env,
                                                                     tiny_model, toy_data):
    if not _has(mlx_env, "wandb"):
        pytest.skip("wandb is not installed in the MLX environment (its pins leave it out): "
                    f"{mlx_env.python} -m pip install wandb")
    spec = tiny_spec(tmp_path, tiny_model, toy_data, name="mlx-wandb",
                     training={"eval_steps": 4}, tracking={"report_to": ["wandb"]})
    run = Runner(load_registry(), console=lambda m: None).run(spec, ["mlx"], tmp_path / "runs")
    assert run.manifest["status"] == "succeeded", run.manifest["failure"]
    rows = wandb_rows(mlx_env, run.path / "attempts" / "01-mlx")
    logged = [r["train_loss"] for r in rows if "train_loss" in r]
    trained = [e["loss"] for e in run.metrics() if e.get("loss") is not None]
    assert logged == pytest.approx(trained, rel=1e-5)
    assert any("val_loss" in r for r in rows)
