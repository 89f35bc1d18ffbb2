"""Training a student on a curated dataset: SFT on assistant tokens, optional top-k KD, LoRA.

config (what shapes a run) -> student (the starting weights) -> data (chats to packed batches) ->
losses -> loop (the run, resumable) -> checkpoints and card (what it writes).
"""

from stillhouse.train.config import TrainConfig, TrainResult
from stillhouse.train.loop import train

__all__ = ["TrainConfig", "TrainResult", "train"]
