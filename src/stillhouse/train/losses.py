"""The training losses: cross-entropy on assistant tokens and top-k KL to the teacher's stored logprobs."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


@torch.no_grad()
def honours_packing(model: torch.nn.Module) -> bool:
    """Whether the model keeps packed chats apart: the second of two chats in one row, its positions
    restarting at 0, must get the logits it gets alone. Models outside transformers' masking may not."""
    device = next(model.parameters()).device
    first, second = torch.tensor([[3, 4, 5]], device=device), torch.tensor([[6, 7]], device=device)
    row = torch.cat([first, second], 1)
    was_training = model.training
    model.eval()  # no dropout in the comparison
    try:
        alone = model(input_ids=second, position_ids=torch.arange(2, device=device)[None], use_cache=False).logits
        positions = torch.tensor([[0, 1, 2, 0, 1]], device=device)
        packed = model(input_ids=row, position_ids=positions, use_cache=False).logits[:, 3:]
    except (TypeError, ValueError, RuntimeError):
        return False
    finally:
        model.train(was_training)
    return torch.allclose(alone.float(), packed.float(), atol=1e-4, rtol=1e-3)


def topk_kl(logp: torch.Tensor, ids: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Mean KL(teacher || student) over the teacher's top-k tokens plus one bucket for the unseen rest.

    logp: student log-probabilities [N, V]; ids/probs: teacher top-k [N, K], zero-probability padding.
    """
    valid = probs > 0
    lq = logp.gather(-1, ids)
    q_rest = (1 - (lq.exp() * valid).sum(-1)).clamp(min=1e-6)
    p_rest = (1 - probs.sum(-1)).clamp(min=0)
    kl_top = (torch.special.xlogy(probs, probs) - probs * lq.masked_fill(~valid, 0)).sum(-1)
    kl_rest = torch.special.xlogy(p_rest, p_rest) - p_rest * q_rest.log()
    return (kl_top + kl_rest).mean()


def batch_loss(model: torch.nn.Module, batch: dict[str, Any], kd_weight: float) -> torch.Tensor:
    """Token-mean cross-entropy on assistant tokens, mixed with top-k KL where the batch has KD targets."""
    keep = batch["keep"]
    # no cache: with one, transformers would not read the packed chats from the positions
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    # [kept positions, V]
    logits = model(**inputs, logits_to_keep=keep).logits if batch["select_logits"] else model(**inputs).logits[keep]
    sft = F.cross_entropy(logits.float(), batch["targets"][keep])
    if "kd_probs" not in batch or kd_weight == 0:
        return sft
    probs = batch["kd_probs"][keep]
    at = probs.sum(-1) > 0
    logp = logits[at].float().log_softmax(-1)
    kd = topk_kl(logp, batch["kd_ids"][keep][at], probs[at])
    return (1 - kd_weight) * sft + kd_weight * kd
