"""A tiny randomly initialised Llama with a locally trained tokenizer, for vLLM tests.

Nothing is downloaded: the byte-level BPE tokenizer is trained here on two sentences and
the weights are random (seeded), so the model speaks gibberish, at several hundred tokens a
second on a CPU. It exercises the real vLLM engine code path: loading, chat template,
scheduling, streaming and aborting. vLLM's CPU attention wants a head size of 64 or more.

Run ``python -m tests.tiny_llama DIR`` to write one by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_CORPUS = [
    "The capital of France is Paris. Hello there, how are you today? " * 3,
    "You are a friendly voice assistant. Answer in one short sentence.",
]


def build_tiny_llama(out: Path) -> Path:
    """Write the tokenizer, config and safetensors weights of a ~0.4 MB Llama into ``out``.

    Returns:
        ``out``, loadable by vLLM and transformers as a local model directory.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,  # head size 64: the smallest vLLM's CPU attention supports
        num_key_value_heads=1,
        max_position_embeddings=8192,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(out)
    return out


if __name__ == "__main__":
    print(build_tiny_llama(Path(sys.argv[1])))
