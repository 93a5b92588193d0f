"""Random Llama models with a trained byte-level BPE tokenizer, built offline in seconds (no hub).

Tests use a tiny one; ``benchmarks/transformers_bench.py`` a larger one with a 32k vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# What the tiny test models' tokenizers are trained on: ASCII words and multi-byte characters.
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hello world, tiny model.", "café naïve 東京"] * 20
# Like real templates, it has a place for tools (here only their names, to stay within 256 tokens).
CHAT_TEMPLATE = ("{% if tools %}<|tools|>{% for t in tools %}{{ t['function']['name'] }} {% endfor %}\n{% endif %}"
                 "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def build_random_llama(directory: Path, texts: Iterable[str], *, vocab_size: int, hidden_size: int,
                       intermediate_size: int, layers: int, heads: int, kv_heads: int, context: int,
                       chat_template: str | None = None) -> None:
    """Train the tokenizer on ``texts``, initialise the model with seed 0, ``save_pretrained`` both."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                                pad_token="<pad>")
    if chat_template is not None:
        fast.chat_template = chat_template
    config = transformers.LlamaConfig(vocab_size=len(fast), hidden_size=hidden_size,
                                      intermediate_size=intermediate_size, num_hidden_layers=layers,
                                      num_attention_heads=heads, num_key_value_heads=kv_heads,
                                      max_position_embeddings=context, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    fast.save_pretrained(directory)
