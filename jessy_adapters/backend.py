"""The interface every backend implements. The core talks to backends only through this."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .failures import Failure, classify_exit

if TYPE_CHECKING:
    from .envs import BackendEnv
    from .schedule import Schedule
    from .spec import Spec

EVENT_PREFIX = "JESSY_EVENT "
"""Runner scripts inside backend environments print one JSON metric per line after this."""

ENVIRONMENTS = ("own", "jessy")
"""The values of `Backend.environment`."""

PRODUCES = ("weights", "nothing")
"""The values of `Backend.produces`."""

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
               "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
"""Every backend subprocess: nothing downloads or phones home at run time."""


@dataclass
class Availability:
    ok: bool
    reason: str
    device: str = "cpu"


@dataclass
class PreparedData:
    """Training data after jessy's own validation, subsetting and seeded split."""

    train: Path
    validation: Path | None
    format: str  # "messages" or "text" (prompt/response rows become messages)
    n_train: int
    n_validation: int


@dataclass
class RunInputs:
    model_path: str
    data: PreparedData
    require_accelerator: bool = False
    resume_from: Path | None = None
    """An earlier attempt folder of the same backend whose checkpoints the run continues."""
    init_adapter: Path | None = None
    """A PEFT adapter folder (another backend's last checkpoint) to start training from."""
    schedule: Schedule | None = None
    """The core's training schedule (updates, LR of each, eval points): every backend trains
    exactly this; `jessy_adapters.schedule.run_schedule(spec, inputs)` reads it."""


@dataclass
class Refusal:
    spec_path: str
    reason: str


class TranslationRefused(Exception):
    """The backend cannot honour these spec fields; never drop them silently."""

    def __init__(self, backend: str, refusals: list[Refusal]):
        self.backend = backend
        self.refusals = refusals
        super().__init__("; ".join(f"{r.spec_path}: {r.reason}" for r in refusals))


@dataclass
class Translation:
    """Everything `jessy translate` shows and `jessy run` executes; nothing written yet."""

    files: dict[str, str]
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    carried: dict[str, str] = field(default_factory=dict)
    total_steps: int | None = None


def read_requirements(path: Path) -> tuple[str, ...]:
    """A plugin's requirements.txt, minus comments: the pins its environment is built from."""
    lines = Path(path).read_text().splitlines()
    return tuple(ln.strip() for ln in lines if ln.strip() and not ln.startswith("#"))


class Backend(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    requirements: ClassVar[tuple[str, ...]] = ()
    """pip requirement lines for the backend's own environment, installed in order."""

    pre_requirements: ClassVar[tuple[str, ...]] = ()
    """Installed before `requirements` (e.g. the CPU torch wheel, so pip never pulls CUDA)."""

    produces: ClassVar[str] = "weights"
    """What a successful attempt leaves: "weights" (a PEFT adapter in the run's adapter/, or
    for `method: full` a whole model in model/; a normalise that leaves none fails the
    attempt) or "nothing" (the Modelfile baseline: run.json `outputs` instead). Declared, so
    the core never guesses it from what normalise returns; the contract skips its training
    checks for a backend that produces nothing."""

    runs_here: ClassVar[bool] = True
    """False for launch targets that train on another machine (`LaunchTarget`, e.g.
    SkyPilot): the contract then checks their translation, and their own tests validate the
    task they launch."""

    uninstall: ClassVar[tuple[str, ...]] = ()
    """Removed after install: packages a dependency drags in that break the environment."""

    environment: ClassVar[str] = "own"
    """Where `Translation.command` runs: "own", the backend's venv under $JESSY_HOME/envs
    (`jessy env create`, from `requirements`); or "jessy", jessy's own interpreter
    (sys.executable), for a backend whose libraries install beside jessy (e.g. its `hf`
    extra): `requirements` stays empty and `check` finds them with importlib.util.find_spec."""

    @abstractmethod
    def check(self, env: BackendEnv, require_accelerator: bool = False) -> Availability:
        """Cheap: no backend import. Is it installed, and can it run on this machine?"""

    @abstractmethod
    def translate(self, spec: Spec, inputs: RunInputs, attempt_dir: Path,
                  env: BackendEnv) -> Translation:
        """Pure: spec -> native files and the exact command. Raise TranslationRefused."""

    @abstractmethod
    def normalise(self, attempt_dir: Path, spec: Spec, inputs: RunInputs,
                  adapter_dir: Path) -> dict[str, Any]:
        """Turn the backend's raw outputs into a PEFT adapter in adapter_dir, or, for
        `method: full`, a plain Hugging Face model folder there (full_model.copy_hf_model)."""

    def parse_event(self, line: str) -> dict | None:
        """One metric event from one line of the backend's stdout, or None."""
        if line.startswith(EVENT_PREFIX):
            try:
                return json.loads(line[len(EVENT_PREFIX):])
            except json.JSONDecodeError:
                return None
        return None

    def classify(self, returncode: int, log_tail: str) -> Failure:
        """Backend-specific patterns first; the generic classifier otherwise."""
        return classify_exit(returncode, log_tail)

    def checkpoint_as_peft(self, attempt_dir: Path, out_dir: Path) -> Path | None:
        """This attempt's newest checkpoint as a PEFT adapter folder, for another backend to
        continue from; None when there is none."""
        return None

    def launch_environment(self, env: BackendEnv) -> dict[str, str]:
        """Extra environment variables for the subprocess (threads, BLAS, offline flags)."""
        return {}

    def after_env_create(self, env: BackendEnv) -> list[str]:
        """Post-install checks; return human notes (e.g. which BLAS was found)."""
        return []


class LaunchTarget(Backend):
    """A backend that trains on another machine (SkyPilot: Plan D on a cloud GPU). Besides
    being a backend of a chain (translate, normalise), it writes a task bundle that
    `jessy launch --target NAME` hands the user: what `bundle` returns is written under
    out_dir, its command printed, and with `--now` run there in the target's environment."""

    runs_here: ClassVar[bool] = False

    task_file: ClassVar[str]
    """Required: the bundle's file the command launches (SkyPilot: "sky-task.yaml"), named
    in what `jessy launch` prints."""

    @abstractmethod
    def bundle(self, spec: Spec, out_dir: Path, env: BackendEnv, plan: str, accelerator: str,
               cloud: str | None) -> tuple[dict[str, str], list[str], list[str]]:
        """(files, command, notes): the bundle's files by path relative to out_dir (one of
        them `task_file`, the task the command launches), the argv that launches it
        with cwd = out_dir, and notes for the user. `plan` is the chain the remote machine
        runs, `accelerator` its GPU type, `cloud` a cloud to pin or None. Raise ValueError
        (or OSError) with a message the user can act on; write nothing."""
