"""The student a run starts from: a model directory, or a fresh preset with a given tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from stillhouse.core.errors import StillhouseError
from stillhouse.train.config import TrainConfig
from stillhouse.train.presets import PRESETS, fresh_model


def student_tokenizer(config: TrainConfig) -> tuple[PreTrainedTokenizerBase, str]:
    """The tokenizer the student reads with, and where it came from."""
    if config.tokenizer:
        source = Path(config.tokenizer)
    elif config.student in PRESETS:
        raise StillhouseError(f"a fresh '{config.student}' student needs a tokenizer: pass --tokenizer DIR")
    else:
        source = check_student_dir(config.student)
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise StillhouseError(f"cannot load a tokenizer from {source}: {e}") from e
    if not tok.chat_template:
        raise StillhouseError(
            f"the tokenizer in {source} has no chat template; add one (tokenizer_config.json / chat_template.jinja) "
            "or pass --tokenizer DIR with one"
        )
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok, str(source)


def student_model(config: TrainConfig, tok: PreTrainedTokenizerBase, longest: int) -> tuple[PreTrainedModel, str]:
    """The student's weights: a fresh preset (seeded) or a model directory, always in fp32."""
    if config.student in PRESETS:
        return fresh_model(config.student, tok, max_positions=max(512, longest)), f"fresh '{config.student}' preset"
    path = check_student_dir(config.student)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise StillhouseError(f"cannot load the student from {path}: {e}") from e
    if model.get_input_embeddings().num_embeddings < len(tok):
        raise StillhouseError(f"the tokenizer has {len(tok)} tokens but the student at {path} embeds fewer")
    return model, str(path)


def check_student_dir(spec: str) -> Path:
    """The student's model directory, or one line saying the spec is neither a directory nor a preset."""
    path = Path(spec)
    if not (path / "config.json").exists():
        raise StillhouseError(
            f"student '{spec}' is neither a model directory (no config.json) nor a preset: {', '.join(PRESETS)}"
        )
    return path
