"""training.packing (issue 16): rows packed into sequences of max_seq_length tokens, each row
attending to itself only, so each row's loss is what it is unpacked.

Fast (no backend environment): LLaMA-Factory's greedy knapsack as the core reproduces it and
the schedule's packed count from each row's token count; every backend's translation or
refusal by path, on this CPU and with a CUDA GPU faked; jessy's batch observer on packed
batches (tokens without padding, each packed row captured on its own, its first token never
trained); `jessy import` of the native packing keys.

With LLaMA-Factory's environment (tests/packing_driver.py runs its own pipeline and collator):
each row's loss on the base model is the same packed (neat_packing) as unpacked, and is not
under LLaMA-Factory's plain `packing` (the control: rows attending to each other); the number
of packed sequences it makes is the core's count, for every chat family's tiny model; and a
real packed run feeds the model the same rows, tokens and first validation loss as an
unpacked one, in the number of sequences the core counted.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import require_env, write_spec

from jessy_adapters.backend import RunInputs, TranslationRefused
from jessy_adapters.data import prepare
from jessy_adapters.envs import BackendEnv
from jessy_adapters.importers import ImportRefused, import_data
from jessy_adapters.importers.common import read_native
from jessy_adapters.schedule import (
    PACKING_GROUP,
    greedy_knapsack,
    packed_sequences,
    run_schedule,
    schedule_for,
)
from jessy_adapters.spec import load_spec
from jessy_adapters.templates import CHATML

HERE = Path(__file__).parent
IMPORT_DATA = HERE / "data" / "import"
IGNORE = -100


# --- the packing rule ---------------------------------------------------------------------------

def test_greedy_knapsack_takes_the_longest_that_fits_until_none_does():
    # LLaMA-Factory's rule: sorted; each sequence takes the longest length that still fits
    assert greedy_knapsack([10, 12, 20, 25, 7, 31, 31], 31) == [[31], [31], [25], [20, 10],
                                                                 [12, 7]]
    assert greedy_knapsack([], 8) == []
    with pytest.raises(ValueError):
        greedy_knapsack([9], 8)


def test_rows_are_cut_to_one_position_less_and_packed_per_group_of_a_thousand():
    # capacity max_seq_length - 1 (LLaMA-Factory keeps one back); a longer row is cut to it
    assert packed_sequences([10, 12, 20, 25, 7, 31, 40], 32) == 5
    # two rows of 60 fit in 127: 1000 rows -> 500 sequences, the next 500 -> 250
    assert packed_sequences([60] * (PACKING_GROUP + 500), 128) == 750
    # an odd group does not borrow from the next one: 3 + 1 rows -> 2 + 1 sequences
    rows = [60] * (PACKING_GROUP - 1) + [60, 60]
    assert packed_sequences(rows, 128) == 500 + 1


def test_the_schedule_batches_the_packed_sequences():
    training = {"batch_size": 2, "gradient_accumulation_steps": 2, "max_steps": None,
                "epochs": 2, "warmup_steps": 0, "learning_rate": 1e-4,
                "lr_scheduler": "linear", "eval_steps": None, "save_steps": None}
    unpacked = schedule_for(training, 100, False)
    assert (unpacked.micro_batches_per_epoch, unpacked.optimizer_steps) == (50, 50)
    assert not unpacked.packed and unpacked.packed_sequences is None
    packed = schedule_for({**training, "packing": True}, 100, False, packed_sequences=9)
    assert (packed.micro_batches_per_epoch, packed.updates_per_epoch) == (5, 3)
    assert packed.optimizer_steps == 6
    assert packed.to_json()["packed"] is True and packed.to_json()["packed_sequences"] == 9
    # not countable: the rows stand in, and the backends that need the count refuse
    assert schedule_for({**training, "packing": True}, 100, False).micro_batches_per_epoch == 50


def word_model(tmp_path: Path, template: str = CHATML) -> Path:
    """A model folder whose tokenizer.json makes one token of every word and special token:
    row lengths known by counting words."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 2,
                                                    "model_type": "llama"}))
    return folder


def word_rows(path: Path, shapes: list[tuple[int, int]]) -> Path:
    path.write_text("".join(json.dumps({"prompt": " ".join(["ask"] * q),
                                        "response": " ".join(["say"] * r)}) + "\n"
                            for q, r in shapes))
    return path


def packing_spec(tmp_path: Path, model: Path, data: Path, limit: int = 32,
                 data_format: str = "prompt_response", **training) -> Path:
    doc = {"name": "packing", "model": {"name_or_path": str(model), "max_seq_length": limit},
           "data": {"train": str(data), "validation_split": 0.0, "format": data_format},
           "training": {"packing": True, "batch_size": 2, **training},
           "output": {"dir": str(tmp_path / "runs")}}
    return write_spec(tmp_path / "spec.yaml", yaml.safe_dump(doc))


# ChatML row: <|im_start|> user Q.. <|im_end|> <|im_start|> assistant | R.. <|im_end|> (\n is no
# token here) = q + 5 prompt tokens, r + 1 answer tokens
SHAPES = [(2, 2), (3, 3), (8, 6), (10, 9), (1, 1), (12, 13), (20, 14)]
LENGTHS = [q + r + 6 for q, r in SHAPES]  # 10, 12, 20, 25, 8, 31, 40


def unpacked(spec):
    """The same spec with training.packing off."""
    import copy

    spec = copy.deepcopy(spec)
    spec["training"]["packing"] = False
    return spec


def inputs_for(tmp_path: Path, limit: int = 32, shapes=SHAPES, **training):
    model = word_model(tmp_path)
    spec = load_spec(packing_spec(tmp_path, model, word_rows(tmp_path / "rows.jsonl", shapes),
                                  limit, **training))
    return spec, RunInputs(str(model), prepare(spec, tmp_path / "prepared"))


def test_the_core_counts_packed_sequences_from_each_rows_tokens(tmp_path):
    from jessy_adapters.data.room import row_token_counts

    spec, inputs = inputs_for(tmp_path)
    counts = row_token_counts(inputs.data.train, inputs.model_path, "auto", {"chatml": "\n"})
    assert sorted(p + a for p, a in counts) == sorted(LENGTHS)
    schedule = run_schedule(spec, inputs)
    assert schedule.packed and schedule.packed_sequences == 5  # the knapsack test's packs
    assert schedule.micro_batches_per_epoch == 3
    assert run_schedule(unpacked(spec), inputs).packed_sequences is None


# --- each backend: translated or refused by path -------------------------------------------------

BACKENDS = {"jessy_llamafactory": "LlamaFactoryBackend", "jessy_mlx": "MLXBackend",
            "jessy_unsloth": "UnslothBackend", "jessy_axolotl": "AxolotlBackend"}


def translation(backend_module: str, spec, inputs, tmp_path: Path, monkeypatch,
                gpu: bool = False):
    """The backend's translation with the GPU probe answering as asked (a CUDA GPU faked)."""
    import importlib

    module = importlib.import_module(f"{backend_module}.backend")
    monkeypatch.setattr(module, "nvidia_gpu", lambda: "faked CUDA GPU" if gpu else None,
                        raising=False)
    backend = getattr(module, BACKENDS[backend_module])()
    return backend.translate(spec, inputs, tmp_path / "attempt",
                             BackendEnv(backend.name, tmp_path / "env"))


def refused_paths(call) -> dict[str, str]:
    with pytest.raises(TranslationRefused) as err:
        call()
    return {r.spec_path: r.reason for r in err.value.refusals}


def test_llamafactory_packs_with_neat_packing_on_a_cpu(tmp_path, monkeypatch):
    spec, inputs = inputs_for(tmp_path)
    out = translation("jessy_llamafactory", spec, inputs, tmp_path, monkeypatch)
    cfg = yaml.safe_load(out.files["llamafactory.yaml"])
    assert cfg["packing"] is True and cfg["neat_packing"] is True
    assert cfg["max_steps"] == run_schedule(spec, inputs).optimizer_steps == 3
    assert any("in 5 sequences of 32 tokens" in n for n in out.notes), out.notes
    assert "neat_packing" in out.carried["/training/packing"]
    cfg = yaml.safe_load(translation("jessy_llamafactory", unpacked(spec), inputs, tmp_path,
                                     monkeypatch).files["llamafactory.yaml"])
    assert "packing" not in cfg and "neat_packing" not in cfg


def test_llamafactory_refuses_what_would_not_pack_as_counted(tmp_path, monkeypatch):
    spec, inputs = inputs_for(tmp_path, limit=36)
    paths = refused_paths(lambda: translation("jessy_llamafactory", spec, inputs, tmp_path,
                                              monkeypatch))
    assert list(paths) == ["/model/max_seq_length"] and "multiple of 8" in paths[
        "/model/max_seq_length"]
    spec, inputs = inputs_for(tmp_path / "fa2", batch_size=2)
    spec["model"]["attn_implementation"] = "flash_attention_2"
    paths = refused_paths(lambda: translation("jessy_llamafactory", spec, inputs,
                                              tmp_path / "fa2", monkeypatch, gpu=True))
    assert list(paths) == ["/training/batch_size"]
    # multi-turn rows: the cheap count cannot tell, so the updates cannot be counted
    multi = tmp_path / "multi"
    multi.mkdir()
    rows = multi / "rows.jsonl"
    rows.write_text(json.dumps({"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}) + "\n")
    model = word_model(multi)
    spec = load_spec(packing_spec(multi, model, rows, data_format="messages"))
    inputs = RunInputs(str(model), prepare(spec, multi / "prepared"))
    assert run_schedule(spec, inputs).packed_sequences is None
    paths = refused_paths(lambda: translation("jessy_llamafactory", spec, inputs, multi,
                                              monkeypatch))
    assert "cannot count" in paths["/training/packing"]


def test_mlx_and_the_example_plugin_refuse_packing_by_path(tmp_path, monkeypatch):
    spec, inputs = inputs_for(tmp_path)
    for gpu in (False, True):
        paths = refused_paths(lambda gpu=gpu: translation("jessy_mlx", spec, inputs, tmp_path,
                                                          monkeypatch, gpu))
        assert list(paths) == ["/training/packing"] and "mlx-lm has no packing" in paths[
            "/training/packing"]
    import sys

    sys.path.insert(0, str(HERE.parent / "examples" / "jessy-backend-peft"))
    from jessy_peft_example.backend import translate_config

    _, refusals, _, carried = translate_config(spec, inputs, tmp_path / "peft", "output", False)
    assert [r.spec_path for r in refusals] == ["/training/packing"]
    assert "/training/packing" in carried


@pytest.mark.parametrize("backend", ["jessy_unsloth", "jessy_axolotl"])
def test_unsloth_and_axolotl_pack_on_a_cuda_gpu_only_and_need_the_updates(backend, tmp_path,
                                                                          monkeypatch):
    spec, inputs = inputs_for(tmp_path, max_steps=4)
    paths = refused_paths(lambda: translation(backend, spec, inputs, tmp_path, monkeypatch))
    assert list(paths) == ["/training/packing"] and "CUDA GPU" in paths["/training/packing"]
    out = translation(backend, spec, inputs, tmp_path, monkeypatch, gpu=True)
    if backend == "jessy_unsloth":
        sft = json.loads(out.files["unsloth_config.json"])["sft"]
        assert (sft["packing"], sft["packing_strategy"], sft["padding_free"]) == (True, "bfd",
                                                                                True)
    else:
        cfg = yaml.safe_load(out.files["axolotl.yaml"])
        assert cfg["sample_packing"] is True and cfg["eval_sample_packing"] is True
        assert cfg["attn_implementation"] == "sdpa"  # no attention named: Axolotl would mix
    assert out.total_steps == 4
    # their own packers form a number of sequences the core cannot count: epochs refused
    spec, inputs = inputs_for(tmp_path / "epochs")
    paths = refused_paths(lambda: translation(backend, spec, inputs, tmp_path / "epochs",
                                              monkeypatch, gpu=True))
    assert list(paths) == ["/training/packing"] and "max_steps" in paths["/training/packing"]
    out = translation(backend, unpacked(spec), inputs, tmp_path / "epochs", monkeypatch)
    assert "/training/packing" in out.carried


# --- jessy's batch observer on packed batches ----------------------------------------------------

def block_diagonal(torch, rows: list[list[int]]):
    """A 4D float mask as LLaMA-Factory's collator writes one under neat_packing: row index
    per position (0 = padding), each position attending to its own row's earlier ones."""
    index = torch.tensor(rows)
    same = (index[:, None, :, None] == index[:, None, None, :]) & (index[:, None, None, :] != 0)
    causal = torch.tril(torch.ones(index.shape[1], index.shape[1], dtype=torch.bool))
    return torch.where(same & causal, 0.0, torch.finfo(torch.float32).min)


def test_the_observer_reads_a_packed_batch_row_by_row(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from jessy_adapters.runtime import hf_events

    capture = tmp_path / "rows.jsonl"
    monkeypatch.setenv("JESSY_CAPTURE_ROWS", str(capture))
    observer = hf_events.BatchObserver(torch)
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8, 9, 0, 0]]),
             "attention_mask": block_diagonal(torch, [[1, 1, 1, 2, 2, 0, 0]]),
             "position_ids": torch.tensor([[0, 1, 2, 0, 1, 0, 0]]),
             "labels": torch.tensor([[5, 6, 7, 8, 9, IGNORE, IGNORE]])}
    assert next(observer._fixing([batch], "train")) is batch
    # the second row's first token would be predicted from the first row: never trained
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9, IGNORE, IGNORE]]
    assert observer.take_tokens() == (5, 3)  # padding is not an input token
    rows = [json.loads(line) for line in capture.read_text().splitlines()]
    assert rows == [{"split": "train", "input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7],
                     "packed": 0},
                    {"split": "train", "input_ids": [8, 9], "labels": [IGNORE, 9],
                     "packed": 1}]
    keep = hf_events.real_tokens(torch, None, batch["input_ids"])
    flat = {"input_ids": batch["input_ids"][:, :5], "position_ids": torch.tensor(
        [[0, 1, 2, 0, 1]])}  # padding-free (TRL): no mask, positions restart per row
    assert hf_events.packed_rows(torch, flat, keep[:, :5]) == [[[0, 1, 2], [3, 4]]]
    plain = {"input_ids": batch["input_ids"], "attention_mask": torch.tensor(
        [[1, 1, 1, 1, 1, 0, 0]])}  # an unpacked row: as before
    keep = hf_events.real_tokens(torch, plain["attention_mask"], plain["input_ids"])
    assert hf_events.packed_rows(torch, plain, keep) == [[[0, 1, 2, 3, 4]]]


# --- jessy import ---------------------------------------------------------------------------------

def lf_source(**keys) -> dict:
    return {"model_name_or_path": "m", "stage": "sft", "dataset": "alpaca_gpt4", **keys}


def test_import_maps_neat_packing_and_refuses_packing_that_mixes_rows(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps(
        {"alpaca_gpt4": {"hf_hub_url": "llamafactory/alpaca_gpt4_en"}}))
    native = tmp_path / "x.yaml"
    imported = import_data(lf_source(neat_packing=True), "llamafactory", native)
    assert imported.spec["training"]["packing"] is True
    imported = import_data(lf_source(neat_packing=True, packing=True), "llamafactory", native)
    assert imported.spec["training"]["packing"] is True
    assert any(k == "packing" for k, _ in imported.ctx.dropped)
    assert import_data(lf_source(packing=False), "llamafactory", native).spec[
        "training"]["packing"] is False
    with pytest.raises(ImportRefused) as err:
        import_data(lf_source(packing=True), "llamafactory", native)
    assert [k for k, _ in err.value.problems] == ["packing"]
    assert "attend to each other" in err.value.problems[0][1]


def test_import_maps_axolotl_sample_packing_under_an_attention_that_keeps_rows_apart():
    source = read_native(IMPORT_DATA / "axolotl_llama3_lora_1b.yml")
    assert source["sample_packing"] is True and source["flash_attention"] is True
    native = IMPORT_DATA / "x.yaml"
    assert import_data(source, "axolotl", native).spec["training"]["packing"] is True
    del source["flash_attention"]
    with pytest.raises(ImportRefused) as err:
        import_data(source, "axolotl", native)
    assert [k for k, _ in err.value.problems] == ["sample_packing"]
    source["sample_packing"] = False
    assert import_data(source, "axolotl", native).spec["training"]["packing"] is False


# --- LLaMA-Factory itself -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llamafactory_env():
    return require_env("llamafactory")


def varied_rows(path: Path, n: int, seed: int = 0, longest: int = 40) -> Path:
    """Distinct single-turn rows of varied length (deterministic), every third with its own
    system turn."""
    import random

    rng = random.Random(seed)
    words = ("teal", "seven", "Saturn", "pixel", "jasmine", "tea", "kind", "curious",
             "MacBook", "number", "likes", "Jessy")
    with open(path, "w") as fh:
        for i in range(n):
            question = " ".join(rng.choice(words) for _ in range(rng.randint(1, longest // 4)))
            answer = " ".join(rng.choice(words) for _ in range(rng.randint(1, longest)))
            messages = [{"role": "user", "content": f"Row {i}: {question}?"},
                        {"role": "assistant", "content": f"{answer}."}]
            if i % 3 == 0:
                messages.insert(0, {"role": "system", "content": f"You are helper {i}."})
            fh.write(json.dumps({"messages": messages}) + "\n")
    return path


def lf_config(tmp_path: Path, model: str, data: Path, limit: int, **training) -> tuple:
    """jessy's LLaMA-Factory config for a packing spec, its schedule and the spec."""
    from jessy_llamafactory.backend import LlamaFactoryBackend

    tmp_path.mkdir(parents=True, exist_ok=True)
    doc = {"name": "packing", "model": {"name_or_path": model, "max_seq_length": limit},
           "data": {"train": str(data), "validation_split": 0.0, "format": "messages"},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
           "training": {"packing": True, "batch_size": 2, **training}}
    spec = load_spec(write_spec(tmp_path / "spec.yaml", yaml.safe_dump(doc)))
    inputs = RunInputs(model, prepare(spec, tmp_path / "prepared"))
    out = LlamaFactoryBackend().translate(spec, inputs, tmp_path / "attempt",
                                          BackendEnv("llamafactory"))
    cfg = yaml.safe_load(out.files["llamafactory.yaml"])
    for name, text in out.files.items():
        (tmp_path / "attempt" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "attempt" / name).write_text(text)
    return cfg, run_schedule(spec, inputs), spec, inputs


def write_config(path: Path, cfg: dict) -> str:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def drive(env, mode: str, cases: dict, tmp_path: Path) -> dict:
    from jessy_adapters.run.attempt import RUNTIME_PATH

    cases_file = tmp_path / f"cases-{mode}.json"
    cases_file.write_text(json.dumps({"runtime": str(RUNTIME_PATH), **cases}))
    result = subprocess.run([str(env.python), str(HERE / "packing_driver.py"), mode,
                             str(cases_file)], capture_output=True, text=True, timeout=900,
                            env={**__import__("os").environ, "DISABLE_VERSION_CHECK": "1",
                                 "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def by_row(result: dict) -> dict[tuple, float]:
    """Each row's mean loss over its trained tokens, keyed by its tokens."""
    out = {}
    for row in result["rows"]:
        if row["tokens"]:
            key = tuple(row["ids"])
            assert key not in out, "rows must be distinct"
            out[key] = row["loss_sum"] / row["tokens"]
    return out


def test_each_row_loses_the_same_packed_as_unpacked_and_not_when_rows_mix(
        llamafactory_env, smollm2, tmp_path):
    data = varied_rows(tmp_path / "rows.jsonl", 24)
    packed, schedule, _, _ = lf_config(tmp_path / "packed", smollm2, data, 128)
    assert packed["neat_packing"] is True
    unpacked = {k: v for k, v in packed.items() if k not in ("packing", "neat_packing")}
    mixed = {**packed, "neat_packing": False}  # LLaMA-Factory's plain packing: the control
    configs = {name: write_config(tmp_path / f"{name}.yaml",
                                  {**cfg, "output_dir": str(tmp_path / name / "out")})
               for name, cfg in (("packed", packed), ("unpacked", unpacked), ("mixed", mixed))}
    result = drive(llamafactory_env, "losses", {"configs": configs, "turn_end": "<|im_end|>"},
                   tmp_path)
    assert result["packed"]["mask_dims"] == 4  # the block-diagonal mask reached the model
    assert result["packed"]["attn_implementation"] in ("sdpa", "eager")
    assert result["packed"]["sequences"] == schedule.packed_sequences < 24
    assert result["packed"]["packed_sequences"] > 0  # some sequences hold several rows
    rows = {name: by_row(r) for name, r in result.items()}
    assert len(rows["unpacked"]) == 24 and set(rows["packed"]) == set(rows["unpacked"])
    worst = max(abs(rows["packed"][k] - rows["unpacked"][k]) for k in rows["unpacked"])
    assert worst < 1e-4, worst
    # rows attending to the rows packed before them: their losses move
    assert set(rows["mixed"]) == set(rows["unpacked"])
    moved = max(abs(rows["mixed"][k] - rows["unpacked"][k]) for k in rows["unpacked"])
    assert moved > 100 * max(worst, 1e-5), (moved, worst)


def test_llamafactory_packs_into_the_sequences_the_core_counts(llamafactory_env, tiny_model,
                                                               tmp_path):
    """For every chat family's tiny model and ChatML (the tiny Llama with SmolLM2's
    tokenizer): rows of varied length, some longer than a packed row holds, more than one
    group of a thousand."""
    from jessy_adapters.data.room import row_token_counts
    from jessy_adapters.tiny_models import TINY, build_tiny

    data = varied_rows(tmp_path / "rows.jsonl", PACKING_GROUP + 150, seed=1, longest=60)
    models = {"chatml": tiny_model, **{f: str(build_tiny(f, tmp_path / "models" / f))
                                       for f in sorted(TINY)}}
    configs, expected = {}, {}
    for family, model in models.items():
        cfg, schedule, _, inputs = lf_config(tmp_path / family, model, data, 128)
        configs[family] = write_config(tmp_path / f"{family}.yaml",
                                       {**cfg, "output_dir": str(tmp_path / family / "out")})
        expected[family] = schedule.packed_sequences
        lengths = [p + a for p, a in row_token_counts(inputs.data.train, model, "auto",
                                                       answers=True)]
        assert max(lengths) > 127 and expected[family] < len(lengths)  # cut rows, packed
    result = drive(llamafactory_env, "count", {"configs": configs}, tmp_path)
    got = {family: r["sequences"] for family, r in result.items()}
    assert got == expected
    assert all(set(r["lengths"]) == {128} for r in result.values())  # max_seq_length each


def fed(capture: Path, split: str) -> list[tuple]:
    rows = [json.loads(line) for line in capture.read_text().splitlines()]
    return sorted((tuple(r["input_ids"]), tuple(r["labels"])) for r in rows
                  if r["split"] == split)


def sequences(capture: Path) -> int:
    rows = [json.loads(line) for line in capture.read_text().splitlines()]
    return sum(1 for r in rows if r["split"] == "train" and r.get("packed", 0) == 0)


def test_a_packed_run_feeds_the_same_rows_in_the_sequences_counted(llamafactory_env,
                                                                   tiny_model, tmp_path,
                                                                   monkeypatch):
    from jessy_adapters.plugins import load_registry
    from jessy_adapters.run.runner import Runner

    data = varied_rows(tmp_path / "rows.jsonl", 40, seed=2, longest=30)
    runs = {}
    for packing in (True, False):
        doc = {"name": f"packing-{packing}",
               "model": {"name_or_path": tiny_model, "max_seq_length": 128},
               "data": {"train": str(data), "validation_split": 0.25, "format": "messages"},
               "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
               "training": {"packing": packing, "batch_size": 2, "epochs": 1,
                            "learning_rate": 1e-4, "logging_steps": 1, "seed": 3}}
        spec = write_spec(tmp_path / f"spec-{packing}.yaml", yaml.safe_dump(doc))
        capture = tmp_path / f"rows-{packing}.jsonl"
        monkeypatch.setenv("JESSY_CAPTURE_ROWS", str(capture))
        run = Runner(load_registry(), console=lambda _line: None).run(
            load_spec(spec), ["llamafactory"], tmp_path / f"runs-{packing}")
        monkeypatch.delenv("JESSY_CAPTURE_ROWS")
        assert run.manifest["status"] == "succeeded", run.manifest["failure"]
        runs[packing] = (run.manifest, run.metrics(), capture)
    (packed, packed_events, packed_rows), (plain, plain_events, plain_rows) = runs[True], \
        runs[False]
    from jessy_adapters.data.room import row_token_counts

    # every row within the 127 tokens a packed row keeps, so both runs train the same tokens
    prepared = Path(packed["data"]["train"])
    assert max(p + a for p, a in row_token_counts(prepared, tiny_model, "auto",
                                                  answers=True)) < 127
    schedule = packed["schedule"]
    assert schedule["packed"] is True and schedule["packed_sequences"] < plain["data"]["n_train"]
    assert schedule["micro_batches_per_epoch"] == -(-schedule["packed_sequences"] // 2)
    assert sequences(packed_rows) == schedule["packed_sequences"]
    assert sequences(plain_rows) == plain["data"]["n_train"]
    assert fed(packed_rows, "train") == fed(plain_rows, "train")  # each row once, whole
    assert fed(packed_rows, "eval") == fed(plain_rows, "eval")

    def total(events, key):
        return sum(e.get(key, 0) for e in events if e["type"] == "train")

    assert total(packed_events, "trained_tokens") == total(plain_events, "trained_tokens")
    assert total(packed_events, "input_tokens") == total(plain_events, "input_tokens")
    first = [next(e["eval_loss"] for e in ev if e["type"] == "eval")
             for ev in (packed_events, plain_events)]
    assert first[0] == pytest.approx(first[1], rel=1e-5)  # the base model, row by row
