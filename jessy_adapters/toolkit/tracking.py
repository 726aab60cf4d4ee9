"""The spec's `tracking:` section: what jessy writes itself, what backends report themselves.

- `tensorboard: true`: jessy writes TensorBoard event files from the metric events it records
  (run/tensorboard.py `metric_sinks`), the same for every backend, MLX included:
  `<run>/tensorboard/NN-<backend>/`, one TensorBoard run per attempt. A core field: no
  backend carries it.
- `report_to: [wandb, mlflow, trackio]`: the backend's own reporting, which each translator
  carries into its native config (or refuses by path). Nothing leaves the machine and every
  file lands in the attempt's folder (`reporting_env`): wandb offline in `wandb/`, mlflow in a
  file store `mlruns/`, trackio in `trackio/`. `missing_reporters` refuses a reporter whose
  library the backend's environment lacks, before a model is loaded for nothing.
- `project`: the wandb project, mlflow experiment or trackio project; the spec's name if unset.
"""

from __future__ import annotations

from pathlib import Path

from ..backend import Refusal

REPORTERS = ("wandb", "mlflow", "trackio")
"""tracking.report_to's choices: each is also the module its library installs."""


def settings(spec) -> dict:
    """The section with its defaults (a spec written before it existed has none)."""
    t = spec.data.get("tracking") or {}
    return {"tensorboard": t.get("tensorboard", False), "report_to": list(t.get("report_to", [])),
            "project": t.get("project")}


def project(spec) -> str:
    return settings(spec)["project"] or spec.name


def reporting_env(spec, attempt_dir: Path) -> dict[str, str]:
    """Environment for the reporters asked for: offline, writing inside `attempt_dir`. Comes
    after OFFLINE_ENV (whose WANDB_MODE=disabled it turns into offline)."""
    asked, name = settings(spec)["report_to"], project(spec)
    env: dict[str, str] = {}
    if "wandb" in asked:  # wandb writes its runs in WANDB_DIR/wandb/offline-run-*
        env.update(WANDB_MODE="offline", WANDB_DIR=str(attempt_dir), WANDB_PROJECT=name,
                   WANDB_SILENT="true")
    if "mlflow" in asked:
        env.update(MLFLOW_TRACKING_URI=(attempt_dir / "mlruns").as_uri(),
                   MLFLOW_EXPERIMENT_NAME=name)
    if "trackio" in asked:
        env.update(TRACKIO_DIR=str(attempt_dir / "trackio"))
    return env


def _installed(env, module: str) -> bool:
    root = Path(env.root)
    return (any(root.glob(f"lib/python3*/site-packages/{module}/__init__.py"))
            or (root / "Lib" / "site-packages" / module / "__init__.py").is_file())


def missing_reporters(spec, env, backend: str, carried: tuple[str, ...] = REPORTERS
                      ) -> list[Refusal]:
    """A refusal of /tracking/report_to naming the reporters asked for (among those the
    backend `carried`) that its environment lacks."""
    missing = [r for r in settings(spec)["report_to"] if r in carried and not _installed(env, r)]
    if not missing:
        return []
    names = " ".join(missing)
    return [Refusal("/tracking/report_to",
                    f"{', '.join(missing)} not installed in the {backend} environment: "
                    f"`{env.python} -m pip install {names}`, or leave it out of "
                    "tracking.report_to (tracking.tensorboard needs nothing installed)")]
