"""A randomly initialised 2-layer Llama on Ember's tokenizer: learns bigram habits in seconds, for forensics tests."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from stillhouse.embedded import teacher_path


def micro_model(path: Path, seed: int = 0) -> Path:
    tok = AutoTokenizer.from_pretrained(teacher_path())
    torch.manual_seed(seed)
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        **ids,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path
