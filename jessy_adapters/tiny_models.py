"""Tiny models of every chat family, built offline in seconds: the real architecture class
with random weights (2 layers, 64 wide), the family's special tokens, and its upstream chat
template verbatim (templates.upstream_template). Tests and the training matrix run them.

Tokenizers are trained on the bundled corpus (model_templates/corpus.txt: the text of
examples/*.jsonl): byte-level BPE with Llama-3's pre-tokenizer for most families; for Gemma a
SentencePiece model, as Gemma ships one (llama.cpp's converter reads tokenizer.model), with
an identical tokenizer.json beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .templates import TURN_FORMATS, UPSTREAM, upstream_template

CORPUS = UPSTREAM / "corpus.txt"
SPLITS = {"llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                   r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
          "qwen": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"}
"""Byte-level BPE pre-tokenizer splits: Llama-3's, and Qwen's (single digits, after NFC), which
transformers' Qwen2Tokenizer rebuilds whatever tokenizer.json says. A run of newlines is one
piece wherever it stands, so a prompt tokenized alone is a prefix of the prompt and response
tokenized together."""
SIZES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
         "initializer_range": 0.5}
"""initializer_range 0.5 (not 0.02): with tiny tied embeddings the logits of a 64-wide model
stay near-uniform whatever LoRA does, so loss could not visibly fall. 4096 positions, the
shortest context of the families' reference models (Phi-3-mini-4k): a spec written for the
real model (the seed's max_seq_length 2048) asks nothing of the tiny one that the real one
would not do, e.g. no RoPE scaling (Unsloth extends RoPE when max_seq_length exceeds it)."""
BUILD_VERSION = 2
"""The builtin tiny models' build version (models.BUILTINS): bump it when what build_tiny
writes changes, so builds already in $JESSY_HOME/models are rebuilt."""


@dataclass(frozen=True)
class Tiny:
    """One family's tiny model: what its config, tokenizer and template must carry."""

    architecture: str
    config: dict
    specials: tuple[str, ...]
    eos: str
    bos: str | None = None
    pad: str | None = None
    unk: str | None = None
    plain: tuple[str, ...] = ()
    """Added tokens that are not special (Qwen's tool and think tags)."""
    sentencepiece: bool = False
    split: str = "llama3"
    extra_config: dict = field(default_factory=dict)
    """Top-level config.json keys older readers (mlx-lm) need beside transformers' own."""


_QWEN = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_GEMMA = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>")
TINY = {
    "llama3": Tiny("LlamaForCausalLM", {"rope_theta": 500000.0, "tie_word_embeddings": True},
                   ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                    "<|end_header_id|>", "<|eot_id|>", "<|finetune_right_pad_id|>"),
                   eos="<|eot_id|>", bos="<|begin_of_text|>", pad="<|finetune_right_pad_id|>",
                   extra_config={"rope_theta": 500000.0}),
    "gemma": Tiny("Gemma2ForCausalLM",
                  {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 256,
                   "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
                   "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True},
                  _GEMMA, eos="<eos>", bos="<bos>", pad="<pad>", unk="<unk>", sentencepiece=True,
                  extra_config={"rope_theta": 10000.0}),
    "gemma3": Tiny("Gemma3ForCausalLM",
                   {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 256,
                    "layer_types": ["sliding_attention", "full_attention"],
                    "tie_word_embeddings": True},
                   _GEMMA, eos="<eos>", bos="<bos>", pad="<pad>", unk="<unk>",
                   sentencepiece=True,
                   extra_config={"rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                                 "sliding_window_pattern": 2}),
    "qwen2": Tiny("Qwen2ForCausalLM", {"rope_theta": 1000000.0, "tie_word_embeddings": True},
                  _QWEN, eos="<|im_end|>", pad="<|endoftext|>",
                  plain=("<tool_call>", "</tool_call>"), split="qwen",
                  extra_config={"rope_theta": 1000000.0}),
    "qwen3": Tiny("Qwen3ForCausalLM", {"head_dim": 16, "rope_theta": 1000000.0,
                                       "tie_word_embeddings": True},
                  _QWEN, eos="<|im_end|>", pad="<|endoftext|>",
                  plain=("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
                         "<think>", "</think>"), split="qwen",
                  extra_config={"rope_theta": 1000000.0}),
    "mistral": Tiny("MistralForCausalLM", {"rope_theta": 1000000.0, "sliding_window": None},
                    ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<pad>"),
                    eos="</s>", bos="<s>", pad="<pad>", unk="<unk>",
                    extra_config={"rope_theta": 1000000.0}),
    "phi3": Tiny("Phi3ForCausalLM", {"original_max_position_embeddings": 4096},
                 ("<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|system|>",
                  "<|end|>", "<|user|>"),
                 eos="<|endoftext|>", pad="<|endoftext|>", unk="<unk>",
                 extra_config={"rope_theta": 10000.0}),
}
"""Family -> tiny model. Pad tokens are the model's own except Mistral's (it has none; a pad
equal to </s> would mask the trained end of turn in collators that mask padding)."""


def builtin_name(family: str) -> str:
    """`builtin:tiny-<name>`: Gemma-2's family is `gemma`, its tiny model `tiny-gemma2`."""
    return "tiny-" + ("gemma2" if family == "gemma" else family)


def corpus() -> list[str]:
    return [line for line in CORPUS.read_text().splitlines() if line.strip()]


def corpus_from_examples(examples: Path) -> str:
    """The text of the bundled example data, one string a line (what corpus.txt holds)."""
    lines: list[str] = []
    for path in sorted(examples.glob("*.jsonl")):
        for raw in path.read_text().splitlines():
            for value in json.loads(raw).values():
                values = value if isinstance(value, list) else [value]
                lines += [v.replace("\n", " ") for v in values if isinstance(v, str)]
    return "\n".join(lines) + "\n"


def _training_text(tiny: Tiny, family: str) -> list[str]:
    """The corpus, plus each line as the family's turns render it (without special tokens, which
    are never merged), so newlines and role names are learnt."""
    text = corpus()
    fmt = TURN_FORMATS[family]
    turns = [(fmt["prompt"] + "{response}").format(instruction=q, response=a)
             for q, a in zip(text[::2], text[1::2], strict=False)]
    for token in tiny.specials + tiny.plain:
        turns = [t.replace(token, "\n") for t in turns]
    return text + turns


def _bpe(tiny: Tiny, family: str):
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    if tiny.split == "qwen":
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLITS[tiny.split]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=3000, special_tokens=list(tiny.specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_training_text(tiny, family), trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in tiny.plain])
    if tiny.bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{tiny.bos} $A", pair=f"{tiny.bos} $A {tiny.bos} $B",
            special_tokens=[(tiny.bos, tok.token_to_id(tiny.bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _sentencepiece(tiny: Tiny, family: str, folder: Path):
    """A SentencePiece BPE model as Gemma's is set up (no dummy prefix, byte fallback, split
    digits, special ids 0-3), saved as tokenizer.model, and the same tokenizer for transformers:
    merges ranked by piece score, as transformers' converter ranks them."""
    import io

    import sentencepiece as spm
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers.tokenization_utils_base import generate_merges

    user = [t for t in tiny.specials[4:]] + ["\n", "\n\n"]
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_text(tiny, family)), model_writer=buffer,
        model_type="bpe", vocab_size=1500, hard_vocab_limit=False,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece=tiny.specials[0],
        eos_piece=tiny.specials[1], bos_piece=tiny.specials[2], unk_piece=tiny.specials[3],
        user_defined_symbols=user, byte_fallback=True, add_dummy_prefix=False,
        remove_extra_whitespaces=False, normalization_rule_name="identity", split_digits=True,
        allow_whitespace_only_pieces=True, minloglevel=2)
    (folder / "tokenizer.model").write_bytes(buffer.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=buffer.getvalue())
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    whole = set(tiny.specials[:4]) | set(user)
    scores = {p: sp.get_score(i) for p, i in vocab.items() if p not in whole
              and not sp.is_byte(i)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=generate_merges(vocab, scores, whole),
                               byte_fallback=True, unk_token=tiny.unk, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    specials = list(tiny.specials[:4]) + ["<start_of_turn>", "<end_of_turn>"]
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in user
                    if t not in specials])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{tiny.bos} $A", pair=f"{tiny.bos} $A {tiny.bos} $B",
        special_tokens=[(tiny.bos, vocab[tiny.bos])])
    return tok


def build_tiny(family: str, folder: Path, seed: int = 0) -> Path:
    """Write the family's tiny model (weights, config, tokenizer, chat template) into folder."""
    import torch
    import transformers
    from transformers import PreTrainedTokenizerFast

    tiny = TINY[family]
    folder.mkdir(parents=True, exist_ok=True)
    backend = _sentencepiece(tiny, family, folder) if tiny.sentencepiece else _bpe(tiny, family)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=tiny.bos,
                                  eos_token=tiny.eos, pad_token=tiny.pad, unk_token=tiny.unk,
                                  model_max_length=SIZES["max_position_embeddings"])
    tok.chat_template = upstream_template(family)
    tok.save_pretrained(folder)
    ids = {f"{k}_token_id": tok.convert_tokens_to_ids(v)
           for k, v in (("bos", tiny.bos), ("eos", tiny.eos), ("pad", tiny.pad)) if v}
    model_class = getattr(transformers, tiny.architecture)
    config = model_class.config_class(vocab_size=len(tok), **SIZES, **tiny.config, **ids)
    torch.manual_seed(seed)
    model = model_class(config)
    turn_end = tok.convert_tokens_to_ids(TURN_FORMATS[family]["end"])
    model.generation_config.eos_token_id = sorted({ids["eos_token_id"], turn_end})
    model.save_pretrained(folder, safe_serialization=True)
    cfg_path = folder / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), **tiny.extra_config},
                                   indent=2))
    return folder
