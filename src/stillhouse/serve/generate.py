"""Batched greedy generation with a local model: what evaluation and the embedded models' checks share."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

Chat = list[dict[str, str]]


@torch.no_grad()
def greedy(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    chats: Sequence[Chat],
    max_new_tokens: int = 192,
    batch_size: int = 32,
) -> list[str]:
    """Greedy replies to chats rendered with the chat template, in the order given.

    Chats are batched by rendered length (similar lengths pad less) and padded on the left, so every
    row's next token comes from its own last position."""
    texts = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    replies = [""] * len(texts)
    was_training, side = model.training, tok.padding_side
    model.eval()
    tok.padding_side = "left"
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(model.device)
            out = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
            for i, seq in zip(idx, out[:, enc["input_ids"].shape[1] :], strict=True):
                replies[i] = tok.decode(seq, skip_special_tokens=True).strip()
    finally:
        tok.padding_side = side
        model.train(was_training)
    return replies
