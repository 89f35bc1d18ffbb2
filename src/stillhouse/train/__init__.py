"""Training a student on a curated dataset: SFT on assistant tokens, optional top-k KD, LoRA.

config (what shapes a run) -> student (the starting weights) -> data (chats to packed batches) ->
losses -> loop (the run, resumable) -> checkpoints and card (what it writes).
"""

from typing import TYPE_CHECKING, Any

from stillhouse.train.config import TrainConfig, TrainResult

if TYPE_CHECKING:
    from stillhouse.train.loop import train

__all__ = ["TrainConfig", "TrainResult", "train"]


def __getattr__(name: str) -> Any:
    """`train` imports torch and transformers on first use, so the CLI and the configs load without them."""
    if name == "train":
        from stillhouse.train.loop import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
