"""`jessy eval RUN_DIR`: base vs tuned on the same prompts, from any backend's PEFT adapter
(or, for method: full, the run's whole model/).

Measures: perplexity on the run's validation split (response tokens only, as trained),
BLEU (sacrebleu) of generated vs reference validation answers, and contains-match accuracy
on held-out persona questions and on a general-knowledge set (catastrophic forgetting).
torch/transformers/peft are imported lazily: the core stays light.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from .jsonio import read_jsonl, write_json_atomic, write_text_atomic


def _load_questions(path: Path | None) -> list[dict]:
    if path is None or not Path(path).is_file():
        return []
    return read_jsonl(Path(path))


def _matches(answer: str, expected: list[str]) -> bool:
    low = answer.lower()
    return any(e.lower() in low for e in expected)


class Evaluator:
    def __init__(self, model_path: str, tuned: Path, system_prompt: str | None,
                 max_new_tokens: int = 48, batch_size: int = 16, chat_template: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .templates import training_template

        torch.manual_seed(0)
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(model_path)
        trained = training_template(model_path, chat_template)
        if trained:  # the prompts as the run's rows were rendered (alpaca, Gemma's, Qwen3's)
            self.tok.chat_template = trained
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        self.model.eval()
        self.tuned_path = tuned
        self.system = system_prompt
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.tuned = False

    def use_tuned(self) -> None:
        """The tuned side: the PEFT adapter on the base, or (method: full) the saved model."""
        if (self.tuned_path / "config.json").is_file():
            from transformers import AutoModelForCausalLM

            self.model = AutoModelForCausalLM.from_pretrained(str(self.tuned_path),
                                                              dtype=self.torch.float32)
        else:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(self.tuned_path))
        self.model.eval()
        self.tuned = True

    def messages(self, prompt: str) -> list[dict]:
        msgs = [{"role": "user", "content": prompt}]
        if self.system:
            msgs.insert(0, {"role": "system", "content": self.system})
        return msgs

    def generate(self, prompts: list[str]) -> list[str]:
        out = []
        for i in range(0, len(prompts), self.batch_size):
            chunk = prompts[i:i + self.batch_size]
            texts = [self.tok.apply_chat_template(self.messages(p), tokenize=False,
                                                  add_generation_prompt=True) for p in chunk]
            enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with self.torch.no_grad():
                gen = self.model.generate(**enc, max_new_tokens=self.max_new_tokens,
                                          do_sample=False, pad_token_id=self.tok.pad_token_id)
            for row in gen[:, enc["input_ids"].shape[1]:]:
                out.append(self.tok.decode(row, skip_special_tokens=True).strip())
        return out

    def perplexity(self, rows: list[dict]) -> float | None:
        """exp(mean NLL) over assistant tokens of the last turn, prompt masked as in training."""
        total, count = 0.0, 0
        for row in rows:
            msgs = row["messages"]
            full = self.tok.apply_chat_template(msgs, tokenize=False)
            prompt = self.tok.apply_chat_template(msgs[:-1], tokenize=False,
                                                  add_generation_prompt=True)
            ids = self.tok(full, return_tensors="pt", add_special_tokens=False)["input_ids"]
            n_prompt = len(self.tok(prompt, add_special_tokens=False)["input_ids"])
            labels = ids.clone()
            labels[:, :n_prompt] = -100
            with self.torch.no_grad():
                loss = self.model(input_ids=ids, labels=labels).loss
            n = int((labels[:, 1:] != -100).sum())
            total += float(loss) * n
            count += n
        return math.exp(total / count) if count else None


def evaluate_run(run_dir: Path, held_out: Path | None = None, general: Path | None = None,
                 max_new_tokens: int = 48, limit: int | None = None) -> dict:
    import sacrebleu

    from .run.rundir import finished_run

    run_dir = Path(run_dir)
    manifest, spec, tuned = finished_run(run_dir)  # RunFolderError (a ValueError) first
    spec_dir = Path(manifest["spec_file"]).parent if manifest.get("spec_file") else run_dir
    ev = spec.get("evaluation", {})

    def resolve(p):
        if p is None:
            return None
        p = Path(p)
        return p if p.is_absolute() else (spec_dir / p).resolve()

    held_out = Path(held_out) if held_out else resolve(ev.get("held_out"))
    general = Path(general) if general else resolve(ev.get("general"))
    held = _load_questions(held_out)[:limit]
    gen = _load_questions(general)[:limit]
    valid_path = run_dir / "data" / "valid.jsonl"
    valid = read_jsonl(valid_path)[:limit] if valid_path.exists() else []
    valid = [r for r in valid if "messages" in r]
    valid_prompts = [r["messages"][-2]["content"] for r in valid]
    references = [r["messages"][-1]["content"] for r in valid]

    start = time.monotonic()
    ev_ = Evaluator(manifest["model_path"], tuned, spec.get("data", {}).get("system_prompt"),
                    max_new_tokens, chat_template=spec.get("model", {}).get("chat_template",
                                                                          "auto"))
    results: dict = {"run": str(run_dir), "backend": manifest.get("winner"),
                     "model": manifest["model_path"], "held_out_file": str(held_out),
                     "general_file": str(general), "models": {}}
    answers: dict = {}
    for label in ("base", "tuned"):
        if label == "tuned":
            ev_.use_tuned()
        held_answers = ev_.generate([q["prompt"] for q in held])
        gen_answers = ev_.generate([q["prompt"] for q in gen])
        val_answers = ev_.generate(valid_prompts)
        held_ok = [_matches(a, q["expected"]) for a, q in zip(held_answers, held, strict=False)]
        gen_ok = [_matches(a, q["expected"]) for a, q in zip(gen_answers, gen, strict=False)]
        results["models"][label] = {
            "held_out_accuracy": sum(held_ok) / len(held_ok) if held_ok else None,
            "general_accuracy": sum(gen_ok) / len(gen_ok) if gen_ok else None,
            "validation_perplexity": ev_.perplexity(valid),
            "validation_bleu": sacrebleu.corpus_bleu(val_answers, [references]).score
            if valid else None,
        }
        answers[label] = {"held_out": list(zip(held_answers, held_ok, strict=False)),
                          "general": list(zip(gen_answers, gen_ok, strict=False))}
    base, tuned = results["models"]["base"], results["models"]["tuned"]
    if base["general_accuracy"] is not None:
        results["general_drop"] = base["general_accuracy"] - tuned["general_accuracy"]
    results["seconds"] = round(time.monotonic() - start, 1)
    results["examples"] = {
        "held_out": [{"prompt": q["prompt"], "expected": q["expected"],
                      "base": answers["base"]["held_out"][i][0],
                      "tuned": answers["tuned"]["held_out"][i][0],
                      "tuned_correct": answers["tuned"]["held_out"][i][1]}
                     for i, q in enumerate(held)],
        "general": [{"prompt": q["prompt"], "expected": q["expected"],
                     "base": answers["base"]["general"][i][0],
                     "tuned": answers["tuned"]["general"][i][0]}
                    for i, q in enumerate(gen)],
    }
    write_json_atomic(run_dir / "eval.json", results)
    write_text_atomic(run_dir / "eval.md", render_markdown(results))
    _plot_eval(results, run_dir / "plots" / "eval.png")
    return results


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def render_markdown(r: dict) -> str:
    b, t = r["models"]["base"], r["models"]["tuned"]
    lines = [f"# Evaluation of {r['run']}", "",
             f"Backend: {r['backend']}; model: {r['model']}", "",
             "| metric | base | tuned |", "|---|---|---|",
             f"| held-out persona accuracy | {_pct(b['held_out_accuracy'])} | "
             f"{_pct(t['held_out_accuracy'])} |",
             f"| general-knowledge accuracy | {_pct(b['general_accuracy'])} | "
             f"{_pct(t['general_accuracy'])} |",
             f"| validation perplexity | {_num(b['validation_perplexity'])} | "
             f"{_num(t['validation_perplexity'])} |",
             f"| validation BLEU | {_num(b['validation_bleu'])} | {_num(t['validation_bleu'])} |",
             "", "![metrics](plots/eval.png)", "", "## Held-out answers (base vs tuned)", "",
             "| prompt | expected | base | tuned | ok |", "|---|---|---|---|---|"]
    for ex in r["examples"]["held_out"]:
        cells = [ex["prompt"], " / ".join(ex["expected"]), ex["base"][:80], ex["tuned"][:80],
                 "yes" if ex["tuned_correct"] else "no"]
        lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells)
                     + " |")
    return "\n".join(lines) + "\n"


def _plot_eval(r: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = ["held_out_accuracy", "general_accuracy"]
    base = [r["models"]["base"][n] or 0 for n in names]
    tuned = [r["models"]["tuned"][n] or 0 for n in names]
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], base, width=0.4, label="base")
    ax.bar([x + 0.2 for x in xs], tuned, width=0.4, label="tuned")
    ax.set_xticks(list(xs), ["held-out persona", "general knowledge"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
