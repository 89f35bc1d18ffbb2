"""Saving a trained model as a standard directory with a model card naming where its knowledge came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from stillhouse.core.errors import StillhouseError
from stillhouse.core.ids import files_hash
from stillhouse.provenance.lineage import MODEL_META


def save_model(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    output_dir: Path,
    card: dict[str, Any],
) -> str:
    """save_pretrained + tokenizer (with its chat template) + model card; LoRA is merged in first
    so the directory loads anywhere a plain model does. Returns the weights' hash."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    try:
        model.save_pretrained(output_dir)
        tok.save_pretrained(output_dir)
        weights = sorted(output_dir.glob("*.safetensors"))
        model_hash, _ = files_hash(output_dir, weights)
        card["model_hash"] = model_hash
        (output_dir / MODEL_META).write_text(json.dumps(card, indent=2, default=str) + "\n")
        (output_dir / "README.md").write_text(model_card(card))
    except OSError as e:
        raise StillhouseError(
            f"cannot save the model in {output_dir}: {e.strerror or e} (is the disk full?); "
            "the checkpoints are intact, free space and re-run the same command"
        ) from e
    return model_hash


def model_card(card: dict[str, Any]) -> str:
    """A README.md naming where the model's knowledge came from: dataset, teacher, terms, purpose."""
    declared = card.get("dataset_provenance") or {}
    teachers = ", ".join(
        f"{t.get('model')} ({t.get('host')})" if isinstance(t, dict) else str(t) for t in declared.get("teachers", [])
    )
    terms = ", ".join(map(str, declared.get("terms", [])))
    purposes = ", ".join(map(str, declared.get("purposes", [])))
    permissions = ", ".join(map(str, declared.get("permissions", [])))
    cfg = card["config"]
    weight = 0.5 if cfg["kd_weight"] is None else cfg["kd_weight"]
    method = "SFT on assistant tokens" + (f" + top-k logit distillation (weight {weight})" if cfg["kd"] else "")
    if cfg["lora"]:
        method += f", LoRA r={cfg['lora_r']} alpha={cfg['lora_alpha']} (merged into the weights)"
    front = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["stillhouse", "distillation"],
        "base_model": card["student"],
    }
    val = f"{card['val_loss']:.4f}" if card.get("val_loss") is not None else "n/a (no validation split)"
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(),
        "---",
        "",
        f"# {Path(card['model_dir']).name}",
        "",
        f"Trained with stillhouse from `{card['student']}` on the dataset `{card['dataset']}`.",
        "",
        "| | |",
        "| --- | --- |",
        f"| dataset | `{card['dataset']}` |",
        f"| dataset hash (sha256) | `{card['dataset_hash']}` |",
        f"| teacher | {teachers or 'not declared by the dataset'} |",
        f"| teacher's terms | {terms or 'not declared by the dataset'} |",
        f"| declared purpose | {purposes or 'not declared by the dataset'} |",
        *([f"| permission | {permissions} |"] if permissions else []),
        f"| method | {method} |",
        f"| steps | {card['steps']} (batch {cfg['batch_size']}, lr {cfg['lr']}, seed {cfg['seed']}) |",
        f"| final training loss | {card['final_loss']:.4f} |",
        f"| validation loss | {val} |",
        f"| weights hash (sha256) | `{card['model_hash']}` |",
        f"| provenance | run `{card['run_id']}` in the ledger `{card['ledger']}` |",
        "",
        f"The whole lineage, verified: `stillhouse provenance {card['model_dir']}`.",
        "",
    ]
    return "\n".join(lines)
