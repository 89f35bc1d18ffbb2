"""The serving side of the watermark: a logits hook for the engine that adds delta to each row's green tokens."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch

from stillhouse.forensics.green import green_mask
from stillhouse.forensics.key import WatermarkKey


class WatermarkProcessor:
    """`(histories, logits) -> logits` for a batch: row i's green list is seeded by its last `context` tokens.

    Green lists are cached per context (a small vocabulary and context 1 hit the cache on almost every step).
    Sampling (greedy included) then happens on the shifted logits; what the engine reports as logprobs stays the
    model's own distribution, so nothing in a response depends on the key except the choice of tokens.
    """

    def __init__(self, key: WatermarkKey, cache_size: int = 4096):
        self.key, self.cache_size = key, cache_size
        self._cache: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()

    def _bias(self, context: tuple[int, ...], vocab_size: int) -> torch.Tensor:
        bias = self._cache.get(context)
        if bias is None or bias.shape[0] != vocab_size:
            bias = torch.from_numpy(green_mask(self.key, context, vocab_size)).float() * self.key.delta
            self._cache[context] = bias
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(context)
        return bias

    def __call__(self, histories: Sequence[Sequence[int]], logits: torch.Tensor) -> torch.Tensor:
        if self.key.delta == 0:
            return logits
        k, vocab = self.key.context, logits.shape[-1]
        bias = torch.stack([self._bias(tuple(h[-k:]), vocab) for h in histories])
        return logits + bias.to(logits.device, logits.dtype)
