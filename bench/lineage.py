"""Lineage on the embedded default: who is attributed to whom, and at what p.

A student distilled from Ember into Pebble (by default `quickstart --fast` into a temporary directory; or pass
--student, say a full quickstart run's student), Pebble before distillation, and the shipped reference models
Flint and Slate are each traced with `stillhouse.forensics.lineage` on the same probe set. A reference as the
suspect is tested against the other reference and the model that is not the candidate, since the null needs
two unrelated models. Each row prints the corrected p per kind of lineage (output, next-token distribution,
weights), what was attributed at alpha 0.01, and what issue 16 expects:

    the distilled student    -> Ember (outputs) and Pebble (weights)
    Pebble before            -> nothing
    Flint, Slate             -> nothing

    python bench/lineage.py
    python bench/lineage.py --student RUN/student --probes 240
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from stillhouse.embedded import reference_paths, student_path, teacher_path
from stillhouse.embedded.quickstart import QuickstartConfig, quickstart
from stillhouse.embedded.suite import lineage_probes
from stillhouse.forensics.lineage import lineage

KINDS = ("output", "distribution", "weights")


def attributed(verdict: dict) -> dict[str, list[str]]:
    """{candidate name: [kinds of lineage attributed]} for the candidates that were attributed anything."""
    out = {}
    for c in verdict["candidates"]:
        how = [k for k in KINDS if (c[k] or {}).get("attributed")]
        if how:
            out[Path(c["candidate"]).name] = how
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", type=Path, default=None, help="a distilled student (default: quickstart --fast)")
    ap.add_argument("--probes", type=int, default=120)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()

    ember, pebble = teacher_path(), student_path()
    flint, slate = reference_paths()
    with tempfile.TemporaryDirectory() as tmp:
        student = args.student
        if student is None:
            t0 = time.perf_counter()
            run = quickstart(Path(tmp) / "qs", QuickstartConfig.fast())
            student = Path(tmp) / "qs" / "student"
            before, after = run["baseline"]["student"]["agreement"], run["student"]["agreement"]
            print(f"quickstart --fast: {time.perf_counter() - t0:.0f} s, agreement {before:.0%} -> {after:.0%}")
        probes = lineage_probes(args.probes)
        # (name, suspect, candidates, references, expected attribution)
        cases = [
            ("distilled student", student, [ember, pebble], [flint, slate], {"ember": "output", "pebble": "weights"}),
            ("Pebble before", pebble, [ember], [flint, slate], {}),
            ("Flint", flint, [ember], [slate, pebble], {}),
            ("Flint", flint, [pebble], [slate, ember], {}),
            ("Slate", slate, [ember], [flint, pebble], {}),
            ("Slate", slate, [pebble], [flint, ember], {}),
        ]
        print(f"{len(probes)} probes; p corrected for the candidates (Bonferroni); attributed at p < 0.01\n")
        print(f"{'suspect':<18} {'candidate':<8} {'references':<14} {'output':>8} {'distrib':>8} {'weights':>8}  "
              f"attributed                 expected   holds")  # fmt: skip
        held = 0
        for name, suspect, candidates, references, expected in cases:
            t0 = time.perf_counter()
            verdict = lineage(str(suspect), [str(c) for c in candidates], [str(r) for r in references], probes)
            got = attributed(verdict)
            holds = all(expected.get(c, None) in got.get(c, []) for c in expected) and set(got) == set(expected)
            held += holds
            for c in verdict["candidates"]:
                ps = [f"{c[k]['p_corrected']:.1e}" if c[k] else "-" for k in KINDS]
                cname = Path(c["candidate"]).name
                refs = ",".join(r.name for r in references)
                shown = ", ".join(got.get(cname, [])) or "none"
                want = expected.get(cname, "none")
                print(f"{name:<18} {cname:<8} {refs:<14} {ps[0]:>8} {ps[1]:>8} {ps[2]:>8}  {shown:<26} "
                      f"{want:<10} {'yes' if holds else 'NO'}")  # fmt: skip
            agree = ", ".join(f"{Path(r).name} {a:.0%}" for r, a in verdict["reference_agreement"].items())
            means = ", ".join(
                f"{Path(c['candidate']).name} {c['output']['exact_agreement']:.0%}" for c in verdict["candidates"]
            )
            print(f"{'':<18} exact agreement with the suspect: {means}; references {agree} "
                  f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
        print(f"\n{held} of {len(cases)} verdicts as expected")


if __name__ == "__main__":
    main()
