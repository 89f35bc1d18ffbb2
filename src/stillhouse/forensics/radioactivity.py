"""Radioactivity (Sander et al. 2024): was a suspect model trained on text our watermarked server wrote?

A model fine-tuned on watermarked text picks up a slight preference for the green tokens of the contexts it saw.

- open mode (weights at hand): run the suspect over our own watermarked chats and take its top-1 next-token
  prediction at every answer position; the window is the text's own preceding tokens. Each (window,
  prediction) pair is scored once (or each window, stricter), and positions where the suspect just predicts
  the text's actual next token are left out: that token was chosen by the watermark, so a clean model that
  predicts the text well would otherwise look radioactive.
- closed mode (an API only): prompt the suspect (sampling), score its answers; each (window, token) pair
  counts once, and pairs copied from the prompt are left out (the prompt is not the suspect's choice).

Both report the exact binomial p-value and the same test under random keys, so a reader sees the test is
calibrated on this very material, not only that p is small.

Random keys cannot show one bias of open mode: where the suspect's first choice differs from our text's token,
the watermark often pushed the text away from that choice, so a suspect close to our teacher (its own base, a
sibling) predicts red tokens more often than gamma and the binomial p says "clean" with false confidence. The
remedy needs the teacher, which the provider has: a control, our teacher's answers to the same prompts under
fresh keys, each scored with its own key. The suspect never saw those keys, so under the null their scores and
the true key's are exchangeable whatever the suspect's ancestry; open mode with a control tests the true key's
green rate against the control keys' spread (a prediction t: keys differ by more than sampling noise), and leaves
each control key out in turn against the rest as its null.

Exchangeability also lets the control count the positions where the suspect predicts the text's own token:
against gamma they would make any model that predicts our text well look radioactive, but a control key's text is
predicted as well as ours by a clean suspect, so only memorising our text lifts our key above the others. That is
where the signal of a small dose lies (measured on the embedded default: a student trained on 5 % watermarked
chats predicts the green tokens of the chats it was served, and of no other text). Two shapes of control:

- shared (default): each fresh key answers a share of the prompts, so the control costs one answer per chat;
- full: every fresh key answers every prompt (keys x chats answers), so each key is scored on the same prompts
  as ours; for the chats one suspect was served (the provider's logs of its account), the paper's supervised
  setting.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from scipy import stats
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from stillhouse.collect import collect
from stillhouse.collect.store import RunStore
from stillhouse.core.errors import StillhouseError
from stillhouse.forensics.chats import Chat
from stillhouse.forensics.detect import Pair, null_distribution, score_pairs, windows
from stillhouse.forensics.green import p_text
from stillhouse.forensics.key import WatermarkKey
from stillhouse.serve import serve_in_background

Mode = Literal["open", "closed"]
Dedup = Literal["pair", "window"]


@dataclass
class Scored:
    """The pairs a radioactivity test scores, and how many positions each filter removed."""

    pairs: list[Pair]
    filtered: dict[str, int]


def template_ids(tok: PreTrainedTokenizerBase, messages: Sequence[dict[str, Any]], **kw: Any) -> list[int]:
    ids = tok.apply_chat_template(list(messages), tokenize=True, **kw)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def same_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    return a.get_vocab() == b.get_vocab()


def open_pairs(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerBase,
    chats: Sequence[Chat],
    context: int,
    *,
    dedup: Dedup = "pair",
    keep_copies: bool = False,
    batch_size: int = 16,
) -> Scored:
    """(text window, suspect's top-1 prediction) at every answer position of our chats, filtered and deduplicated.

    dedup "pair" scores each distinct (window, prediction) once, as the paper's tape does; "window" scores each
    window once (stricter, and with a small vocabulary and context 1 it leaves very few to score). Predictions of
    the text's own token are left out unless `keep_copies`, which only a test against a control may ask for.
    """
    rows = []
    for c in chats:
        if not c.answer:
            continue
        start = len(template_ids(tok, c.prompt, add_generation_prompt=True))
        full = template_ids(tok, [*c.prompt, {"role": "assistant", "content": c.answer}])
        rows.append((full, max(start, context)))
    positions = copies = 0
    kept: dict[tuple[int, ...], Pair] = {}
    device = next(model.parameters()).device
    for b in range(0, len(rows), batch_size):
        batch = rows[b : b + batch_size]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (row, _) in enumerate(batch):
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        with torch.inference_mode():
            predicted = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.argmax(-1).tolist()
        for (row, start), pred in zip(batch, predicted, strict=True):
            for i in range(start, len(row)):
                positions += 1
                if pred[i - 1] == row[i]:
                    copies += 1
                    if not keep_copies:
                        continue
                window = tuple(row[i - context : i])
                kept.setdefault(window if dedup == "window" else (*window, pred[i - 1]), (window, pred[i - 1]))
    pairs = list(kept.values())
    repeated = positions - (0 if keep_copies else copies) - len(pairs)
    return Scored(pairs, {"positions": positions, "predicted_the_text": copies, "repeated": repeated})


def closed_pairs(prompts: Sequence[list[int]], answers: Sequence[list[int]], context: int) -> Scored:
    """(window, token) pairs of the suspect's answers: distinct ones, none copied from its prompt."""
    positions = copied = 0
    seen: dict[Pair, None] = {}
    for prompt, answer in zip(prompts, answers, strict=True):
        grams = {tuple(prompt[i : i + context + 1]) for i in range(len(prompt) - context)}
        for window, token in windows(answer, context):
            positions += 1
            if (*window, token) in grams:
                copied += 1
                continue
            seen.setdefault((window, token), None)
    pairs = list(seen)
    repeated = positions - copied - len(pairs)
    return Scored(pairs, {"positions": positions, "copied_from_prompt": copied, "repeated": repeated})


def served_model(base_url: str) -> str:
    """The first model an OpenAI-compatible endpoint lists."""
    key = os.environ.get("OPENAI_API_KEY")
    request = urllib.request.Request(
        base_url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {key}"} if key else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.loads(r.read())["data"][0]["id"]
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise StillhouseError(f"cannot list the models of {base_url} ({e}); is it up and OpenAI-compatible?") from e


def ask(
    suspect: str,
    prompts: Sequence[list[dict[str, Any]]],
    *,
    samples: int = 1,
    watermark: WatermarkKey | None = None,
    **sampling: Any,
) -> list[tuple[list[dict[str, Any]], str]]:
    """A model's answers to our prompts, collected like any other run (a model dir is served first, with
    `watermark` if given); `sampling` is collect's (temperature, max_tokens, ...).

    Suspects are sampled, not decoded greedily: greedy answers repeat themselves and leave few pairs to score.
    """
    if not suspect.startswith(("http://", "https://")):
        with serve_in_background(suspect, watermark=watermark) as s:
            return ask(s.base_url, prompts, samples=samples, **sampling)
    with tempfile.TemporaryDirectory(prefix="stillhouse-radioactivity-") as tmp:
        file = Path(tmp) / "prompts.jsonl"
        file.write_text("".join(json.dumps({"id": f"q{i}", "messages": m}) + "\n" for i, m in enumerate(prompts)))
        collect(
            file,
            base_url=suspect,
            model=served_model(suspect),
            out=Path(tmp) / "run",
            purpose="evaluation",
            api_key_env="OPENAI_API_KEY" if os.environ.get("OPENAI_API_KEY") else None,
            samples=samples,
            concurrency=32,
            **sampling,
        )
        with RunStore(Path(tmp) / "run", create=False) as store:
            return [(e.messages, t) for e in store.exchanges("ok") for t in e.texts()]


@dataclass(frozen=True)
class Control:
    """Our teacher's answers to the chats' prompts under fresh keys (text no suspect was trained on), beside our
    watermarked chats cut into the same shares, so that each side is scored share by share. A full control has
    one share: every key answered every prompt."""

    marked: list[list[Chat]]
    parts: list[tuple[WatermarkKey, list[Chat]]]


def control_chats(
    teacher: str | Path, chats: Sequence[Chat], like: WatermarkKey, keys: int = 10, *, full: bool = False
) -> Control:
    """Serve `teacher` under `keys` fresh keys (`like`'s gamma, delta, context), each answering every keys-th
    prompt (or, `full`, every prompt) with the sampling our server was asked with, so the control is exchangeable
    with the chats."""
    if keys < 2:
        raise StillhouseError("a control needs at least 2 fresh keys (each is tested against the others)")
    if not (Path(teacher) / "config.json").is_file():
        raise StillhouseError(f"the control serves our teacher under fresh keys: {teacher} is not a model directory")
    asked = [c for c in chats if c.answer]
    settings = {json.dumps(c.sampling, sort_keys=True) for c in asked}
    if not asked or any(not c.sampling for c in asked) or len(settings) != 1:
        raise StillhouseError(
            "a control repeats the sampling our server was asked with: pass the collect run directory "
            "(its requests record it), with one sampling setting throughout"
        )
    sampling = dict(asked[0].sampling or {})
    marked = [asked] if full else [asked[j::keys] for j in range(keys)]
    parts = []
    for j in range(keys):
        share = marked[0 if full else j]
        fresh = WatermarkKey.random(like.gamma, like.delta, like.context)
        answered = ask(str(teacher), [c.prompt for c in share], watermark=fresh, **sampling)
        parts.append((fresh, [Chat(m, a) for m, a in answered]))
    return Control(marked, parts)


def key_spread_test(green: int, n: int, control: Sequence[tuple[int, int]]) -> tuple[float, float]:
    """(t, one-sided p) that a key's green rate green/n lies above the control keys' rates, (green, n) per key.

    Keys differ by more than sampling noise (each steers its own text; with a small vocabulary a few frequent
    pairs weigh a lot), and pairs sharing a window are not independent, so neither a pooled two-proportion test
    nor a binomial variance holds its level. The key is tested as one more draw from the control keys (a
    prediction t-test, len(control) - 1 degrees of freedom), which uses only the keys' observed spread. Against a
    shared control it is conservative (the key's rate over all shares is less noisy than a control key's over one);
    against a full control every key is scored on the same prompts, as the t assumes.
    """
    rates = [g / m for g, m in control if m]
    k = len(rates)
    if n == 0 or k < 2:
        return 0.0, 1.0
    mean = sum(rates) / k
    sd = (sum((r - mean) ** 2 for r in rates) / (k - 1)) ** 0.5
    if sd == 0:
        return 0.0, 1.0
    t = (green / n - mean) / (sd * (1 + 1 / k) ** 0.5)
    return t, min(max(float(stats.t.sf(t, k - 1)), 0.0), 1.0)


def against_control(
    key: WatermarkKey, model: torch.nn.Module, tok: PreTrainedTokenizerBase, control: Control, dedup: Dedup
) -> dict[str, Any]:
    """The true key's green rate against the control keys', and each control key against the other keys.

    Both sides are deduplicated share by share: pooling the true key's pairs over all chats while each control
    key dedups over its own share favours the true key (measured: 22.6 % pooled, 21.0 % share by share, control
    19.4 %, on a key no suspect saw). Predictions of the text's own token count on both sides (see the module)."""

    def counts(k: WatermarkKey, chats: Sequence[Chat]) -> tuple[int, int]:
        s = score_pairs(k, open_pairs(model, tok, chats, k.context, dedup=dedup, keep_copies=True).pairs, dedup=False)
        return s.green, s.scored

    ours = [counts(key, share) for share in control.marked]
    theirs = [counts(fresh, chats) for fresh, chats in control.parts]
    green, n = sum(g for g, _ in ours), sum(m for _, m in ours)
    green0, n0 = sum(g for g, _ in theirs), sum(m for _, m in theirs)
    t, p = key_spread_test(green, n, theirs)
    left_out = [key_spread_test(g, m, theirs[:j] + theirs[j + 1 :])[1] for j, (g, m) in enumerate(theirs)]
    return {
        "keys": len(theirs),
        "chats": sum(len(c) for _, c in control.parts),
        "true_green": green,
        "true_scored": n,
        "true_green_rate": round(green / n, 6) if n else 0.0,
        "green": green0,
        "scored": n0,
        "green_rate": round(green0 / n0, 6) if n0 else 0.0,
        "key_rates": [round(g / m, 6) if m else 0.0 for g, m in theirs],
        "shape": "full" if len(control.marked) == 1 else "shared",
        "test": f"prediction t ({len(theirs) - 1} df), one-sided: the true key's green rate above the control "
        "keys', both deduplicated share by share, predictions of the text's token counted",
        "t": t,
        "p_value": p,
        "leave_one_out_p": [round(q, 6) for q in left_out],
    }


def _load_suspect(path: Path, tok: PreTrainedTokenizerBase) -> torch.nn.Module:
    from stillhouse.forensics.detect import load_tokenizer

    if not (path / "config.json").exists():
        raise StillhouseError(
            f"open mode needs the suspect's weights: {path} is not a model directory (no config.json)"
        )
    if not same_vocabulary(load_tokenizer(path), tok):
        raise StillhouseError(f"{path} uses another vocabulary than the watermark's tokenizer; use --mode closed")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    except Exception as e:  # transformers raises many types for a broken directory
        raise StillhouseError(f"cannot load the suspect model in {path}: {str(e).splitlines()[0]}") from e
    return model.to("cuda") if torch.cuda.is_available() else model


def radioactivity(
    suspect: str,
    key: WatermarkKey,
    chats: Sequence[Chat],
    tokenizer: PreTrainedTokenizerBase,
    *,
    mode: Mode = "open",
    dedup: Dedup = "pair",
    null_keys: int = 100,
    max_tokens: int = 160,
    temperature: float = 1.0,
    samples: int = 1,
    control: Control | None = None,
) -> dict[str, Any]:
    """The test's result as a dict: statistic, p-value, the null over `null_keys` random keys, and the filters.

    With a `control` (open mode only) the verdict's p-value is the test against the control; the binomial
    against gamma stays in `statistic`.
    """
    if mode not in ("open", "closed"):
        raise StillhouseError(f"unknown mode '{mode}'; use open (weights) or closed (an API)")
    if null_keys < 100:
        raise StillhouseError("the null needs at least 100 random keys to say anything about calibration")
    if not chats:
        raise StillhouseError("no chats to test with; pass our watermarked run (or its export) with answers")
    if control is not None and mode != "open":
        raise StillhouseError("a control corrects open mode's bias; closed mode needs none (leave out --teacher)")
    if control is not None and sorted(c.answer or "" for s in control.marked for c in s) != sorted(
        c.answer for c in chats if c.answer
    ):
        raise StillhouseError("the control was built from other chats; build it from the chats you test with")
    model = None
    if mode == "open":
        if suspect.startswith(("http://", "https://")):
            raise StillhouseError("open mode reads the suspect's weights; for an API use --mode closed")
        model = _load_suspect(Path(suspect), tokenizer)
        scored = open_pairs(model, tokenizer, chats, key.context, dedup=dedup)
        name = suspect
    else:
        asked = ask(suspect, [c.prompt for c in chats], samples=samples, temperature=temperature, max_tokens=max_tokens)
        prompts = [template_ids(tokenizer, m, add_generation_prompt=True) for m, _ in asked]
        answer_ids = [tokenizer(a, add_special_tokens=False)["input_ids"] for _, a in asked]
        scored = closed_pairs(prompts, answer_ids, key.context)
        name = suspect
    score = score_pairs(key, scored.pairs, dedup=False)
    null = null_distribution(key, scored.pairs, n=null_keys)
    summary = f"{score.green}/{score.scored} green (gamma {key.gamma}), z {score.z:.2f}, p {p_text(score.p_value)}"
    verdict = {
        "mode": mode,
        "dedup": dedup if mode == "open" else "pair",
        "suspect": name,
        "statistic": score.to_json(),
        "p_value": score.p_value,
        "filters": scored.filtered,
        "null": null.summary() | {"p_values": [round(p, 6) for p in null.p_values]},
        "summary": summary,
    }
    if control is not None and model is not None:
        c = against_control(key, model, tokenizer, control, dedup)
        rate = f"{c['true_green_rate']:.1%} green vs {c['green_rate']:.1%} under {c['keys']} fresh keys (control)"
        verdict |= {
            "control": c,
            "p_value": c["p_value"],
            "summary": f"{rate}, t {c['t']:.2f}, p {p_text(c['p_value'])}",
        }
    return verdict
