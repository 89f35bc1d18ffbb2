"""`stillhouse watermark keygen|detect` and `stillhouse forensics radioactivity|identity|lineage`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from stillhouse.cli.app import app, console, out
from stillhouse.core.errors import StillhouseError

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
        f"z {score.z:.2f}, p {score.p_value:.3g}: {score.green} of {score.scored} distinct (context, token) pairs "
        f"green (expected {score.gamma:.0%}; {score.tokens} tokens scored) with key {wm.fingerprint}"
    )
