"""Llama-style configs sized for a CPU, for fresh students (`--student tiny|small`) and the shipped models."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4, "num_attention_heads": 4},
    "small": {"hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 6, "num_attention_heads": 6},
}


def fresh_model(preset: str, tokenizer: PreTrainedTokenizerBase, max_positions: int = 512) -> LlamaForCausalLM:
    """A randomly initialised Llama of a named size whose vocabulary matches `tokenizer`."""
    if preset not in PRESETS:
        from stillhouse.core.errors import StillhouseError

        raise StillhouseError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **PRESETS[preset],
    )
    return LlamaForCausalLM(config)
