"""What shapes a training run (TrainConfig) and what it reports (TrainResult)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from stillhouse.core.config import Config


class TrainConfig(Config):
    """Everything that shapes the trained weights; a resumed run must match it exactly (but `save_every`)."""

    student: str = Field(description="A model directory, or a fresh preset: tiny, small.")
    tokenizer: str | None = Field(default=None, description="Tokenizer directory (a fresh preset needs one).")
    kd: Literal["topk"] | None = Field(default=None, description="'topk': add KL on the teacher's stored logprobs.")
    kd_weight: float | None = Field(default=None, ge=0, le=1, description="KD weight w: (1-w)·SFT + w·KD (0.5).")
    lora: bool = Field(default=False, description="Train LoRA adapters (merged into the saved weights).")
    lora_r: int = Field(default=8, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: int = Field(default=16, ge=1, description="LoRA alpha.")
    mix: tuple[str, ...] = Field(
        default=(),
        description="Mixture weights by a row's meta field, FIELD=VALUE:WEIGHT (skill=sort:1.8 trains sort rows "
        "1.8x as often; 0 drops them); unlisted rows weigh 1.",
    )
    epochs: int = Field(default=1, ge=1, description="Passes over the dataset (unless --steps).")
    max_steps: int | None = Field(
        default=None, ge=1, description="Optimizer steps (overrides --epochs).", json_schema_extra={"flag": "steps"}
    )
    batch_size: int = Field(default=16, ge=1, le=65536, description="Chats per optimizer step.")
    bucket: int = Field(default=1, ge=1, description="Batches per length-sorted bucket (1: random, learns best).")
    pack: bool = Field(default=True, description="Pack each batch's chats into rows: no compute on padding.")
    lr: float = Field(default=3e-4, gt=0, le=1, description="Peak learning rate (cosine schedule).")
    warmup: float = Field(default=0.05, ge=0, lt=1, description="Warm-up, as a fraction of the steps.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    seed: int = Field(default=0, description="Seeds the initialisation and the data order.")
    max_length: int | None = Field(default=None, ge=2, description="Skip longer chats (default: the context).")
    grad_checkpointing: bool = Field(default=False, description="Recompute activations: less memory, slower.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="auto: bf16 autocast on a GPU that supports it, fp32 elsewhere (on a CPU, bf16 saved ~10 % of "
        "the time for 1.6x the memory); the weights stay fp32 either way.",
    )
    save_every: int = Field(default=200, ge=1, description="Steps between checkpoints (a re-run resumes there).")

    @model_validator(mode="after")
    def _kd_weight_needs_kd(self) -> TrainConfig:
        if self.kd_weight is not None and self.kd is None:
            raise ValueError("--kd-weight weighs the KD loss: add --kd topk, or drop --kd-weight")
        return self

    @model_validator(mode="after")
    def _mix_parses(self) -> TrainConfig:
        parse_mix(self.mix)
        return self

    @property
    def mix_weights(self) -> dict[tuple[str, str], float]:
        """--mix as {(field, value): weight}."""
        return parse_mix(self.mix)

    @property
    def kd_mix(self) -> float:
        """The KD loss's weight in the mix: 0 without KD."""
        return 0.0 if self.kd is None else 0.5 if self.kd_weight is None else self.kd_weight


def parse_mix(entries: tuple[str, ...]) -> dict[tuple[str, str], float]:
    """FIELD=VALUE:WEIGHT entries as {(field, value): weight}."""
    weights = {}
    for entry in entries:
        target, _, weight = entry.rpartition(":")
        field, _, value = target.partition("=")
        try:
            w = float(weight)
        except ValueError:
            w = -1.0
        if not (field and value and 0 <= w < float("inf")):
            raise ValueError(f"--mix {entry!r}: write FIELD=VALUE:WEIGHT with a weight >= 0, e.g. skill=sort:1.8")
        weights[(field, value)] = w
    return weights


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
