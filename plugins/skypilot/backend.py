"""Plan D as a backend: `sky launch` runs `jessy run` on a cloud GPU; the adapter comes back.

The remote jessy prints its metric events (`jessy run --events`), SkyPilot streams them here,
so metrics.jsonl fills as the cloud machine trains. Afterwards the remote run folder is copied
back with rsync (SkyPilot adds the cluster to ~/.ssh/config) and its PEFT adapter normalised.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from jessy_adapters import failures
from jessy_adapters.backend import (
    EVENT_PREFIX,
    Availability,
    LaunchTarget,
    RunInputs,
    Translation,
    read_requirements,
)
from jessy_adapters.failures import Failure, last_error_line
from jessy_adapters.paths import REPO_ROOT
from jessy_adapters.plans import chain_for
from jessy_adapters.spec import backend_fields
from jessy_adapters.toolkit.adapters import copy_peft_adapter

from .bundle import DEFAULT_ACCELERATOR, bundle_files

HERE = Path(__file__).resolve().parent
REMOTE_PLAN = "A"  # the seed's Plan D: Plan A's chain, on an A100
IDLE_MINUTES = 30

# No credentials, no capacity, or no network to the cloud (SkyPilot fetches its catalog from
# GitHub first: offline it fails in ~10 s with CloudError ... NameResolutionError).
_NO_CLOUD = re.compile(r"No cloud access|not enabled|sky check|ResourcesUnavailableError|"
                       r"Failed to provision|credentials|CloudError|NameResolutionError|"
                       r"Max retries exceeded", re.I)


def cluster_name(spec_name: str) -> str:
    return "jessy-" + re.sub(r"[^a-z0-9-]", "-", spec_name.lower()).strip("-")[:40]


class SkyPilotBackend(LaunchTarget):
    name = "skypilot"
    description = "Plan D: the spec on a cloud A100 through SkyPilot (remote `jessy run`)"
    requirements = read_requirements(HERE / "requirements.txt")
    task_file = "sky-task.yaml"

    def check(self, env, require_accelerator: bool = False) -> Availability:
        if not env.exists():
            return Availability(False, f"environment missing: run `jessy env create {self.name}`"
                                       " (then `sky check` for cloud credentials)", "cloud")
        return Availability(True, f"launches on the cloud ({DEFAULT_ACCELERATOR}); needs "
                                  "credentials that `sky check` accepts", "cloud")

    def bundle(self, spec, out_dir: Path, env, plan: str = REMOTE_PLAN,
               accelerator: str = DEFAULT_ACCELERATOR, cloud: str | None = None
               ) -> tuple[dict[str, str], list[str], list[str]]:
        """(files, `sky launch` command, notes) for running SPEC's `plan` on the cloud; the
        `jessy launch --target skypilot` command and Plan D both use it."""
        backends = chain_for(plan=plan, spec_plans=spec["plans"])
        if "skypilot" in backends:
            raise ValueError(f"plan {plan} launches SkyPilot itself; name a plan that trains "
                             "(A, B or C)")
        files = bundle_files(spec, REPO_ROOT, out_dir, plan, backends, accelerator, cloud)
        cluster = cluster_name(spec["name"])
        command = [str(env.bin("sky")), "launch", "-y", "-c", cluster, "--down",
                   "-i", str(IDLE_MINUTES), str(out_dir / self.task_file)]
        if "HF_TOKEN:" in files[self.task_file]:
            command[-1:-1] = ["--secret", "HF_TOKEN"]  # value from the local environment
        notes = [f"remote plan {plan} ({' -> '.join(backends)}) on {accelerator} cluster "
                 f"{cluster}; torn down after {IDLE_MINUTES} idle minutes"]
        return files, command, notes

    def translate(self, spec, inputs: RunInputs, attempt_dir: Path, env) -> Translation:
        files, command, notes = self.bundle(spec, attempt_dir, env)
        return Translation(
            files=files, command=command,
            env={"SKYPILOT_DISABLE_USAGE_COLLECTION": "1", "PYTHONUNBUFFERED": "1"},
            notes=notes,
            carried={**{p: "unchanged in the bundle's spec.yaml (the remote jessy translates)"
                        for p in backend_fields()},
                     "/resources/nodes": "num_nodes",
                     "/resources/gpus_per_node": f"accelerators {DEFAULT_ACCELERATOR}:N"})

    def parse_event(self, line: str) -> dict | None:
        """SkyPilot prefixes remote lines with "(task, pid=...)": find the event anywhere."""
        at = line.find(EVENT_PREFIX)
        if at < 0:
            return None
        try:
            event = json.loads(line[at + len(EVENT_PREFIX):])
        except json.JSONDecodeError:
            return None
        event["remote_backend"] = event.pop("backend", None)
        event.pop("attempt", None)
        event.pop("time", None)
        return event

    def normalise(self, attempt_dir: Path, spec, inputs: RunInputs, adapter_dir: Path) -> dict:
        local = attempt_dir / "remote-runs"
        cluster = cluster_name(spec["name"])
        proc = subprocess.run(["rsync", "-a", f"{cluster}:sky_workdir/runs/", f"{local}/"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"could not copy the remote run back from {cluster}: "
                               f"{last_error_line(proc.stderr)}")
        adapters = sorted(p.parent for p in local.glob("*/adapter/adapter_config.json"))
        if not adapters:
            raise RuntimeError(f"the remote run left no adapter (see {local})")
        return copy_peft_adapter(adapters[-1], adapter_dir, inputs.model_path)

    def classify(self, returncode: int, log_tail: str) -> Failure:
        if _NO_CLOUD.search(log_tail):
            return Failure(failures.UNAVAILABLE, last_error_line(log_tail))
        return super().classify(returncode, log_tail)
