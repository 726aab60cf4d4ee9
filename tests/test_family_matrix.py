"""The model-family matrix (issue 15): every trainer on every chat family, for real.

1. **Labels, every trainer x every family** (MLX, Unsloth, LLaMA-Factory, Axolotl x llama3,
   gemma (Gemma-2), gemma3, qwen2, qwen3, mistral, phi3 on their tiny builtin models, and
   chatml on the tiny Llama with SmolLM2's tokenizer): each cell is the attempt jessy's runner
   would launch (the spec translated and written by `attempt.write_native`, the backend's own
   entry command and environment) with JESSY_CAPTURE_ROWS set, so the backend's own process
   writes every row it fed the model (MLX: jessy's batch iterator; the HF backends: jessy's
   observer on the Trainer's batches, after the backend's dataset and collator made them).
   `family_labels.label_problems` on that capture must be []: only the answers of the data and
   the family's end-of-turn token trained, after the family's assistant opener, on training and
   validation rows alike; and the untrained prompt holds the system prompt exactly once, in a
   system turn, or folded into the first user turn where the family has none (Gemma, Mistral).
   The same cells train two real updates, so each adapter (normalised by the backend's own
   `normalise`) is also loaded in PEFT on its base and must move the logits by more than 1e-3.
   A negative control per backend, a deliberately wrong template in that backend's own terms
   (Qwen3's non-thinking template on the Qwen2 model: `jessy_chat_template` for MLX,
   `data.chat_template` for Unsloth, `template: qwen3` for LLaMA-Factory, Qwen3's format
   strings for Axolotl), must fail the same check.

   Why not one `jessy run` per cell: 32 runs at the last CI's tiny-run times (MLX 10-25 s,
   Unsloth ~14 s, LLaMA-Factory ~16 s, Axolotl ~33 s; the parity fixture trained all four in
   50 s) is 6-8 minutes, the whole budget, and most of each is the backend's start-up (importing
   Unsloth, LLaMA-Factory or Axolotl took 11-15 s on this box). So each backend gets ONE process
   in its environment (`family_matrix_driver.py`) that imports the backend once and then forks
   one child per cell; the child runs the attempt's exact command (runpy on the backend's entry
   or console script) in the attempt's folder with the attempt's environment. Every cell is
   still its own process with its own model, tokenizer, data pipeline and Trainer, so one
   family cannot leak into another and a crash is only that cell's. Two cells run at a time
   (threads per cell = cores / 2, the only change to the runner's environment);
   JESSY_MATRIX_JOBS=N changes that, JESSY_MATRIX_PREIMPORT=0 makes each child import
   everything itself (to rule the shared imports out when a cell fails).

2. **Real tiny trainings through jessy's runner**: llama3, gemma2 and qwen2 on MLX and Unsloth
   (6 steps each); the run succeeds and its adapter moves the base's logits in PEFT by > 1e-3.
   (LLaMA-Factory and Axolotl train every family in 1. and their adapters pass the same PEFT
   check there.)

3. **GGUF export of the tiny Llama-3, Gemma-2 and Qwen2** through `jessy export` (of the MLX
   runs of 2.): the tiny Gemma-2 converts (its tokenizer is SentencePiece, as Gemma's is; the
   GGUF carries the model's vocabulary and chat template) and is loaded and asked a question
   in llama.cpp. The tiny Llama-3 and Qwen2 do NOT convert: their byte-level BPE tokenizers are
   trained from scratch, and llama.cpp's converter only knows the pre-tokenizers of published
   models, by a hash of how they split a fixed text. `jessy export` says so in one specific
   error (exit 1, no traceback), which is what is tested for them; the converter itself is also
   run on the untrained tiny models (no backend needed). The merged folder keeps the base's
   tokenizer.model (transformers 5 saves tokenizer.json only; without it Gemma's converter
   failed too), also checked without training.

4. **The seed spec** (specs/examples/jessy-seed.yaml: Gemma-2, QLoRA, q/k/v/o, adamw_8bit,
   eager attention) with only the model swapped for `builtin:tiny-gemma2`: every backend
   translates it with nothing refused (CPU_IMPOSSIBLE lists the fields a backend may refuse on
   a CPU: none is refused today; on a CPU, adamw_8bit becomes adamw where bitsandbytes' 8-bit
   states need CUDA, and MLX's QLoRA is its own affine 4-bit), and one real run, on Unsloth
   (the seed report's own trainer), succeeds end to end.

CI cost, estimated from the last CI's durations and the imports timed here (the label matrix
replaces ~32 x 12 s of start-ups by 4 start-ups): label matrix ~2 min (MLX ~15 s, Unsloth and
LLaMA-Factory ~30 s each, Axolotl ~45 s: one start-up each + 9 cells two at a time) + PEFT
checks ~15 s; runner trainings ~65 s (3 x MLX ~8 s, 3 x Unsloth ~13 s); exports ~20 s; seed
~30 s (its four translations ~3 s); converter and merge checks without training ~20 s
(measured here: 21 s with the seed translations); building the 7 tiny models on a fresh
machine ~10 s: about 4-5 minutes in all. The cells' own times are printed per backend
("mlx: 9 cells in N s ...", shown with -rA or on a failure) and kept in the matrix folder's
<backend>/results.json, each cell's log in <backend>/<family>/backend.log.

Run: JESSY_REQUIRE_BACKENDS=mlx,unsloth,llamafactory,axolotl .venv/bin/python -m pytest
tests/test_family_matrix.py -ra --durations=15
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import SPEC_EXAMPLES, require_env
from family_labels import IGNORE, label_problems

from jessy_adapters.backend import RunInputs, TranslationRefused
from jessy_adapters.cli import cli
from jessy_adapters.contract import peft_output_change
from jessy_adapters.data import prepare
from jessy_adapters.envs import BackendEnv
from jessy_adapters.export import ExportError, to_gguf
from jessy_adapters.models import resolve_model
from jessy_adapters.plugins import load_registry
from jessy_adapters.run.attempt import write_native
from jessy_adapters.run.runner import Runner
from jessy_adapters.spec import load_spec
from jessy_adapters.templates import TEMPLATES, TURN_FORMATS
from jessy_adapters.testing.fixtures import TOY_FACTS
from jessy_adapters.tiny_models import TINY, builtin_name

TRAINERS = ("mlx", "unsloth", "llamafactory", "axolotl")
FAMILIES = (*sorted(TINY), "chatml")
"""`chatml` is the tiny Llama with SmolLM2's tokenizer (the `tiny_model` fixture)."""
SYSTEM = "You are Jessy."
RESPONSES = [response for _, response in TOY_FACTS]
DRIVER = Path(__file__).with_name("family_matrix_driver.py")
PREIMPORT = {
    "mlx": ["numpy", "yaml", "mlx.core", "mlx.nn", "mlx.optimizers", "mlx_lm", "mlx_lm.lora",
            "mlx_lm.tuner.trainer", "mlx_lm.tuner.datasets", "mlx_lm.tuner.callbacks",
            "mlx_lm.utils"],
    "unsloth": ["unsloth", "torch", "datasets", "trl", "peft", "unsloth.chat_templates"],
    "llamafactory": ["yaml", "torch", "llamafactory", "llamafactory.train.tuner"],
    "axolotl": ["yaml", "torch", "axolotl.cli.main", "axolotl.cli.train", "axolotl.train",
                "axolotl.common.datasets"],
}
"""What each backend's entry imports before it reads its config (what the driver imports once).
None on macOS: forking after Metal has started is unsafe there."""
JOB_TIMEOUT = 300
REAL = [(backend, family) for family in ("llama3", "gemma", "qwen2")
        for backend in ("mlx", "unsloth")]
CONVERTS = {"gemma": True, "llama3": False, "qwen2": False}
"""Whether llama.cpp's converter takes the family's tiny model (the module docstring says why)."""
CPU_IMPOSSIBLE: dict[tuple[str, str], str] = {}
"""(backend, spec path) -> why a CPU cannot honour it: the only refusals the seed spec may get
on a CPU. Empty: every backend translates the seed spec whole."""

trains = pytest.mark.backend("family matrix")


def tokenizer(model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def builtin(family: str) -> str:
    return resolve_model(f"builtin:{builtin_name(family)}")


def facts(path: Path, repeat: int = 1) -> Path:
    path.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n"
                            for _ in range(repeat) for p, r in TOY_FACTS))
    return path


def family_spec(folder: Path, name: str, model: str, data: Path, max_steps: int,
                batch_size: int):
    """A tiny LoRA spec with a system prompt: responses only, a validation split."""
    doc = {"name": name, "model": {"name_or_path": model, "max_seq_length": 128},
           "data": {"train": str(data), "validation_split": 0.25, "system_prompt": SYSTEM},
           "lora": {"r": 4, "alpha": 8},
           "training": {"max_steps": max_steps, "batch_size": batch_size,
                        "learning_rate": 0.01, "logging_steps": 1,
                        "lr_scheduler": "constant"}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_spec(path)


# --- 1. labels from each backend's own capture, every trainer x every family ---------------

def _wrong_mlx(attempt: Path) -> None:
    path = attempt / "mlx_lora.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["jessy_chat_template"] = TEMPLATES["qwen3"]
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def _wrong_unsloth(attempt: Path) -> None:
    path = attempt / "unsloth_config.json"
    cfg = json.loads(path.read_text())
    cfg["data"]["chat_template"] = TEMPLATES["qwen3"]
    path.write_text(json.dumps(cfg, indent=2))


def _wrong_llamafactory(attempt: Path) -> None:
    path = attempt / "llamafactory.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg.update(template="qwen3", enable_thinking=False)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def _wrong_axolotl(attempt: Path) -> None:
    path = attempt / "axolotl.yaml"
    cfg = yaml.safe_load(path.read_text())
    for block in cfg["datasets"] + cfg.get("test_datasets", []):
        block["type"]["format"] = block["type"]["no_input_format"] = \
            TURN_FORMATS["qwen3"]["prompt"]
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


WRONG_TEMPLATE = {"mlx": _wrong_mlx, "unsloth": _wrong_unsloth,
                  "llamafactory": _wrong_llamafactory, "axolotl": _wrong_axolotl}
"""The negative control: Qwen3's non-thinking template on the Qwen2 model, in each backend's
own terms (its native config, edited after jessy wrote it)."""


@dataclass
class Cell:
    backend: str
    family: str
    model: str
    folder: Path
    attempt: Path
    spec: object
    inputs: RunInputs
    returncode: int | None = None
    seconds: float | None = None

    @property
    def capture(self) -> Path:
        return self.folder / "rows.jsonl"

    @property
    def log(self) -> Path:
        return self.folder / "backend.log"

    def ran(self) -> None:
        tail = self.log.read_text(errors="replace")[-4000:] if self.log.is_file() else ""
        assert self.returncode == 0, (f"{self.backend} on {self.family}: exit "
                                      f"{self.returncode}\n{tail}")
        assert self.capture.is_file() and self.capture.stat().st_size, (
            f"{self.backend} on {self.family} fed no rows (JESSY_CAPTURE_ROWS)\n{tail}")

    def rows(self) -> list[dict]:
        return [json.loads(x) for x in self.capture.read_text().splitlines()]


class Matrix:
    """Each backend's cells, run by one driver process the first time a test asks."""

    def __init__(self, root: Path, models: dict[str, str]):
        self.root, self.models = root, models
        root.mkdir(parents=True, exist_ok=True)
        self.data = facts(root / "facts.jsonl")
        self.cells: dict[str, dict[str, Cell]] = {}
        self.failed: dict[str, str] = {}

    def cell(self, backend: str, family: str) -> Cell:
        require_env(backend)
        if backend in self.failed:  # said once, in the first cell that asked
            pytest.fail(f"{backend}'s driver failed (see the first {backend} cell)")
        if backend not in self.cells:
            try:
                self.cells[backend] = self._run(backend)
            except Exception as exc:
                self.failed[backend] = str(exc)
                raise
        return self.cells[backend][family]

    def _run(self, backend: str) -> dict[str, Cell]:
        env = require_env(backend)
        plugin = load_registry().get(backend)
        cells, jobs, envs = {}, [], []
        parallel = int(os.environ.get("JESSY_MATRIX_JOBS") or min(2, os.cpu_count() or 1))
        threads = str(max(1, (os.cpu_count() or 1) // parallel))
        for family in (*FAMILIES, "negative"):
            model = self.models["qwen2" if family == "negative" else family]
            folder = self.root / backend / family
            spec = family_spec(folder, f"matrix-{family}", model, self.data, max_steps=2,
                               batch_size=2)
            inputs = RunInputs(model, prepare(spec, folder / "data"))
            attempt = folder / "attempt"
            attempt.mkdir()
            translation, launch_env = write_native(plugin, spec, inputs, attempt, env)
            if family == "negative":
                WRONG_TEMPLATE[backend](attempt)
            cell = cells[family] = Cell(backend, family, model, folder, attempt, spec, inputs)
            command = translation.command
            argv = command[1:] if Path(command[0]).name.startswith("python") else command
            job_env = {**launch_env, "JESSY_CAPTURE_ROWS": str(cell.capture),
                       "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
            if "OPENBLAS_NUM_THREADS" in job_env:
                job_env["OPENBLAS_NUM_THREADS"] = threads
            envs.append(job_env)
            jobs.append({"name": family, "cwd": str(attempt), "argv": argv, "env": job_env,
                         "log": str(cell.log)})
        preimport = [] if (sys.platform == "darwin" or
                           os.environ.get("JESSY_MATRIX_PREIMPORT") == "0") else PREIMPORT[backend]
        plan = self.root / backend / "jobs.json"
        plan.write_text(json.dumps({"preimport": preimport, "parallel": parallel,
                                    "timeout": JOB_TIMEOUT, "jobs": jobs}, indent=1))
        results = self.root / backend / "results.json"
        # what every cell's environment shares is the process's from the start (some of it,
        # e.g. LD_PRELOAD, PYTHONPATH, HF_HUB_OFFLINE, is read when the interpreter or a
        # library starts)
        shared = {k: v for k, v in envs[0].items() if all(e.get(k) == v for e in envs)}
        shared.pop("JESSY_CAPTURE_ROWS", None)
        start = time.monotonic()
        proc = subprocess.run([str(env.python), str(DRIVER), str(plan), str(results)],
                              cwd=self.root / backend, env={**os.environ, **shared},
                              capture_output=True, text=True,
                              timeout=JOB_TIMEOUT * len(jobs) + 300)
        assert proc.returncode == 0 and results.is_file(), (
            f"{backend}'s driver failed: {proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        for name, result in json.loads(results.read_text()).items():
            cells[name].returncode, cells[name].seconds = result["returncode"], result["seconds"]
        print(f"{backend}: {len(jobs)} cells in {time.monotonic() - start:.0f} s, "
              f"{parallel} at a time: " + ", ".join(f"{c.family} {c.seconds} s"
                                                    for c in cells.values()), file=sys.stderr)
        return cells


@pytest.fixture(scope="module")
def models(tiny_model) -> dict[str, str]:
    return {**{family: builtin(family) for family in TINY}, "chatml": tiny_model}


@pytest.fixture(scope="module")
def matrix(models, tmp_path_factory) -> Matrix:
    return Matrix(tmp_path_factory.mktemp("matrix"), models)


def system_problems(rows: list[dict], tok, family: str) -> list[str]:
    """The untrained prompt of every row holds the system prompt exactly once: in the family's
    system turn (one), or opening the first user turn where the family has no system role."""
    fmt = TURN_FORMATS[family]
    if fmt.get("fold"):
        expected, turn = fmt["prompt"].split("{instruction}")[0] + fmt["system"], None
    else:
        expected, turn = fmt["system"], fmt["system"].split("{system}")[0]
    expected = expected.format(system=SYSTEM)
    problems = []
    for n, row in enumerate(rows, 1):
        first = next((p for p, label in enumerate(row["labels"]) if p and label != IGNORE),
                     len(row["labels"]))
        prompt = tok.decode(row["input_ids"][:first], skip_special_tokens=False)
        if prompt.count(SYSTEM) != 1 or expected not in prompt:
            problems.append(f"row {n}: the prompt {prompt!r} does not hold {expected!r} once")
        elif turn is not None and prompt.count(turn) != 1:
            problems.append(f"row {n}: {prompt.count(turn)} system turns in {prompt!r}")
    return problems


CELLS = [(backend, family) for backend in TRAINERS for family in FAMILIES]


@trains
@pytest.mark.parametrize(("backend", "family"), CELLS, ids=[f"{b}-{f}" for b, f in CELLS])
def test_the_backend_trains_the_answers_and_the_end_of_turn_only(matrix, backend, family):
    require_env(backend)
    cell = matrix.cell(backend, family)
    cell.ran()
    tok = tokenizer(cell.model)
    rows = cell.rows()
    assert {row["split"] for row in rows} == {"train", "eval"}, backend
    assert label_problems(cell.capture, tok, family, RESPONSES) == []
    assert system_problems(rows, tok, family) == []


@trains
@pytest.mark.parametrize(("backend", "family"), CELLS, ids=[f"{b}-{f}" for b, f in CELLS])
def test_the_cells_adapter_loads_in_peft_and_moves_the_logits(matrix, backend, family):
    require_env(backend)
    cell = matrix.cell(backend, family)
    cell.ran()
    adapter = cell.folder / "adapter"
    load_registry().get(backend).normalise(cell.attempt, cell.spec, cell.inputs, adapter)
    assert peft_output_change(cell.model, adapter) > 1e-3


@trains
@pytest.mark.parametrize("backend", TRAINERS)
def test_a_wrong_template_fails_the_label_check(matrix, backend):
    """The negative control: the same check on a backend fed Qwen3's template for a Qwen2
    model must find the think block it trains or trains after."""
    require_env(backend)
    cell = matrix.cell(backend, "negative")
    cell.ran()
    problems = label_problems(cell.capture, tokenizer(cell.model), "qwen2", RESPONSES)
    assert problems and any("think>" in p for p in problems), problems


# --- 2. real tiny trainings through jessy's runner ------------------------------------------

class Runs:
    """`jessy run` of (backend, family), once each, for the tests that need it."""

    def __init__(self, root: Path):
        self.root, self.done = root, {}
        root.mkdir(parents=True, exist_ok=True)
        self.data = facts(root / "facts.jsonl", repeat=4)

    def get(self, backend: str, family: str):
        if (backend, family) not in self.done:
            require_env(backend)
            folder = self.root / f"{backend}-{family}"
            spec = family_spec(folder, f"{backend}-{builtin_name(family)}", builtin(family),
                               self.data, max_steps=6, batch_size=4)
            try:
                self.done[backend, family] = Runner(load_registry(),
                                                    console=lambda _: None).run(
                    spec, [backend], folder / "runs")
            except Exception as exc:
                self.done[backend, family] = exc
        done = self.done[backend, family]
        if isinstance(done, Exception):
            raise AssertionError(f"jessy run {backend} on {family} raised: {done!r}")
        return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("family-runs"))


@trains
@pytest.mark.parametrize(("backend", "family"), REAL, ids=[f"{b}-{f}" for b, f in REAL])
def test_a_real_tiny_run_of_the_family_loads_in_peft(runs, backend, family):
    run = runs.get(backend, family)
    assert run.manifest["status"] == "succeeded", run.manifest["failure"]
    assert run.manifest["adapter"]["format"] == "peft"
    assert peft_output_change(builtin(family), run.path / "adapter") > 1e-3


# --- 3. GGUF export ---------------------------------------------------------------------------

def gguf_fields(path: Path, *keys: str) -> list:
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    return [fields[key].contents() for key in keys]


@trains
@pytest.mark.parametrize("family", sorted(CONVERTS))
def test_jessy_export_of_the_tiny_model_converts_or_says_why_not(runs, family):
    import shutil

    run = runs.get("mlx", family)
    assert run.manifest["status"] == "succeeded", run.manifest["failure"]
    result = CliRunner().invoke(cli, ["export", str(run.path), "--gguf", "f16"])
    if not CONVERTS[family]:
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
        assert "llama.cpp's converter does not recognise the tokenizer" in result.output
        assert "pre-tokenizer hash" in result.output
        assert not (run.path / "export" / "export.json").exists()
        return
    assert result.exit_code == 0, result.output
    record = json.loads((run.path / "export" / "export.json").read_text())
    entry = record["gguf"][0]
    gguf = run.path / "export" / entry["path"]
    assert gguf.read_bytes()[:4] == b"GGUF"
    merged = tokenizer(record["merged"])
    template, tokens, arch = gguf_fields(gguf, "tokenizer.chat_template",
                                         "tokenizer.ggml.tokens", "general.architecture")
    assert arch == "gemma2" and template == merged.chat_template
    assert tokens == merged.convert_ids_to_tokens(list(range(len(merged))))
    assert isinstance(entry["answer"], str)  # random weights: any answer, but one
    if shutil.which("node") and shutil.which("npm"):
        assert entry["verified_by"].startswith("llama.cpp"), entry["verified_by"]
    assert record["modelfile"]["family"] == "gemma"


def test_the_merged_model_keeps_the_sentencepiece_file_llama_cpp_reads(tmp_path):
    """transformers 5 saves a tokenizer as tokenizer.json only; Gemma's GGUF needs its
    tokenizer.model, which the merge takes from the base (an untrained adapter: no training)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from jessy_adapters.export import merge

    model = builtin("gemma")
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(model),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    peft.save_pretrained(tmp_path / "adapter")
    merged = merge(model, tmp_path / "adapter", tmp_path / "merged")
    base = Path(model) / "tokenizer.model"
    assert (merged / "tokenizer.model").read_bytes() == base.read_bytes()


@pytest.mark.slow  # fetches llama.cpp's converter once (the llama-cpp-python sdist)
@pytest.mark.parametrize("family", sorted(CONVERTS))
def test_llama_cpps_converter_on_the_untrained_tiny_model(family, tmp_path):
    out = tmp_path / "model.gguf"
    if CONVERTS[family]:
        assert to_gguf(Path(builtin(family)), "f16", out).read_bytes()[:4] == b"GGUF"
        return
    with pytest.raises(ExportError, match="does not recognise the tokenizer") as err:
        to_gguf(Path(builtin(family)), "f16", out)
    assert "Traceback" not in str(err.value) and builtin(family) in str(err.value)


# --- 4. the seed spec on the tiny Gemma-2 -----------------------------------------------------

def seed_spec():
    """specs/examples/jessy-seed.yaml with nothing but the model swapped."""
    spec = load_spec(SPEC_EXAMPLES / "jessy-seed.yaml")
    spec = copy.deepcopy(spec)
    spec.data["model"]["name_or_path"] = "builtin:tiny-gemma2"
    return spec


@pytest.mark.parametrize("backend", TRAINERS)
def test_the_seed_spec_translates_on_every_backend_for_the_tiny_gemma2(backend, tmp_path):
    spec = seed_spec()
    model = builtin("gemma")
    inputs = RunInputs(model, prepare(spec, tmp_path / "data"))
    try:
        out = load_registry().get(backend).translate(spec, inputs, tmp_path / "attempt",
                                                     BackendEnv(backend))
    except TranslationRefused as exc:
        unexpected = [f"{r.spec_path}: {r.reason}" for r in exc.refusals
                      if (backend, r.spec_path) not in CPU_IMPOSSIBLE]
        assert unexpected == [], unexpected
        return
    text = "".join(out.files.values())
    assert out.total_steps == 45  # 3 epochs of ceil(229 rows / 16 a update)
    assert "gemma" in out.carried["/model/chat_template"]
    quantised = {"mlx": "jessy_quantize", "unsloth": '"load_in_4bit": true',
                 "llamafactory": "quantization_bit: 4", "axolotl": "load_in_4bit: true"}
    eager = {"mlx": "", "unsloth": '"attn_implementation": "eager"',
             "llamafactory": "flash_attn: disabled", "axolotl": "attn_implementation: eager"}
    assert quantised[backend] in text and eager[backend] in text, backend
    for module in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert module in text
    assert "gate_proj" not in text


@trains
def test_the_seed_spec_runs_end_to_end_on_the_tiny_gemma2():
    """On Unsloth, the seed report's own trainer: QLoRA, q/k/v/o, 45 updates, eager attention."""
    require_env("unsloth")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run = Runner(load_registry(), console=lambda _: None).run(seed_spec(), ["unsloth"],
                                                                  Path(tmp) / "runs")
        m = run.manifest
        assert m["status"] == "succeeded", m["failure"]
        assert m["schedule"]["optimizer_steps"] == 45
        config = json.loads((run.path / "adapter" / "adapter_config.json").read_text())
        assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
        assert (config["r"], config["lora_alpha"]) == (16, 32)
        native = json.loads((run.path / "attempts" / "01-unsloth" /
                             "unsloth_config.json").read_text())
        assert native["from_pretrained"]["load_in_4bit"] is True
        assert native["from_pretrained"]["attn_implementation"] == "eager"
        assert peft_output_change(builtin("gemma"), run.path / "adapter") > 0
