"""The one output tokenization (method §3.1, §6): ids + EOS, offsets into the text."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from rlmec.shared.tokenization import encode_output


def test_output_tokens_end_with_eos_at_the_text_end(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "She sold 72 clips.\nThe answer is: 72"
    out = encode_output(tok, text)
    plain = tok(text, add_special_tokens=False)["input_ids"]
    assert out.token_ids == [*plain, tok.eos_token_id]
    assert out.offsets[-1] == (len(text), len(text))
    assert out.text_offsets == out.offsets[:-1]
    assert "".join(text[a:b] for a, b in out.text_offsets) == text
    assert len(out.tokens) == len(out.token_ids) and out.tokens[-1] == tok.eos_token


def test_without_eos_nothing_is_appended(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    out = encode_output(tok, "2 + 3 = 5", add_eos=False)
    assert out.token_ids == tok("2 + 3 = 5", add_special_tokens=False)["input_ids"]
    assert out.text_offsets == out.offsets and not out.has_eos
