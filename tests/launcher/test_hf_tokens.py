"""Logprob bytes of Hugging Face tokens: a piece of a character keeps its bytes (it decodes to
nothing on its own), in byte-level BPE and in SentencePiece's spellings."""

from __future__ import annotations

import pytest

from modelyard.launcher.backends.hf_tokens import TokenBytes


def test_byte_level_tokens_give_back_the_bytes_of_multibyte_characters() -> None:
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    raw = tokenizers.Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(["hello world"] * 10, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=raw)
    ids = tokenizer.encode(" 東京 hello", add_special_tokens=False)
    assert any(tokenizer.decode([i]) in ("", "\ufffd") for i in ids)  # "東" is split into byte tokens
    to_bytes = TokenBytes(tokenizer)
    assert b"".join(bytes(to_bytes(i)) for i in ids) == " 東京 hello".encode()


class SentencePieceLike:
    """A SentencePiece vocabulary with byte fallback, as Llama 2's and Gemma's tokenizers spell it."""

    vocabulary = {0: "▁a", 1: "<0xE6>", 2: "<0x9D>", 3: "<0xB1>", 4: "▁hello", 5: "world"}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [0, 0]

    def convert_ids_to_tokens(self, ids: int | list[int]) -> str | list[str]:
        return [self.vocabulary[i] for i in ids] if isinstance(ids, list) else self.vocabulary[ids]


def test_sentencepiece_spaces_and_byte_fallback() -> None:
    to_bytes = TokenBytes(SentencePieceLike())
    assert [to_bytes(i) for i in (4, 5)] == [list(b" hello"), list(b"world")]
    assert b"".join(bytes(to_bytes(i)) for i in (1, 2, 3)) == "東".encode()
