"""Train a student on a curated dataset: SFT on the assistant tokens, optionally mixed with top-k
logit distillation from the teacher's stored logprobs.

One plain loop over `accelerate.Accelerator`, so the same code runs on one CPU, one GPU, or several
GPUs under `accelerate launch` / `torchrun`. It is ours rather than TRL's because packing each random
batch's chats into rows (no compute on padding) is about 3x faster on a CPU at the same loss, where
TRL's padding-free packing crawls and its length grouping learns worse (bench/train.py). Checkpoints hold the
model, optimizer, scheduler and RNG states; the data order is a pure function of (seed, epoch), so
the step number alone puts a resumed run back at the same batch and the loss curve continues exactly.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, get_cosine_schedule_with_warmup

from stillhouse import embedded
from stillhouse.core.dataset import ChatDataset, files_hash, load_dataset
from stillhouse.core.errors import StillhouseError
from stillhouse.core.ids import canonical_json, new_run_id, operator
from stillhouse.provenance.ledger import LEDGER_FILE, Ledger
from stillhouse.train.presets import PRESETS, fresh_model

IGNORE = -100
CHECKPOINTS = "checkpoints"
MODEL_META = "stillhouse.json"
# Checkpoints drop the tied lm_head copy of the embeddings, as they should; accelerate warns on every save.
logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
SAVE_EVERY = 200  # steps between checkpoints by default: a few minutes of CPU work for the shipped sizes


@dataclass
class TrainConfig:
    """Everything that shapes the trained weights; a resumed run must match it exactly."""

    student: str = "pebble"  # a model directory, "pebble" (shipped base student), or a preset: tiny | small
    tokenizer: str | None = None  # for presets: default the teacher's (Ember's) tokenizer
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


@dataclass
class Example:
    ids: list[int]
    labels: list[int]  # IGNORE outside the assistant turns
    kd: tuple[list[int], list[list[int]], list[list[float]]] | None = None  # positions, top-k ids, top-k probs


# ---------------------------------------------------------------- student and tokenizer


def student_tokenizer(config: TrainConfig) -> tuple[PreTrainedTokenizerBase, str]:
    """The tokenizer the student reads with, and where it came from."""
    if config.tokenizer:
        source = Path(config.tokenizer)
    elif config.student in PRESETS:
        source = embedded.teacher_path()
    else:
        source = _student_dir(config.student)
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


def student_model(config: TrainConfig, tok: PreTrainedTokenizerBase, longest: int) -> tuple[torch.nn.Module, str]:
    """The student's weights: a fresh preset (seeded) or a model directory, always in fp32."""
    if config.student in PRESETS:
        return fresh_model(config.student, tok, max_positions=max(512, longest)), f"fresh '{config.student}' preset"
    path = _student_dir(config.student)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise StillhouseError(f"cannot load the student from {path}: {e}") from e
    if model.get_input_embeddings().num_embeddings < len(tok):
        raise StillhouseError(f"the tokenizer has {len(tok)} tokens but the student at {path} embeds fewer")
    return model, str(path)


def _student_dir(spec: str) -> Path:
    if spec == embedded.STUDENT_NAME:
        return embedded.student_path()
    path = Path(spec)
    if not (path / "config.json").exists():
        raise StillhouseError(
            f"student '{spec}' is neither a model directory (no config.json) nor one of: "
            f"{embedded.STUDENT_NAME}, {', '.join(PRESETS)}"
        )
    return path


# ---------------------------------------------------------------- encoding chats


def encode_chat(tok: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids and the assistant-token mask (1 where the loss applies) of one chat."""
    enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
    if not any(mask):  # the template has no {% generation %} markers: find the turns by rendering prefixes
        mask = [0] * len(ids)
        for i, m in enumerate(messages):
            if m["role"] == "assistant":
                start = len(_ids(tok, messages[:i], add_generation_prompt=True))
                end = len(_ids(tok, messages[: i + 1]))
                mask[start:end] = [1] * (end - start)
    return ids, mask


def _ids(tok: PreTrainedTokenizerBase, messages: list[dict[str, str]], **kw: Any) -> list[int]:
    return list(tok.apply_chat_template(messages, tokenize=True, return_dict=True, **kw)["input_ids"])


def _last_span(mask: list[int]) -> tuple[int, int]:
    end = len(mask) - mask[::-1].index(1)
    start = end
    while start > 0 and mask[start - 1]:
        start -= 1
    return start, end


# ---------------------------------------------------------------- teacher tokens -> student ids


def _byte_of_char() -> dict[str, int]:
    """GPT-2 byte-level BPE writes each byte as one printable character; this maps them back."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class Vocab:
    """The student's vocabulary keyed by each token's bytes, the unit OpenAI-style logprobs report."""

    def __init__(self, tok: PreTrainedTokenizerBase):
        self.size = len(tok)
        added = {i: t.content for i, t in tok.added_tokens_decoder.items()}
        backend = getattr(tok, "backend_tokenizer", None)
        byte_level = backend is not None and "ByteLevel" in json.dumps(json.loads(backend.to_str()).get("decoder"))
        byte_of = _byte_of_char()
        self.by_bytes: dict[bytes, int] = {}
        self.bytes_of: dict[int, bytes] = {}  # the inverse, for writing logprobs as an API would
        self.ambiguous: set[bytes] = set()
        for piece, i in tok.get_vocab().items():
            if i in added:
                key = added[i].encode()
            elif byte_level and all(c in byte_of for c in piece):
                key = bytes(byte_of[c] for c in piece)
            else:
                key = tok.convert_tokens_to_string([piece]).encode()
            if key in self.by_bytes:
                self.ambiguous.add(key)
            self.by_bytes[key] = i
            self.bytes_of[i] = key

    def id_of(self, entry: dict[str, Any]) -> int:
        """The student id of one teacher token; refuses when there is no single counterpart."""
        token = entry.get("token") or ""
        if entry.get("bytes") is not None:
            key = bytes(entry["bytes"])
        elif token.startswith("token_id:") and token[9:].isdigit():  # vLLM's return_tokens_as_token_ids
            return int(token[9:])
        else:
            key = token.encode()
        if key not in self.by_bytes or key in self.ambiguous:
            raise StillhouseError(
                f"--kd topk needs a student with the teacher's tokenizer: teacher token {token!r} has no single "
                "counterpart in the student's vocabulary; use such a student (e.g. --student tiny with the "
                "teacher's --tokenizer) or train without --kd"
            )
        return self.by_bytes[key]


def align_topk(
    tok: PreTrainedTokenizerBase, vocab: Vocab, ids: list[int], mask: list[int], content: list[dict[str, Any]]
) -> tuple[list[int], list[list[int]], list[list[float]]] | None:
    """Pair the teacher's per-token top-k with the last assistant turn's token positions.

    The API reports logprobs for the tokens the teacher generated, which must be exactly the tokens
    re-tokenising the stored content gives (the template's closing tokens may follow); if not, the
    distributions would sit on the wrong positions, so the row gets no KD targets (None).
    """
    start, end = _last_span(mask)
    sampled = [vocab.id_of(e) for e in content]
    n = len(sampled)
    if not n or ids[start : start + n] != sampled or start + n > end:
        return None
    if tok.decode(ids[start + n : end], skip_special_tokens=True).strip():
        return None
    top_ids, top_probs = [], []
    for e in content:
        tops = e.get("top_logprobs") or [e]
        top_ids.append([vocab.id_of(t) for t in tops])
        top_probs.append([math.exp(t["logprob"]) for t in tops])
    return list(range(start, start + n)), top_ids, top_probs


def _logprob_content(value: Any) -> list[dict[str, Any]] | None:
    """Accept `logprobs.content` as stored, or the whole `logprobs` object around it."""
    if isinstance(value, dict):
        value = value.get("content")
    return value or None


def build_examples(
    rows: Sequence[dict[str, Any]], tok: PreTrainedTokenizerBase, max_length: int | None, kd: bool
) -> tuple[list[Example], dict[str, int]]:
    """Encode rows; count (and skip) what cannot be trained on rather than failing the run."""
    vocab = Vocab(tok) if kd else None
    examples: list[Example] = []
    skipped = {"too_long": 0, "no_assistant_tokens": 0, "kd_misaligned": 0, "kd_missing": 0}
    for row in rows:
        ids, mask = encode_chat(tok, row["messages"])
        if max_length and len(ids) > max_length:
            skipped["too_long"] += 1
            continue
        if not any(mask):
            skipped["no_assistant_tokens"] += 1
            continue
        ex = Example(ids, [t if m else IGNORE for t, m in zip(ids, mask, strict=True)])
        if vocab is not None:
            content = _logprob_content(row.get("logprobs"))
            if content is None:
                skipped["kd_missing"] += 1
            else:
                ex.kd = align_topk(tok, vocab, ids, mask, content)
                skipped["kd_misaligned"] += ex.kd is None
        examples.append(ex)
    return examples, {k: v for k, v in skipped.items() if v}


# ---------------------------------------------------------------- batches and losses


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, bucket: int) -> list[list[int]]:
    """Shuffled batches of similar length, sorted within buckets of `bucket` batches; the same on every rank.

    Similar lengths waste little compute on padding, but where length tracks the task (short answers
    for one skill, long for another) the batches become single-task and each step learns less:
    `bucket=1` gives plain random batches. bench/train.py measures both sides of that trade."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span, batches = batch_size * bucket, []
    for i in range(0, len(order), span):
        chunk = sorted(order[i : i + span], key=lengths.__getitem__)
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def pack_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Indices of the chats in each row: first fit, longest first, into rows `width` tokens wide."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((r for r, free in enumerate(room) if free >= lengths[i]), len(rows))
        if r == len(rows):
            rows.append([])
            room.append(width)
        rows[r].append(i)
        room[r] -= lengths[i]
    return rows


@dataclass(frozen=True)
class Collator:
    """Packs a batch's chats into as few rows as its longest chat allows, so next to no compute goes to
    padding; position ids restart at every chat, from which the model's causal mask keeps the chats of
    a row apart (transformers reads packed sequences from position_ids when no attention mask is given).
    Targets are shifted here and the LM head runs only where there is one (`keep`): for a large
    vocabulary, the prompt's logits would be most of the memory. `pack=False`: one chat per row, padded
    on the right, which a causal model never attends to. KD targets are padded to the widest top-k."""

    pad_id: int
    device: torch.device
    pack: bool = True
    select_logits: bool = True  # False for models whose forward takes no `logits_to_keep`

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        lengths = [len(e.ids) for e in examples]
        width = max(lengths)
        rows = pack_rows(lengths, width) if self.pack else [[i] for i in range(len(examples))]
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        targets = torch.full_like(ids, IGNORE)  # targets[r, p]: the token the logits at p should predict
        positions = torch.zeros_like(ids)
        with_kd = [e for e in examples if e.kd]
        k = max((len(top) for e in with_kd for top in e.kd[1]), default=0)
        kd_ids, kd_probs = torch.zeros((*ids.shape, k), dtype=torch.long), torch.zeros((*ids.shape, k))
        for r, members in enumerate(rows):
            off = 0
            for i in members:
                e, n = examples[i], lengths[i]
                ids[r, off : off + n], positions[r, off : off + n] = torch.tensor(e.ids), torch.arange(n)
                targets[r, off : off + n - 1] = torch.tensor(e.labels[1:])
                for pos, top_ids, top_probs in zip(*e.kd, strict=True) if e.kd else ():
                    kd_ids[r, off + pos - 1, : len(top_ids)] = torch.tensor(top_ids)  # predicted from pos - 1
                    kd_probs[r, off + pos - 1, : len(top_probs)] = torch.tensor(top_probs)
                off += n
            positions[r, off:] = torch.arange(width - off)  # the padding: a sequence of its own
        batch: dict[str, Any] = {"input_ids": ids, "position_ids": positions, "targets": targets}
        if with_kd:
            batch |= {"kd_ids": kd_ids, "kd_probs": kd_probs}
        batch = {key: v.to(self.device) for key, v in batch.items()}
        batch["keep"] = batch["targets"] != IGNORE
        batch["select_logits"] = self.select_logits
        batch["tokens"] = sum(lengths)
        return batch


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


# ---------------------------------------------------------------- checkpoints


def _checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first; a half-written one (still named .tmp) is never listed."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("step-") and (p / "state.json").exists())


def save_checkpoint(acc: Accelerator, root: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write to a temporary name and rename when complete, so a kill or a full disk never leaves a
    checkpoint that looks whole but is not; the previous ones stay until the new one is in place."""
    final, tmp = root / f"step-{step:08d}", root / f".step-{step:08d}.tmp"
    try:
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        if acc.is_main_process:
            (tmp / "state.json").write_text(json.dumps(state))
            os.replace(tmp, final)
            for old in _checkpoints(root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        last = _checkpoints(root)
        kept = f"the last complete checkpoint ({last[-1].name}) is intact" if last else "no checkpoint was written yet"
        raise StillhouseError(
            f"cannot write a checkpoint in {root}: {e.strerror or e} (is the disk full?); {kept}, "
            "free space and re-run the same command to resume"
        ) from e
    acc.wait_for_everyone()
    return final


# ---------------------------------------------------------------- the run


def _fingerprint(config: TrainConfig, dataset_hash: str) -> str:
    return hashlib.sha256(canonical_json([asdict(config), dataset_hash]).encode()).hexdigest()


def default_ledger(data: ChatDataset, output_dir: Path) -> Path:
    """The dataset's own run ledger when it names or sits beside one, so one file holds the lineage."""
    meta = data.meta
    candidates = [
        meta.get("ledger") and data.path / str(meta["ledger"]),
        meta.get("run_dir") and data.path / str(meta["run_dir"]) / LEDGER_FILE,
        data.path / LEDGER_FILE,
        data.path.parent / LEDGER_FILE,
    ]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), output_dir / LEDGER_FILE)


def _device_settings() -> dict[str, Any]:
    """fp32 on a CPU (bf16 there is emulated and slow), bf16 autocast on a GPU that supports it."""
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return {"mixed_precision": "bf16" if bf16 else "no"}


def train(
    dataset_dir: str | Path,
    output_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    ledger: str | Path | None = None,
    save_every: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a student on a curated dataset and save it as a standard model directory with a card.

    Checkpoints go to OUTPUT_DIR/checkpoints every `save_every` steps (default SAVE_EVERY); re-running
    the same call after a kill resumes from the last one. They are removed once the model is saved.
    """
    config = config or TrainConfig()
    output_dir = Path(output_dir)
    ckpt_root = output_dir / CHECKPOINTS
    if (output_dir / "config.json").exists() and not _checkpoints(ckpt_root):
        raise StillhouseError(f"{output_dir} already holds a trained model; choose another -o")
    if config.kd not in (None, "topk"):
        raise StillhouseError(f"unknown --kd '{config.kd}'; the one kind is 'topk'")
    data = load_dataset(dataset_dir)
    if config.kd and not data.has_logprobs:
        raise StillhouseError(
            f"{data.path} has no teacher logprobs (no 'logprobs' column, or it is empty); collect with logprobs "
            "for --kd topk, or train without --kd"
        )

    acc = Accelerator(**_device_settings())
    set_seed(config.seed)
    tok, tok_source = student_tokenizer(config)
    examples, skipped = build_examples(data.train, tok, config.max_length, kd=bool(config.kd))
    if config.kd and not any(e.kd for e in examples):
        raise StillhouseError(
            f"no row of {data.path} has teacher logprobs that line up with its assistant tokens "
            "(re-tokenising the answers does not give the teacher's tokens); was it made with another tokenizer?"
        )
    model, student_source = student_model(config, tok, max((len(e.ids) for e in examples), default=0))
    context = config.max_length or getattr(model.config, "max_position_embeddings", None) or 0
    if context and any(len(e.ids) > context for e in examples):
        skipped["too_long"] = skipped.get("too_long", 0) + sum(len(e.ids) > context for e in examples)
        examples = [e for e in examples if len(e.ids) <= context]
    if not examples:
        raise StillhouseError(f"nothing to train on in {data.path} (skipped: {skipped})")
    val_examples, _ = build_examples(data.validation, tok, context or None, kd=False)

    if config.grad_checkpointing:
        model.gradient_checkpointing_enable()
    if config.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=0.05,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
        if config.grad_checkpointing:
            model.enable_input_require_grads()

    lengths = [len(e.ids) for e in examples]
    steps_per_epoch = len(epoch_batches(lengths, config.batch_size, config.seed, 0, config.bucket)) // acc.num_processes
    if steps_per_epoch == 0:
        raise StillhouseError(f"{len(examples)} examples make no step for {acc.num_processes} processes")
    total = config.max_steps or steps_per_epoch * config.epochs
    base = model.get_base_model() if config.lora else model
    collate = Collator(
        tok.pad_token_id,
        acc.device,
        pack=config.pack and honours_packing(base),
        select_logits="logits_to_keep" in inspect.signature(base.forward).parameters,
    )
    optimizer = torch.optim.AdamW(  # fused: one kernel for all parameters, ~6x faster than the loop on a CPU
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
        fused=acc.device.type in ("cpu", "cuda"),
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup * total), total)
    model, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(scheduler)  # not prepared: we step it once per step, whatever the world size

    fingerprint = _fingerprint(config, data.hash)
    state: dict[str, Any] = {"step": 0, "losses": [], "tokens": 0, "run_id": new_run_id("train")}
    resumed_from = None
    if found := _checkpoints(ckpt_root):
        saved = json.loads((found[-1] / "state.json").read_text())
        if saved.get("fingerprint") != fingerprint:
            raise StillhouseError(
                f"{ckpt_root} holds a run with other settings or data; re-run with those, "
                "or choose another -o (or delete the checkpoints) to start afresh"
            )
        acc.load_state(str(found[-1]))
        state, resumed_from = saved, saved["step"]

    led_path = Path(ledger) if ledger else default_ledger(data, output_dir)
    led = Ledger(led_path) if acc.is_main_process else None
    provenance = data.provenance()
    inputs = {"dataset": {"path": str(data.path), "hash": data.hash, "rows": len(data.train)}}
    if led:
        start = {"operator": operator(), "config": asdict(config), "inputs": inputs, "student": student_source}
        start |= {"tokenizer": tok_source, "devices": f"{acc.num_processes} x {acc.device.type}"}
        led.append(state["run_id"], "train.start", provenance | start | {"resumed_from_step": resumed_from})

    def save(st: dict[str, Any]) -> None:
        save_checkpoint(acc, ckpt_root, st["step"], st | {"fingerprint": fingerprint})

    try:
        every = save_every or SAVE_EVERY
        tps = _loop(acc, model, optimizer, scheduler, examples, collate, config, state, total, save, every, progress)
        val_loss = _val_loss(acc.unwrap_model(model), val_examples, collate, config.batch_size)
        card = provenance | {
            "model_dir": str(output_dir),
            "dataset": str(data.path),
            "dataset_hash": data.hash,
            "student": student_source,
            "config": asdict(config),
            "steps": state["step"],
            "final_loss": _tail_mean(state["losses"]),
            "val_loss": val_loss,
            "run_id": state["run_id"],
            "ledger": str(led_path.resolve()),
        }
        model_hash = ""
        if acc.is_main_process:
            model_hash = _save_model(acc.unwrap_model(model), tok, output_dir, card)
            shutil.rmtree(ckpt_root, ignore_errors=True)
        acc.wait_for_everyone()
    except BaseException as e:
        if led:
            led.append(state["run_id"], "train.end", {"ok": False, "failed": str(e) or type(e).__name__})
            led.close()
        raise
    if led:
        end = {"ok": True, "steps": state["step"], "final_loss": card["final_loss"], "val_loss": val_loss}
        end |= {"tokens": state["tokens"], "tokens_per_s": round(tps, 1), "skipped": skipped, "inputs": inputs}
        led.append(
            state["run_id"], "train.end", end | {"outputs": {"model": {"path": str(output_dir), "hash": model_hash}}}
        )
        led.close()
    return TrainResult(
        model_dir=output_dir,
        run_id=state["run_id"],
        steps=state["step"],
        losses=state["losses"],
        tokens=state["tokens"],
        tokens_per_s=tps,
        val_loss=val_loss,
        dataset_hash=data.hash,
        model_hash=model_hash,
        resumed_from=resumed_from,
        skipped=skipped,
    )


def _loop(
    acc: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    examples: list[Example],
    collate: Collator,
    config: TrainConfig,
    state: dict[str, Any],
    total: int,
    save: Callable[[dict[str, Any]], Any],
    save_every: int,
    show: bool,
) -> float:
    """The training loop proper: one optimizer step per batch; returns tokens/s of this session."""
    world, rank = acc.num_processes, acc.process_index
    lengths = [len(e.ids) for e in examples]
    steps_per_epoch = len(epoch_batches(lengths, config.batch_size, config.seed, 0, config.bucket)) // world
    bar = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[tps]:,.0f} tok/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not (show and acc.is_main_process),
    )
    epoch, batches = -1, []
    tokens, started = 0, time.perf_counter()
    model.train()
    with bar:
        task = bar.add_task("train", total=total, completed=state["step"], loss=float("nan"), tps=0.0)
        while state["step"] < total:
            e, k = divmod(state["step"], steps_per_epoch)
            if e != epoch:
                epoch, batches = e, epoch_batches(lengths, config.batch_size, config.seed, e, config.bucket)
            batch = collate([examples[i] for i in batches[k * world + rank]])
            loss = batch_loss(model, batch, config.kd_weight if config.kd else 0.0)
            acc.backward(loss)
            acc.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            n_tokens = batch["tokens"] * world
            tokens += n_tokens
            state["step"] += 1
            state["tokens"] += n_tokens
            state["losses"].append(acc.reduce(loss.detach(), "mean").item())
            tps = tokens / (time.perf_counter() - started)
            bar.update(task, completed=state["step"], loss=_tail_mean(state["losses"]), tps=tps)
            if state["step"] % save_every == 0 and state["step"] < total:
                save(state)
    return tokens / max(time.perf_counter() - started, 1e-9)


def _tail_mean(losses: list[float], n: int = 20) -> float:
    tail = losses[-n:]
    return sum(tail) / len(tail) if tail else float("nan")


@torch.no_grad()
def _val_loss(model: torch.nn.Module, examples: list[Example], collate: Collator, batch_size: int) -> float | None:
    """Token-mean SFT loss on the validation split, if the dataset has one."""
    if not examples:
        return None
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    for i in range(0, len(order), batch_size):
        batch = collate([examples[j] for j in order[i : i + batch_size]])
        n = int(batch["keep"].sum())
        total += float(batch_loss(model, batch, 0.0)) * n
        count += n
    model.train()
    return total / max(count, 1)


def _save_model(
    model: torch.nn.Module,
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
        model_hash = files_hash(output_dir, weights)
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
    teacher = card.get("teacher")
    if isinstance(teacher, dict):
        teacher = teacher.get("model") or teacher.get("name") or canonical_json(teacher)
    terms = card.get("terms")
    if isinstance(terms, dict):
        terms = terms.get("name") or terms.get("id") or canonical_json(terms)
    cfg = card["config"]
    method = "SFT on assistant tokens" + (
        f" + top-k logit distillation (weight {cfg['kd_weight']})" if cfg["kd"] else ""
    )
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
        f"| teacher | {teacher or 'not declared by the dataset'} |",
        f"| teacher's terms | {terms or 'not declared by the dataset'} |",
        f"| declared purpose | {card.get('purpose') or 'not declared by the dataset'} |",
        *([f"| permission | {card['permission']} |"] if card.get("permission") else []),
        f"| method | {method} |",
        f"| steps | {card['steps']} (batch {cfg['batch_size']}, lr {cfg['lr']}, seed {cfg['seed']}) |",
        f"| final training loss | {card['final_loss']:.4f} |",
        f"| validation loss | {val} |",
        f"| weights hash (sha256) | `{card['model_hash']}` |",
        f"| provenance | run `{card['run_id']}` in the ledger `{card['ledger']}` |",
        "",
        "Check the lineage with `stillhouse ledger show` and `stillhouse ledger verify` on that ledger.",
        "",
    ]
    return "\n".join(lines)
