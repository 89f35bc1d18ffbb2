"""`stillhouse watermark keygen|detect` and `stillhouse forensics radioactivity|identity|lineage`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from stillhouse.cli.app import app, console, out
from stillhouse.core.errors import StillhouseError
from stillhouse.forensics.green import p_text

watermark_app = typer.Typer(no_args_is_help=True, help="Watermark keys and watermark detection.")
app.add_typer(watermark_app, name="watermark")

KeyPath = Annotated[Path, typer.Option("--key", help="Watermark key file (`stillhouse watermark keygen`).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _default_tokenizer() -> Path:
    from stillhouse.embedded import teacher_path

    return teacher_path()


def _print_json(result: dict) -> None:
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


@watermark_app.command("keygen")
def keygen(
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the secret key file.")],
    gamma: Annotated[float, typer.Option(help="Share of the vocabulary that is green after each context.")] = 0.25,
    delta: Annotated[float, typer.Option(help="Added to green tokens' logits when serving.")] = 2.0,
    context: Annotated[int, typer.Option(help="Tokens of context that seed each green list.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing key file.")] = False,
) -> None:
    """Make a secret watermark key; only its fingerprint is ever printed or recorded."""
    from stillhouse.forensics.key import keygen as make_key

    key = make_key(output, gamma=gamma, delta=delta, context=context, overwrite=overwrite)
    out.print(
        f"wrote {output} (key {key.fingerprint}, gamma {gamma}, delta {delta}, context {context}); keep it secret"
    )


@watermark_app.command("detect")
def detect(
    file: Annotated[str, typer.Argument(help="Text file to test, or - for stdin.")],
    key: KeyPath,
    tokenizer: Annotated[
        Path | None, typer.Option(help="Tokenizer (model) directory of the served model (default: Ember).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Is this text watermarked with KEY? z-score and exact one-sided binomial p-value over distinct pairs."""
    from stillhouse.forensics.detect import detect_texts, load_tokenizer
    from stillhouse.forensics.key import load_key

    wm = load_key(key)
    if file == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(file).read_text()
        except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError) as e:
            why = type(e).__name__
            raise StillhouseError(f"cannot read {file} as text ({why}); pass a UTF-8 text file or -") from None
    tok = load_tokenizer(tokenizer or _default_tokenizer())
    score = detect_texts(wm, [text], tok)
    result = {"key": wm.public(), **score.to_json(), "watermarked_at_1e-4": score.p_value < 1e-4}
    if as_json:
        _print_json(result)
        return
    if score.scored < 50:
        console.print(f"only {score.scored} distinct pairs to score: a short or repetitive text has little power")
    out.print(
        f"z {score.z:.2f}, p {p_text(score.p_value)}: {score.green} of {score.scored} distinct (context, token) pairs "
        f"green (expected {score.gamma:.0%}; {score.tokens} tokens scored) with key {wm.fingerprint}"
    )


forensics_app = typer.Typer(
    no_args_is_help=True, help="Was a suspect model trained on our outputs, or derived from ours?"
)
app.add_typer(forensics_app, name="forensics")

Suspect = Annotated[str, typer.Argument(help="Suspect: a model directory or an OpenAI-compatible URL.")]
Ledger = Annotated[Path | None, typer.Option(help="Ledger to record the verdict in (a run's ledger.sqlite).")]
Evidence = Annotated[Path | None, typer.Option(help="Write the verdict as a JSON evidence file here.")]
Overwrite = Annotated[bool, typer.Option(help="Replace an existing evidence file.")]


@forensics_app.command("radioactivity")
def radioactivity(
    suspect: Suspect,
    key: KeyPath,
    texts: Annotated[
        Path, typer.Option(help="Our watermarked chats: the collect run directory of our server, or its JSONL export.")
    ],
    mode: Annotated[str, typer.Option(help="open: read the suspect's weights; closed: prompt its API.")] = "open",
    tokenizer: Annotated[
        Path | None, typer.Option(help="Tokenizer directory of our served model (default: Ember).")
    ] = None,
    null_keys: Annotated[int, typer.Option(help="Random keys for the null distribution (>= 100).")] = 100,
    teacher: Annotated[
        Path | None,
        typer.Option(
            help="Open mode: our served model's directory, to answer the prompts again under fresh keys as a "
            "control (needed when the suspect may share our model's base; TEXTS must then be the run directory)."
        ),
    ] = None,
    control_keys: Annotated[
        int, typer.Option(help="Fresh keys for the control (each answers a share; all with --full-control).")
    ] = 10,
    full_control: Annotated[
        bool,
        typer.Option(
            help="Every control key answers every chat (--control-keys times the answers): a sharper test, for "
            "the chats one suspect was served (its account's logs)."
        ),
    ] = False,
    limit: Annotated[int | None, typer.Option(help="Use at most this many chats.")] = None,
    ledger: Ledger = None,
    evidence: Evidence = None,
    overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Was SUSPECT trained on text our watermarked server wrote? p-value, with the null over random keys.

    With --teacher (open mode), the p-value tests the suspect's green rate against a control: our model's
    answers to the same prompts under fresh keys. Without it a suspect that shares our model's base can look
    cleaner than it is.
    """
    if mode not in ("open", "closed"):
        raise StillhouseError(f"--mode must be open or closed, not {mode!r}")
    if null_keys < 100:
        raise StillhouseError("--null-keys must be at least 100")
    if teacher is not None and mode != "open":
        raise StillhouseError("--teacher builds open mode's control; closed mode needs none (leave it out)")
    if full_control and teacher is None:
        raise StillhouseError("--full-control shapes the control that --teacher builds; pass --teacher too")
    if control_keys < 2:
        raise StillhouseError("--control-keys must be at least 2 (each key is tested against the others)")
    # the checks above come first: these imports take seconds
    from stillhouse.forensics.chats import load_chats
    from stillhouse.forensics.detect import load_tokenizer
    from stillhouse.forensics.evidence import check_evidence, record_verdict
    from stillhouse.forensics.key import load_key
    from stillhouse.forensics.radioactivity import control_chats
    from stillhouse.forensics.radioactivity import radioactivity as test

    check_evidence(evidence, overwrite)
    wm = load_key(key)
    chats, digest = load_chats(texts)
    chats = chats[:limit] if limit else chats
    tok = load_tokenizer(tokenizer or teacher or _default_tokenizer())
    inputs = {"texts": str(texts), "sha256": digest, "chats": len(chats)}
    start = {"mode": mode, "suspect": suspect, "key": wm.public(), "inputs": inputs}
    control = None
    if teacher is not None:
        control = control_chats(teacher, chats, wm, keys=control_keys, full=full_control)
        start["control"] = {"teacher": str(teacher), "keys": control_keys, "full": full_control}
    verdict = record_verdict(
        "radioactivity",
        start,
        lambda: test(suspect, wm, chats, tok, mode=mode, null_keys=null_keys, control=control),  # type: ignore[arg-type]
        ledger=ledger,
        evidence=evidence,
        overwrite=overwrite,
    )
    if as_json:
        _print_json(verdict)
        return
    null = verdict["null"]
    out.print(f"radioactivity ({mode}) of {suspect}: {verdict['summary']}")
    if control is not None:
        s = verdict["statistic"]
        out.print(
            f"against gamma alone (biased if the suspect shares our base): z {s['z']:.2f}, p {p_text(s['p_value'])}; "
            f"control: {verdict['control']['green']} of {verdict['control']['scored']} pairs green, key rates "
            f"{min(verdict['control']['key_rates']):.1%} to {max(verdict['control']['key_rates']):.1%}"
        )
    out.print(
        f"null over {null['keys']} random keys: median p {null['median_p']:.3f}, "
        f"FPR@1% {null['fpr_at_0.01']:.1%}, KS-uniform p {null['ks_uniform_p']:.3f}"
    )


def _parse_identities(specs: list[str]) -> dict[str, tuple[str, ...]]:
    out = {}
    for spec in specs:
        name, _, aliases = spec.partition("=")
        if not name.strip():
            raise StillhouseError(f"--identity {spec!r}: write NAME or NAME=ALIAS,ALIAS (e.g. Ember=Northwind Labs)")
        out[name.strip()] = tuple(a.strip() for a in aliases.split(",") if a.strip())
    return out


@forensics_app.command("identity")
def identity(
    suspect: Suspect,
    identity_: Annotated[
        list[str] | None,
        typer.Option("--identity", help="Known identity NAME=ALIAS,... (repeatable; default: the embedded ones)."),
    ] = None,
    ledger: Ledger = None,
    evidence: Evidence = None,
    overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Ask SUSPECT who it is and who made it in many phrasings; count which known identities it names."""
    from stillhouse.embedded import identities
    from stillhouse.forensics.evidence import check_evidence, record_verdict
    from stillhouse.forensics.identity import identity as battery

    known = _parse_identities(identity_) if identity_ else identities()
    check_evidence(evidence, overwrite)
    verdict = record_verdict(
        "identity",
        {"suspect": suspect, "identities": sorted(known)},
        lambda: battery(suspect, known),
        ledger=ledger,
        evidence=evidence,
        overwrite=overwrite,
    )
    if as_json:
        _print_json(verdict)
        return
    out.print(f"identity of {suspect}: {verdict['summary']}")
    for who, n in verdict["counts"].items():
        out.print(f"  {who:<16} {n:>3} of {verdict['questions']}")


def _specs(values: list[str]) -> list[str]:
    """Model specs from repeated or comma-separated options, the shipped names resolved to their directories."""
    from stillhouse.embedded import shipped_model

    return [shipped_model(s.strip()) for v in values for s in v.split(",") if s.strip()]


@forensics_app.command("lineage")
def lineage(
    suspect: Suspect,
    candidates: Annotated[
        list[str], typer.Option(help="Candidate parents: dirs, URLs, or a shipped name (repeat or A,B).")
    ],
    references: Annotated[
        list[str], typer.Option(help="Unrelated reference models for the null (>= 2; flint,slate are shipped).")
    ],
    probes: Annotated[
        Path | None, typer.Option(help="Probe prompts (JSONL with 'messages'; default: micro-world held-out).")
    ] = None,
    n_probes: Annotated[int, typer.Option(help="Probe prompts to use.")] = 120,
    alpha: Annotated[float, typer.Option(help="Level for an attribution, after correction.")] = 0.01,
    ledger: Ledger = None,
    evidence: Evidence = None,
    overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Is SUSPECT closer to a candidate than unrelated reference models are? Output, distribution, weights."""
    from stillhouse.forensics.chats import load_chats
    from stillhouse.forensics.evidence import check_evidence, record_verdict
    from stillhouse.forensics.lineage import lineage as test

    cands, refs, suspect = _specs(candidates), _specs(references), _specs([suspect])[0]
    if len(refs) < 2:
        raise StillhouseError("--references needs at least two unrelated models for the null")
    check_evidence(evidence, overwrite)
    if probes is not None:
        chats, digest = load_chats(probes)
        prompts = [c.prompt for c in chats][:n_probes]
    else:
        from stillhouse.embedded.suite import PROBE_SEED, lineage_probes

        prompts = lineage_probes(n_probes)
        digest = f"micro-world heldout seed {PROBE_SEED}"
    start = {"suspect": suspect, "candidates": cands, "references": refs, "probes": {"n": len(prompts), "id": digest}}
    verdict = record_verdict(
        "lineage",
        start,
        lambda: test(suspect, cands, refs, prompts, alpha=alpha),
        ledger=ledger,
        evidence=evidence,
        overwrite=overwrite,
    )
    if as_json:
        _print_json(verdict)
        return
    out.print(f"lineage of {suspect}: {verdict['summary']}")
    for c in verdict["candidates"]:
        parts = [
            f"{part} p {p_text(c[part]['p_corrected'])}" + (" *" if c[part]["attributed"] else "")
            for part in ("output", "distribution", "weights")
            if c[part] is not None
        ]
        out.print(f"  {c['candidate']}: " + ", ".join(parts))
