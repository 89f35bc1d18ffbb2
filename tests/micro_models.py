"""Forensics tests' small pieces: a random 2-layer Llama on Ember's tokenizer (learns bigram habits in seconds),
and Ember's answers collected through the real server."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from stillhouse.collect import collect
from stillhouse.embedded import teacher_path
from stillhouse.forensics.key import WatermarkKey
from stillhouse.serve import serve_in_background


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


def collect_from_ember(
    records: list[dict], root: Path, *, watermark: WatermarkKey | None = None, temperature: float, max_tokens: int
) -> Path:
    """The micro-world's prompts answered by Ember through the real server and collected into `root / "run"`."""
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": r["id"], "messages": r["messages"]}) + "\n" for r in records))
    with serve_in_background(teacher_path(), watermark=watermark) as s:
        collect(
            prompts,
            base_url=s.base_url,
            model=s.model,
            out=root / "run",
            purpose="distillation",
            api_key_env=None,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=0,
            concurrency=64,
        )
    return root / "run"
