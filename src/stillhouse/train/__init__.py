"""Training a student on a curated dataset: SFT on assistant tokens, optional top-k KD, LoRA."""

from stillhouse.train.trainer import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
