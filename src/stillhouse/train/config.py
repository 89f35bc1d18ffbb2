"""What shapes a training run (TrainConfig) and what it reports (TrainResult)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainConfig:
    """Everything that shapes the trained weights; a resumed run must match it exactly."""

    student: str  # a model directory, or a fresh preset: tiny | small
    tokenizer: str | None = None  # a tokenizer directory; required for presets, else the student's own
    kd: str | None = None  # None: SFT only; "topk": plus KL on the teacher's stored top-k logprobs
    kd_weight: float = 0.5  # loss = (1 - w) * SFT + w * KD
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    epochs: int = 1
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 16
    bucket: int = 1  # batches per length-sorted bucket; 1: random batches (see epoch_batches)
    pack: bool = True  # several chats per row of the batch (see Collator); off where the model cannot keep them apart
    lr: float = 3e-4
    warmup: float = 0.05  # fraction of the steps
    weight_decay: float = 0.0
    seed: int = 0
    max_length: int | None = None  # default: the model's context length; longer chats are skipped
    grad_checkpointing: bool = False


@dataclass
class TrainResult:
    model_dir: Path
    run_id: str
    steps: int
    losses: list[float]
    tokens: int
    tokens_per_s: float
    val_loss: float | None
    dataset_hash: str
    model_hash: str
    resumed_from: int | None
    skipped: dict[str, int] = field(default_factory=dict)
