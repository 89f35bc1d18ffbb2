"""Lineage: is a suspect's behaviour closer to a candidate parent than to unrelated reference models?

Model provenance testing (NeurIPS 2025) in our own words. Every model answers the same probe prompts. Per
probe, the candidate is "closer" to the suspect than a reference when its answer is more similar to the
suspect's (output lineage) or, where weights are at hand, when its next-token distributions along the
suspect's answer are nearer in total variation (distribution lineage). Under the null, the candidate is one
more unrelated model, as likely as the reference to be the closer one on each probe: a one-sided sign test per
reference, the largest p over references (the candidate must beat every one), Bonferroni-corrected for the
number of candidates. Weight lineage (fine-tuned from the candidate's weights) is the same sign test over
weight matrices, comparing cosine similarity to the suspect's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from scipy import stats
from transformers import AutoModelForCausalLM, AutoTokenizer

from stillhouse.core.errors import StillhouseError
from stillhouse.evaluate import normalise, responder
from stillhouse.forensics.radioactivity import template_ids

Messages = list[dict[str, Any]]

_ANSWERS: dict[str, list[str]] = {}


def _answers(model: str, probes: Sequence[Messages], max_tokens: int) -> list[str]:
    """A model's greedy answers to the probes. A local model's are kept for the process, keyed by its files' sizes
    and times: a forensics run asks the same parents and references once per suspect (the quickstart: twice)."""
    if model.startswith(("http://", "https://")):  # an endpoint may change behind the same address
        return responder(model, max_tokens=max_tokens).respond(list(probes))
    stats = sorted((f.name, f.stat()) for f in Path(model).iterdir() if f.is_file())
    stamp = [(name, st.st_size, st.st_mtime_ns) for name, st in stats]
    key = json.dumps([str(Path(model).resolve()), stamp, max_tokens, list(probes)], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()
    if digest not in _ANSWERS:
        _ANSWERS[digest] = responder(model, max_tokens=max_tokens).respond(list(probes))
    return _ANSWERS[digest]


def sign_test(closer: Sequence[float], farther: Sequence[float]) -> tuple[float, int, int]:
    """One-sided: is `closer[i] > farther[i]` more often than chance? Ties are dropped. (p, wins, losses)."""
    wins = sum(a > b for a, b in zip(closer, farther, strict=True))
    losses = sum(a < b for a, b in zip(closer, farther, strict=True))
    p = float(stats.binom.sf(wins - 1, wins + losses, 0.5)) if wins + losses else 1.0
    return p, wins, losses


def beats_every_reference(suspect_to: Callable[[str], list[float]], candidate: str, references: Sequence[str]):
    """The sign test of the candidate against each reference; the verdict takes the largest p."""
    mine = suspect_to(candidate)
    tests = {r: sign_test(mine, suspect_to(r)) for r in references}
    worst = max(tests, key=lambda r: tests[r][0])
    return {
        "p": tests[worst][0],
        "closest_reference": worst,
        "per_reference": {r: {"p": p, "wins": w, "losses": lo} for r, (p, w, lo) in tests.items()},
        "mean": sum(mine) / len(mine) if mine else 0.0,
    }


def _weights(path: Path) -> dict[str, torch.Tensor] | None:
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files:
        return None
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors |= load_file(f)
    return tensors


def _same_shapes(a: dict[str, torch.Tensor] | None, b: dict[str, torch.Tensor], names: list[str]) -> bool:
    return a is not None and all(n in a and a[n].shape == b[n].shape for n in names)


def _cosines(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], names: list[str]) -> list[float]:
    return [
        float(torch.nn.functional.cosine_similarity(a[n].flatten().float(), b[n].flatten().float(), 0)) for n in names
    ]


class _Distributions:
    """Next-token distributions of local models along the suspect's answers (teacher-forced), cached per model."""

    def __init__(self, probes: Sequence[Messages], suspect_answers: Sequence[str], tokenizer_dir: Path):
        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.vocab = tok.get_vocab()
        self.rows = []
        for messages, answer in zip(probes, suspect_answers, strict=True):
            start = len(template_ids(tok, messages, add_generation_prompt=True))
            self.rows.append((template_ids(tok, [*messages, {"role": "assistant", "content": answer}]), start))
        self.cache: dict[str, list[torch.Tensor]] = {}

    def of(self, model_dir: Path) -> list[torch.Tensor] | None:
        key = str(model_dir)
        if key not in self.cache:
            if AutoTokenizer.from_pretrained(model_dir).get_vocab() != self.vocab:
                return None
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
            with torch.inference_mode():
                self.cache[key] = [
                    model(input_ids=torch.tensor([ids])).logits[0, start - 1 : -1].softmax(-1)
                    for ids, start in self.rows
                ]
        return self.cache[key]


def lineage(
    suspect: str,
    candidates: Sequence[str],
    references: Sequence[str],
    probes: Sequence[Messages],
    *,
    alpha: float = 0.01,
    max_tokens: int = 96,
) -> dict[str, Any]:
    """Per candidate: output, distribution and weight lineage p-values (Bonferroni over candidates) and verdicts."""
    if not candidates:
        raise StillhouseError("name at least one candidate parent (--candidates)")
    if len(references) < 2:
        raise StillhouseError("the null needs at least two unrelated reference models (--references)")
    if not probes:
        raise StillhouseError("no probe prompts")
    models = list(dict.fromkeys([suspect, *candidates, *references]))
    answers = {m: _answers(m, probes, max_tokens) for m in models}
    mine = [normalise(a) for a in answers[suspect]]

    def similarity(other: str) -> list[float]:
        return [SequenceMatcher(None, a, normalise(b)).ratio() for a, b in zip(mine, answers[other], strict=True)]

    local = {m: Path(m) for m in models if (Path(m) / "config.json").exists()}
    dists = _Distributions(probes, answers[suspect], local[suspect]) if suspect in local else None

    def closeness(other: str) -> list[float] | None:  # 1 - total variation, per probe (higher is closer)
        if dists is None or other not in local:
            return None
        a, b = dists.of(local[suspect]), dists.of(local[other])
        if a is None or b is None:
            return None
        return [1 - 0.5 * float((x - y).abs().sum(-1).mean()) if len(x) else 1.0 for x, y in zip(a, b, strict=True)]

    weights = {m: _weights(p) for m, p in local.items()}
    k = len(candidates)
    results = []
    for c in candidates:
        output = beats_every_reference(similarity, c, references)
        output["exact_agreement"] = sum(a == normalise(b) for a, b in zip(mine, answers[c], strict=True)) / len(mine)
        entry: dict[str, Any] = {"candidate": c, "output": output, "distribution": None, "weights": None}
        refs = [r for r in references if closeness(r) is not None]
        if closeness(c) is not None and len(refs) >= 2:
            entry["distribution"] = beats_every_reference(closeness, c, refs)  # type: ignore[arg-type]
        ws, wc = weights.get(suspect), weights.get(c)
        if ws is not None and wc is not None:
            # matrices only: norm gains start at one in every model, so their likeness says nothing of descent
            names = sorted(n for n in ws if n in wc and ws[n].shape == wc[n].shape and ws[n].ndim >= 2)
            wrefs = [r for r in references if _same_shapes(weights.get(r), ws, names)]
            if names and len(wrefs) >= 2:

                def cosines(m: str, ws: dict[str, torch.Tensor] = ws, names: list[str] = names) -> list[float]:
                    other = weights[m]
                    assert other is not None  # wrefs holds only models whose weights match
                    return _cosines(ws, other, names)

                entry["weights"] = beats_every_reference(cosines, c, wrefs)
        for part in ("output", "distribution", "weights"):
            if entry[part] is not None:
                entry[part]["p_corrected"] = min(1.0, entry[part]["p"] * k)
                entry[part]["attributed"] = entry[part]["p_corrected"] < alpha
        results.append(entry)
    parts = ("output", "distribution", "weights")
    named = []
    for r in results:
        how = [p for p in parts if (r[p] or {}).get("attributed")]
        if how:
            named.append(f"{r['candidate']} ({', '.join(how)})")
    ps = [r[p]["p_corrected"] for r in results for p in ("output", "distribution", "weights") if r[p] is not None]
    return {
        "suspect": suspect,
        "candidates": results,
        "references": list(references),
        "probes": len(probes),
        "alpha": alpha,
        "reference_agreement": {
            r: sum(a == normalise(b) for a, b in zip(mine, answers[r], strict=True)) / len(mine) for r in references
        },
        "p_value": min(ps) if ps else None,
        "summary": ("attributed to " + "; ".join(named)) if named else "attributed to no candidate",
    }
