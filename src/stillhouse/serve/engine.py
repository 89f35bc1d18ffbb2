"""Continuous batching for a causal LM: one worker thread owns the model; sequences join and leave between steps.

The running rows share one left-padded KV cache (a transformers `DynamicCache`). Requests that arrive while a
batch is running are prefilled together on one forward pass, their cache rows are padded on the left to the
running length and appended, and from then on they advance with everyone else, one token per row per forward
pass. Finished or cancelled rows are dropped and columns that became padding in every row are trimmed away.
Position ids count real tokens only, so a row's outputs do not depend on its neighbours: greedy decoding gives
what `model.generate(do_sample=False)` gives for the prompt alone.

Logprobs are the model's own distribution, `log_softmax` of the raw logits, taken before temperature, top_p,
penalties, logit_bias and the logits hook are applied (as OpenAI reports them).

A logits hook (`logits_hook(histories, logits) -> logits`, e.g. a watermark) sees every row's tokens so far,
prompt included, and the whole batch's logits at once, after penalties and before sampling.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicLayer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from stillhouse.core.errors import StillhouseError

log = logging.getLogger(__name__)

LogitsHook = Callable[[list[list[int]], torch.Tensor], torch.Tensor]
MAX_TOP_LOGPROBS = 20
_UNICODE_TO_BYTE = {c: b for b, c in bytes_to_unicode().items()}  # byte-level BPE's printable alias of each byte


@dataclass(frozen=True)
class SamplingParams:
    """How one request decodes (OpenAI semantics: temperature 0 is greedy, top_p 1 keeps every token)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # None: off; k: the chosen token's logprob and the k most likely alternatives
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    ignore_eos: bool = False  # keep going past end-of-turn until max_tokens (benchmarks)


@dataclass
class TokenLogprob:
    """One generated token with its logprob, its most likely alternatives, and where it starts in the text.

    A token that is only part of a UTF-8 character reads "bytes:\\xe2\\x80" (OpenAI's spelling); `raw` has its bytes.
    """

    token: str
    raw: bytes
    logprob: float
    top: list[tuple[str, bytes, float]]
    offset: int


@dataclass
class Delta:
    """New output for one choice of a request; the last one has a finish_reason ("stop", "length" or "error")."""

    index: int
    text: str
    logprobs: list[TokenLogprob]
    completion_tokens: int
    finish_reason: str | None = None


class Request:
    """A prompt to complete `n` times; `on_delta` is called from the worker thread and must return quickly."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams, n: int, on_delta: Callable[[Delta], None]):
        self.prompt_ids, self.params, self.n, self.on_delta = prompt_ids, params, n, on_delta
        self.cancelled = False


@dataclass(eq=False)
class _Row:
    """One sequence being generated: a choice of a request, one row of the batch."""

    req: Request
    index: int
    generator: torch.Generator | None
    pos: int  # position id of the next token fed to the model
    ids: list[int] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)  # token -> times generated, for penalties
    text: str = ""
    sent: int = 0  # characters of text already delivered
    pending: list[TokenLogprob] = field(default_factory=list)  # logprobs not yet delivered
    done: bool = False  # finished or cancelled: no more deltas; it leaves the batch at the next rebuild


@dataclass
class _Joining:
    """Rows to put in the batch: their keys/values per layer, their attention mask, the rows themselves."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor
    rows: list[_Row]


def load_model(model_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a Hugging Face causal LM directory for CPU inference, or say clearly why it is not one."""
    if not model_dir.is_dir():
        raise StillhouseError(f"{model_dir} is not a directory; pass a Hugging Face model directory")
    if not (model_dir / "config.json").exists():
        raise StillhouseError(f"{model_dir} is not a model directory (no config.json); pass a Hugging Face model dir")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    except Exception as e:  # transformers raises many types for a broken directory
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StillhouseError(f"cannot load a causal language model from {model_dir}: {first_line}") from e
    return model.eval(), tokenizer


def _generator(params: SamplingParams, index: int) -> torch.Generator | None:
    """Per-row RNG: a seeded request repeats itself whatever else is in the batch; choice i uses seed + i."""
    if params.temperature == 0:
        return None
    seed = (params.seed + index) % 2**64 if params.seed is not None else random.getrandbits(63)
    return torch.Generator().manual_seed(seed)


class _GrowingLayer(DynamicLayer):
    """A cache layer that writes new keys/values into spare room (doubling it when full).

    The stock `DynamicLayer` concatenates the whole cache on every step: ~17 % of a 32-row decode step on CPU.
    """

    _k: torch.Tensor | None = None
    _v: torch.Tensor | None = None
    keys: torch.Tensor
    values: torch.Tensor

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        if self._k is None or self._v is None or end > self._k.shape[-2]:
            self._k, self._v = (
                _with_room(self.keys, key_states, 2 * end),
                _with_room(self.values, value_states, 2 * end),
            )
        self._k[..., start:end, :] = key_states
        self._v[..., start:end, :] = value_states
        self.keys, self.values = self._k[..., :end, :], self._v[..., :end, :]
        return self.keys, self.values


def _with_room(old: torch.Tensor, new: torch.Tensor, capacity: int) -> torch.Tensor:
    buffer = new.new_empty((*new.shape[:-2], capacity, new.shape[-1]))
    if old.numel():
        buffer[..., : old.shape[-2], :] = old
    return buffer


def _packed(parts: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """Stack [rows, heads, len, dim] parts row-wise, each right-aligned to `width` columns, into a buffer with room
    to grow: one copy of each part, zeros only in the padding (masked, but garbage there could be NaN)."""
    first = parts[0]
    buffer = first.new_empty((sum(t.shape[0] for t in parts), first.shape[1], 2 * width, first.shape[-1]))
    row = 0
    for t in parts:
        pad = width - t.shape[-2]
        buffer[row : row + t.shape[0], :, :pad] = 0
        buffer[row : row + t.shape[0], :, pad:width] = t
        row += t.shape[0]
    return buffer


def _kv_cache(layers: Sequence[tuple[torch.Tensor, torch.Tensor]], length: int) -> DynamicCache:
    """A DynamicCache of growing layers over these (keys, values) buffers: the first `length` columns hold the
    cache, the rest is room."""
    cache = DynamicCache()
    for k, v in layers:
        layer = _GrowingLayer()
        layer.lazy_initialization(k, v)
        layer._k, layer._v = k, v
        layer.keys, layer.values = k[..., :length, :], v[..., :length, :]
        cache.layers.append(layer)
    return cache


def _left_pad(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim % t.dim()) + [n, 0]
    return F.pad(t, pad)


class Engine:
    """Owns a model and a worker thread; `submit` queues a request, `cancel` frees its rows at the next step."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch: int = 64,
        logits_hook: LogitsHook | None = None,
    ):
        self.model, self.tokenizer, self.max_batch = model.eval(), tokenizer, max_batch
        self.logits_hook = logits_hook
        self.context_length: int = model.config.max_position_embeddings
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in [*eos, tokenizer.eos_token_id] if i is not None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.steps = 0  # forward passes run, for tests and benchmarks
        self.peak_batch = 0
        self._pieces: dict[int, tuple[str, bytes]] = {}
        self._byte_level = isinstance(getattr(tokenizer, "backend_tokenizer", None), Tokenizer) and isinstance(
            tokenizer.backend_tokenizer.decoder, decoders.ByteLevel
        )
        self._cond = threading.Condition()
        self._waiting: deque[Request] = deque()
        self._rows: list[_Row] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, cached + 1]: 1 for real tokens, 0 for left padding
        self._closed = False
        self._waited = 0  # steps the oldest waiting request has waited
        self._thread = threading.Thread(target=self._loop, name="stillhouse-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_dir(cls, model_dir: Path, *, max_batch: int = 64, logits_hook: LogitsHook | None = None) -> Engine:
        return cls(*load_model(model_dir), max_batch=max_batch, logits_hook=logits_hook)

    @property
    def active(self) -> int:
        """Sequences being generated (finished rows still in the batch are not counted)."""
        return self._live()

    @property
    def waiting(self) -> int:
        """Requests queued for the next admission."""
        return len(self._waiting)

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, n: int, on_delta: Callable[[Delta], None]
    ) -> Request:
        if not prompt_ids or len(prompt_ids) + params.max_tokens > self.context_length:
            raise ValueError("prompt must be non-empty and prompt + max_tokens must fit the context")
        if not 1 <= n <= self.max_batch:
            raise ValueError(f"n must be between 1 and {self.max_batch}")
        req = Request(prompt_ids, params, n, on_delta)
        with self._cond:
            if self._closed:
                raise RuntimeError("engine is closed")
            self._waiting.append(req)
            self._cond.notify()
        return req

    def cancel(self, req: Request) -> None:
        """Stop generating for a request (its client went away): its rows leave the batch at the next step."""
        req.cancelled = True
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        """Stop the worker; unfinished requests get a final delta with finish_reason "error"."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    # --- worker thread ---------------------------------------------------------------------------
    #
    # Rebuilding the batch copies the whole KV cache, so it is not done every time a row finishes: finished rows
    # stay in the batch as dead weight (fed a pad token, their outputs ignored) until there are enough of them, or
    # of waiting requests, to make the copy worth it. Waiting requests are admitted together, on one prefill.

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._closed and not self._waiting and not self._rows:
                        self._cond.wait()
                    if self._closed:
                        break
                    admitted = self._admit() if self._admission_due() else []
                try:
                    for r in self._rows:
                        r.done = r.done or r.req.cancelled
                    joining = self._prefill(admitted) if admitted else None
                    if joining or (len(self._rows) - self._live()) * 4 >= max(1, len(self._rows)):
                        self._rebuild(joining)
                    if self._rows:
                        self._decode()
                    self._waited = self._waited + 1 if self._waiting else 0
                except Exception:
                    log.exception("generation step failed; failing the requests in the batch")
                    running = {id(r.req) for r in self._rows}
                    self._fail(self._rows, [req for req in admitted if id(req) not in running])
        self._fail(self._rows, list(self._waiting))
        self._waiting.clear()

    def _live(self) -> int:
        return sum(not r.done for r in self._rows)

    def _admission_due(self) -> bool:
        """Admit when the batch is idle, when waiting and finished rows make up an eighth of it, or when the oldest
        request has waited 8 steps (latency stays bounded at low load)."""
        if not self._waiting:
            return False
        live = self._live()
        pending = sum(req.n for req in self._waiting) + len(self._rows) - live
        return live == 0 or pending >= max(1, live // 8) or self._waited >= 8

    def _admit(self) -> list[Request]:
        """Take waiting requests, oldest first, while their rows fit in the batch."""
        admitted, rows = [], self._live()
        while self._waiting:
            req = self._waiting[0]
            if not req.cancelled and rows + req.n > self.max_batch:
                break
            self._waiting.popleft()
            if not req.cancelled:
                admitted.append(req)
                rows += req.n
        return admitted

    def _fail(self, rows: list[_Row], requests: list[Request]) -> None:
        for r in rows:
            if not r.done:
                r.req.on_delta(Delta(r.index, "", [], len(r.ids), "error"))
        for req in requests:
            for i in range(req.n):
                req.on_delta(Delta(i, "", [], 0, "error"))
        self._rows, self._cache, self._mask = [], None, None

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache
    ) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, logits_to_keep=1)
        self.steps += 1
        self.peak_batch = max(self.peak_batch, ids.shape[0])
        return out.logits[:, -1].float()

    def _prefill(self, reqs: list[Request]) -> _Joining | None:
        """One forward pass over the new prompts (left-padded); each prompt's cache is shared by its n choices.
        Returns the rows still running after their first token, with their keys/values, for `_rebuild`."""
        width = max(len(r.prompt_ids) for r in reqs)
        ids = torch.full((len(reqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(reqs), width), dtype=torch.long)
        for i, r in enumerate(reqs):
            ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids) :] = 1
        cache = DynamicCache()
        logits = self._forward(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), cache)
        fan = torch.arange(len(reqs)).repeat_interleave(torch.tensor([r.n for r in reqs]))
        rows = [_Row(req, i, _generator(req.params, i), pos=len(req.prompt_ids)) for req in reqs for i in range(req.n)]
        keep = self._advance(rows, logits[fan])
        if not keep:
            return None
        kept = fan[keep]
        kv = [(layer.keys[kept], layer.values[kept]) for layer in cache.layers]
        return _Joining(kv, mask[kept], [rows[i] for i in keep])

    def _rebuild(self, joining: _Joining | None) -> None:
        """Drop finished rows and append newly prefilled ones, in one copy of the cache; leading columns that are
        padding in every row are trimmed, and each side is left-padded to the common width."""
        parts: list[_Joining] = []
        keep = [i for i, r in enumerate(self._rows) if not r.done]
        if keep and self._cache is not None and self._mask is not None:
            all_kept = len(keep) == len(self._rows)
            idx = torch.tensor(keep)
            mask = self._mask if all_kept else self._mask[idx]
            cut = int(mask.any(0).int().argmax())
            kv = [
                (layer.keys[:, :, cut:], layer.values[:, :, cut:])
                if all_kept
                else (layer.keys[idx, :, cut:], layer.values[idx, :, cut:])
                for layer in self._cache.layers
            ]
            parts.append(_Joining(kv, mask[:, cut:], [self._rows[i] for i in keep]))
        if joining is not None:
            parts.append(joining)
        if not parts:
            self._rows, self._cache, self._mask = [], None, None
            return
        width = max(p.mask.shape[1] for p in parts)
        layers = zip(*(p.kv for p in parts), strict=True)
        self._cache = _kv_cache(
            [(_packed([k for k, _ in layer], width), _packed([v for _, v in layer], width)) for layer in layers],
            width,
        )
        self._mask = torch.cat([_left_pad(p.mask, width - p.mask.shape[1], 1) for p in parts])
        self._rows = [r for p in parts for r in p.rows]

    def _decode(self) -> None:
        """One token for every row of the batch; only the live rows' tokens are used."""
        ids = torch.tensor([[self.pad_id if r.done else r.ids[-1]] for r in self._rows])
        positions = torch.tensor([[r.pos] for r in self._rows])
        assert self._mask is not None and self._cache is not None, "decoding needs running rows"
        self._mask = F.pad(self._mask, (0, 1), value=1)
        logits = self._forward(ids, self._mask, positions, self._cache)
        live = [i for i, r in enumerate(self._rows) if not r.done]
        for i in live:
            self._rows[i].pos += 1
        rows = [self._rows[i] for i in live]
        running = set(self._advance(rows, logits[live] if len(live) < len(self._rows) else logits))
        for j, r in enumerate(rows):
            r.done = j not in running

    # --- sampling and detokenisation -------------------------------------------------------------

    def _advance(self, rows: list[_Row], logits: torch.Tensor) -> list[int]:
        """Sample one token per row, deliver what became final; return the indices of rows still running."""
        tokens = self._sample(rows, logits)
        top = self._top_logprobs(rows, logits, tokens)
        keep = []
        for i, (row, token) in enumerate(zip(rows, tokens, strict=True)):
            if not self._append(row, token, top[i] if top else None):
                keep.append(i)
        return keep

    def _sample(self, rows: list[_Row], logits: torch.Tensor) -> list[int]:
        adjusted = logits
        for i, r in enumerate(rows):
            p = r.req.params
            if p.logit_bias or (r.counts and (p.presence_penalty or p.frequency_penalty)):
                if adjusted is logits:
                    adjusted = logits.clone()
                if p.logit_bias:
                    biased, bias = zip(*p.logit_bias, strict=True)
                    adjusted[i, list(biased)] += torch.tensor(bias)
                if r.counts:
                    seen, counts = list(r.counts), torch.tensor(list(r.counts.values()), dtype=torch.float32)
                    adjusted[i, seen] -= p.frequency_penalty * counts + p.presence_penalty
        if self.logits_hook is not None:
            adjusted = self.logits_hook([r.req.prompt_ids + r.ids for r in rows], adjusted)
        tokens = adjusted.argmax(-1)
        sampled = [i for i, r in enumerate(rows) if r.generator is not None]
        if sampled:
            temperature = torch.tensor([rows[i].req.params.temperature for i in sampled])
            top_p = torch.tensor([rows[i].req.params.top_p for i in sampled])
            probs = torch.softmax(adjusted[sampled] / temperature[:, None], -1)
            if (top_p < 1).any():
                sorted_probs, order = probs.sort(-1, descending=True)
                # keep the smallest set of most likely tokens whose mass reaches top_p (never empty)
                sorted_probs[sorted_probs.cumsum(-1) - sorted_probs > top_p[:, None]] = 0
                probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
            for j, i in enumerate(sampled):
                tokens[i] = torch.multinomial(probs[j], 1, generator=rows[i].generator)[0]
        return tokens.tolist()

    def _top_logprobs(
        self, rows: list[_Row], logits: torch.Tensor, tokens: list[int]
    ) -> list[tuple[float, list[tuple[int, float]]] | None]:
        wanted = [r.req.params.logprobs for r in rows]
        if all(k is None for k in wanted):
            return []
        logprobs = torch.log_softmax(logits, -1)
        chosen = logprobs.gather(-1, torch.tensor(tokens)[:, None])[:, 0].tolist()
        k = max(k or 0 for k in wanted)
        values, ids = (t.tolist() for t in logprobs.topk(k, -1))
        return [
            None if w is None else (chosen[i], list(zip(ids[i][:w], values[i][:w], strict=True)))
            for i, w in enumerate(wanted)
        ]

    def _piece(self, token: int) -> tuple[str, bytes]:
        """A token's text and exact bytes (a byte-level BPE token can be part of a UTF-8 character)."""
        if token not in self._pieces:
            text = self.tokenizer.decode([token])
            raw = text.encode()
            if self._byte_level and token not in self.tokenizer.all_special_ids:
                raw = bytes(_UNICODE_TO_BYTE[c] for c in self.tokenizer.convert_ids_to_tokens(token))
                try:
                    text = raw.decode()
                except UnicodeDecodeError:
                    text = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
            self._pieces[token] = text, raw
        return self._pieces[token]

    def _append(self, row: _Row, token: int, logprob: tuple[float, list[tuple[int, float]]] | None) -> bool:
        """Add a token to a row, deliver the text that can no longer turn into a stop string; True when done."""
        p = row.req.params
        row.ids.append(token)
        row.counts[token] = row.counts.get(token, 0) + 1
        eos = token in self.eos_ids and not p.ignore_eos
        if not eos:
            if logprob is not None:
                chosen, top = logprob
                alternatives = [(*self._piece(t), v) for t, v in top]
                row.pending.append(TokenLogprob(*self._piece(token), chosen, alternatives, len(row.text)))
            row.text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
        finish, end = None, len(row.text)
        hits = [i for i in (row.text.find(s, max(0, row.sent - len(s))) for s in p.stop) if i >= 0]
        if hits:
            finish, end = "stop", min(hits)
        elif eos:
            finish = "stop"
        elif len(row.ids) >= p.max_tokens:
            finish = "length"
        else:
            end = _safe_end(row.text, p.stop)
        end = max(end, row.sent)
        tokens = [t for t in row.pending if t.offset < end or (finish and not hits)]
        row.pending = row.pending[len(tokens) :]
        if end > row.sent or tokens or finish:
            row.req.on_delta(Delta(row.index, row.text[row.sent : end], tokens, len(row.ids), finish))
        row.sent = end
        return finish is not None


def _safe_end(text: str, stops: tuple[str, ...]) -> int:
    """How much of `text` is final: hold back an incomplete UTF-8 character and any start of a stop string."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    held = 0
    for s in stops:
        held = max([held] + [k for k in range(1, min(len(s), end + 1)) if text.endswith(s[:k], 0, end)])
    return end - held
