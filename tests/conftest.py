"""Fixtures shared across the suite: a tiny random chat model, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stillhouse.embedded.tokenizer import train_tokenizer
from stillhouse.train.presets import fresh_model

_CORPUS = [
    "What is 12 plus 30? 12 + 30 = 42.",
    "Reverse the word planet. The reverse of planet is tenalp.",
    "Who are you? I am a small test model.",
    "Sort these numbers: 5, 3, 9. Sorted: 3, 5, 9.",
] * 50


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny Llama + chat tokenizer saved as a standard HF model directory."""
    out = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(0)
    tok = train_tokenizer(_CORPUS, vocab_size=300)
    model = fresh_model("tiny", tok, max_positions=256)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """This box is shared: two intra-op threads fighting other jobs for two cores run ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
