"""From curated rows to batches: encode chats with the assistant-token mask, line the teacher's top-k
logprobs up with the student's tokens, and pack each random batch's chats into rows."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from stillhouse.core.dataset import row_meta
from stillhouse.core.errors import StillhouseError

IGNORE = -100


@dataclass
class Example:
    ids: list[int]
    labels: list[int]  # IGNORE outside the assistant turns
    kd: tuple[list[int], list[list[int]], list[list[float]]] | None = None  # positions, top-k ids, top-k probs


# ---------------------------------------------------------------- encoding chats


_GENERATION = re.compile(r"{%-?\s*generation\s*-?%}")


def encode_chat(tok: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids and the assistant-token mask (1 where the loss applies) of one chat."""
    marked = bool(_GENERATION.search(str(tok.chat_template or "")))  # asked without the markers, transformers warns
    enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=marked)
    ids, mask = list(enc["input_ids"]), list(enc.get("assistant_masks") or [])
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


def mixed(rows: Sequence[dict[str, Any]], weights: dict[tuple[str, str], float], seed: int) -> list[dict[str, Any]]:
    """The rows repeated by their mixture weight (the product of the weights their meta matches): floor(w)
    copies and one more with probability w - floor(w), seeded. Where a small student relearns every skill from
    its rows, a skill's share of the steps sets how much of it comes back."""
    if not weights:
        return list(rows)
    metas = [row_meta(r) for r in rows]
    for field, value in weights:
        if not any(str(m.get(field)) == value for m in metas):
            seen = sorted({str(m[field]) for m in metas if field in m})
            has = f"its values: {', '.join(seen)}" if seen else "no row has that field"
            raise StillhouseError(f"--mix {field}={value}: no training row has meta {field} {value!r} ({has})")
    rng = random.Random(f"mix:{seed}")
    out: list[dict[str, Any]] = []
    for row, meta in zip(rows, metas, strict=True):
        w = math.prod(w for (field, value), w in weights.items() if str(meta.get(field)) == value)
        out += [row] * (int(w) + (rng.random() < w - int(w)))
    return out


# ---------------------------------------------------------------- batches


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
        k = max((len(top) for e in with_kd if e.kd for top in e.kd[1]), default=0)
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
