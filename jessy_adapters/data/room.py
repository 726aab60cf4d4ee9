"""Rows whose prompt leaves no room for the response within model.max_seq_length, refused
before the first attempt: such a row, cut at max_seq_length before its response starts,
trains nothing, and a batch of them has no label at all (a NaN loss on the HF trainers).

Checked on every run, so it must be cheap: the prepared single-turn rows are rendered with
the family's turn format (templates.turn_format, the text every backend trains on) and
counted with the model's tokenizer.json through `tokenizers` (no transformers import). Only
when that finds a row, or cannot tell (multi-turn rows, no tokenizer.json, an unknown
family), does the exact check run (datatools: the template the run trains with), which
names each row by file and line. The same count with the answers (`row_token_counts`) gives
the schedule each row's length when `training.packing` packs rows (schedule.run_schedule).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..templates import (
    ALPACA,
    chat_family,
    default_system_prompt,
    plain_text_bos,
    single_turn_formats,
    turn_format,
)
from . import MAX_REPORTED, DataError, DataIssue, rows_without_room

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
BOS_FAMILIES = {"llama3", "gemma", "gemma3", "mistral"}  # templates that open with BOS


def _prompt_text(messages: list[dict], fmt: dict, default_system: str | None,
                 lead: bool = True) -> str | None:
    """The prompt as the family's template renders it (with what it writes before the
    response unless `lead` is false), or None for a multi-turn row."""
    turns = [m for m in messages if m["role"] != "system"]
    if len(turns) != 2 or turns[0]["role"] != "user":
        return None
    system = next((m["content"] for m in messages if m["role"] == "system"), default_system)
    instruction = turns[0]["content"]
    head = ""
    if system and fmt.get("fold"):
        instruction = fmt["system"].format(system=system) + instruction
    elif system:
        head = fmt["system"].format(system=system)
    prompt = head + fmt["prompt"].format(instruction=instruction)
    return prompt + fmt.get("lead", "") if lead else prompt


def _answer_text(messages: list[dict], fmt: dict) -> str:
    """The response as the family's format writes it: what the template puts before it, the
    response and its end-of-turn token (the row is single-turn: _prompt_text said so)."""
    answer = [m for m in messages if m["role"] != "system"][1]["content"]
    return fmt.get("lead", "") + answer + fmt["end"]


def row_token_counts(rows_file: Path, model_path: str, chat_template: str,
                     answers: bool = False) -> list[tuple[int, int]] | None:
    """Each prepared row's (prompt tokens, answer tokens), counted the cheap way (the family's
    turn format, the model's tokenizer.json), or None when this count cannot tell (multi-turn
    rows, no tokenizer.json, an unknown family). The prompt includes BOS where the family's
    template opens with it. Answers are counted only when `answers` is true, with what the
    family's template writes after the end-of-turn token (ChatML's newline); prompt and
    answer are encoded apart, as a template-driven trainer encodes them, and what the
    template writes before the response (Mistral's space) opens the answer."""
    tokenizer_file = Path(model_path) / "tokenizer.json"
    family = chat_family(model_path, chat_template)
    if family not in single_turn_formats() or not tokenizer_file.is_file():
        return None
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    except Exception:  # noqa: BLE001 (a tokenizer this library cannot read: the exact check)
        return None
    default_system = default_system_prompt(model_path, chat_template)
    fmt = turn_format(family, model_path)
    bos = 1 if family in BOS_FAMILIES or (family == ALPACA and plain_text_bos(model_path)) \
        else 0
    prompts, answer_texts = [], []
    with open(rows_file, encoding="utf-8") as fh:
        for line in fh:
            messages = json.loads(line)["messages"]
            text = _prompt_text(messages, fmt, default_system, lead=not answers)
            if text is None:
                return None
            prompts.append(text)
            if answers:
                answer_texts.append(_answer_text(messages, fmt) + fmt.get("after", ""))
    prompt_lengths = [len(e.ids) + bos for e in tokenizer.encode_batch(
        prompts, add_special_tokens=False)]
    if not answers:
        return [(n, 0) for n in prompt_lengths]
    answer_lengths = [len(e.ids) for e in tokenizer.encode_batch(answer_texts,
                                                                  add_special_tokens=False)]
    return list(zip(prompt_lengths, answer_lengths, strict=True))


def fast_count(rows_file: Path, model_path: str, chat_template: str,
               max_seq_length: int) -> int | None:
    """How many prepared rows leave no room, or None when this cheap count cannot tell."""
    counts = row_token_counts(rows_file, model_path, chat_template)
    if counts is None:
        return None
    return sum(1 for n, _ in counts if n + 1 > max_seq_length)


def check_room(spec, prepared, model_path: str) -> list[str]:
    """Raise DataError naming every row (file, line) without room; return notes for the run
    record when the check could not be made."""
    if prepared.format == "text":
        return []
    limit = spec["model"]["max_seq_length"]
    choice = spec["model"]["chat_template"]
    files = [f for f in (prepared.train, prepared.validation) if f]
    counts = [fast_count(f, model_path, choice, limit) for f in files]
    if all(c == 0 for c in counts):
        return []
    if not any((Path(model_path) / name).is_file() for name in TOKENIZER_FILES):
        return []  # no tokenizer to measure with: the backend will say so when it loads
    from .rows import DataFileError
    from .tools import DataToolError

    try:
        issues = rows_without_room(spec, model_path)
    except DataToolError as exc:
        return [f"rows were not checked for room within max_seq_length: {exc}"]
    except DataFileError as exc:  # the file changed since it was prepared
        raise DataError([DataIssue(exc.file, 0, exc.message)]) from None
    if issues:
        listed = issues[:MAX_REPORTED]
        listed.append(DataIssue(str(spec.source or "the spec"), 0,
                                f"/model/max_seq_length: {limit} leaves no room for the "
                                f"response of {len(issues)} row(s); raise it or shorten them "
                                "(`jessy data validate FILE --tokenizer MODEL "
                                f"--max-seq-length {limit}` lists them)"))
        raise DataError(listed, more=len(issues) - len(listed) + 1)
    return []
