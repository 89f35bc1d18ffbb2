"""Bad input, as a careless user types it, for every command: one line on stderr naming what to fix, exit 2,
no traceback, and every input file's bytes unchanged. Parse-time failures need no model, so this runs in-process."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from pathlib import Path

import pytest
from chats import skill_chats, write_dataset
from curate_data import planted, write_run

from stillhouse import cli

URL = "http://127.0.0.1:9/v1"  # nothing listens on the discard port: a refused connection, at once


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    write_run(root / "run", planted())
    (root / "prompts.jsonl").write_text(json.dumps({"prompt": "Add 2 and 3."}) + "\n")
    (root / "empty.jsonl").write_text("")
    (root / "seeds.txt").write_text("Write a haiku about rain.\nName three rivers in Europe.\n")
    (root / "existing.jsonl").write_text('{"id": "mine", "prompt": "my own file"}\n')
    write_dataset(root / "ds", skill_chats(8))
    write_dataset(root / "ds-badjson", [{"messages": "not json {"}])
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("the user's own notes\n")
    (root / "zero.sqlite").write_bytes(b"")
    with sqlite3.connect(root / "notable.sqlite") as db:
        db.execute("CREATE TABLE other (x)")
    (root / "suite-hi.jsonl").write_text('{"messages": "hi", "answer": "x"}\n')
    (root / "suite-utf8.jsonl").write_bytes(b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}\n')
    (root / "suite-skill.jsonl").write_text('{"messages": [{"role": "user", "content": "q"}], "skill": 3}\n')
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every file's hash; SQLite's -wal/-shm side files are left out: opening a store read-only may create them."""
    files = (p for p in root.rglob("*") if p.is_file() and not p.name.endswith(("-wal", "-shm")))
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


R = "{root}"
CASES: list[tuple[str, list[str], str]] = [
    # collect: URLs, ranges, files; nothing may be created for a run that cannot start
    ("collect-no-scheme", ["collect", f"{R}/prompts.jsonl", "--base-url", "127.0.0.1:8000/v1", "--model", "m",
                           "--out", f"{R}/new-run", "--purpose", "distillation"], "add it"),
    ("collect-empty-url", ["collect", f"{R}/prompts.jsonl", "--base-url", "", "--model", "m", "--out",
                           f"{R}/new-run", "--purpose", "distillation"], "--base-url is empty"),
    ("collect-credentials", ["collect", f"{R}/prompts.jsonl", "--base-url", "http://u:pw@127.0.0.1:9/v1", "--model",
                             "m", "--out", f"{R}/new-run", "--purpose", "distillation"], "credentials"),
    ("collect-purpose", ["collect", f"{R}/prompts.jsonl", "--base-url", URL, "--model", "m", "--out", f"{R}/new-run",
                         "--purpose", "fun"], "--purpose"),
    *[
        (f"collect-{flag}-{value}", ["collect", f"{R}/prompts.jsonl", "--base-url", URL, "--model", "m", "--out",
                                     f"{R}/new-run", "--purpose", "distillation", f"--{flag}", value], f"--{flag}")
        for flag, value in [("rpm", "0"), ("tpm", "0"), ("timeout", "0"), ("max-retries", "-1"), ("concurrency", "0"),
                            ("temperature", "-5"), ("top-logprobs", "-3"), ("max-tokens", "0"), ("n", "0"),
                            ("samples", "0"), ("max-cost", "-1"), ("top-p", "0")]
    ],
    ("collect-empty-prompts", ["collect", f"{R}/empty.jsonl", "--base-url", URL, "--model", "m", "--out",
                               f"{R}/new-run", "--purpose", "distillation"], "no prompts"),
    ("collect-missing-prompts", ["collect", f"{R}/nope.jsonl", "--base-url", URL, "--model", "m", "--out",
                                 f"{R}/new-run", "--purpose", "distillation"], "nope.jsonl"),
    ("collect-bad-ledger", ["collect", f"{R}/prompts.jsonl", "--base-url", URL, "--model", "m", "--out",
                            f"{R}/new-run", "--purpose", "distillation", "--ledger", "/proc/x/l.sqlite"], "--ledger"),
    ("collect-unreachable", ["collect", f"{R}/prompts.jsonl", "--base-url", URL, "--model", "m", "--out",
                             f"{R}/new-run", "--purpose", "distillation"], "cannot reach"),
    ("collect-param", ["collect", f"{R}/prompts.jsonl", "--base-url", URL, "--model", "m", "--out", f"{R}/new-run",
                       "--purpose", "distillation", "--param", "oops"], "KEY=VALUE"),
    # export: never onto an input, never over a file without --overwrite
    ("export-onto-store", ["export", f"{R}/run", "-o", f"{R}/run/store.sqlite", "--overwrite"], "input"),
    ("export-existing", ["export", f"{R}/run", "-o", f"{R}/existing.jsonl"], "--overwrite"),
    ("export-format", ["export", f"{R}/run", "-o", f"{R}/out.xml", "--format", "xml"], "format"),
    ("export-to-dir", ["export", f"{R}/run", "-o", f"{R}/mine"], "directory"),
    ("export-not-a-run", ["export", f"{R}/mine", "-o", f"{R}/x.jsonl"], "not a run directory"),
    # ledger: reading never writes; an empty or foreign file is an error, not "intact"
    ("ledger-verify-empty", ["ledger", "verify", f"{R}/zero.sqlite"], "empty"),
    ("ledger-show-empty", ["ledger", "show", f"{R}/zero.sqlite"], "empty"),
    ("ledger-no-table", ["ledger", "verify", f"{R}/notable.sqlite"], "no ledger entries table"),
    ("ledger-missing", ["ledger", "show", f"{R}/nope.sqlite"], "no ledger"),
    ("ledger-export-onto-ledger", ["ledger", "export", f"{R}/run", "-o", f"{R}/run/ledger.sqlite", "--overwrite"],
     "input"),
    ("ledger-export-existing", ["ledger", "export", f"{R}/run", "-o", f"{R}/existing.jsonl"], "--overwrite"),
    ("ledger-export-dir", ["ledger", "export", f"{R}/run", "-o", f"{R}/mine"], "directory"),
    ("ledger-verify-artifact", ["ledger", "verify", f"{R}/run", "--artifact", f"{R}/mine"], "no ledger anchor"),
    # synth
    ("synth-existing", ["synth", f"{R}/seeds.txt", "-o", f"{R}/existing.jsonl", "--base-url", URL, "--model", "m"],
     "--overwrite"),
    ("synth-to-dir", ["synth", f"{R}/seeds.txt", "-o", f"{R}/mine", "--base-url", URL, "--model", "m"], "directory"),
    *[
        (f"synth-{flag}-{value}", ["synth", f"{R}/seeds.txt", "-o", f"{R}/new.jsonl", "--base-url", URL, "--model",
                                   "m", f"--{flag}", value], f"--{flag}")
        for flag, value in [("max-rouge", "0"), ("target", "0"), ("temperature", "-1"), ("per-request", "0"),
                            ("concurrency", "0"), ("max-tokens", "0")]
    ],
    ("synth-words", ["synth", f"{R}/seeds.txt", "-o", f"{R}/new.jsonl", "--base-url", URL, "--model", "m",
                     "--min-words", "9", "--max-words", "2"], "--min-words"),
    # curate
    ("curate-lengths", ["curate", f"{R}/run", "-o", f"{R}/new-ds", "--min-tokens", "100", "--max-tokens", "5"],
     "--min-tokens"),
    ("curate-threshold", ["curate", f"{R}/run", "-o", f"{R}/new-ds", "--threshold", "1.5"], "--threshold"),
    ("curate-filter", ["curate", f"{R}/run", "-o", f"{R}/new-ds", "--no-filter", "nonsense"], "--no-filter"),
    ("curate-format", ["curate", f"{R}/run", "-o", f"{R}/new-ds", "--format", "xml"], "--format"),
    ("curate-validation", ["curate", f"{R}/run", "-o", f"{R}/new-ds", "--validation", "1"], "--validation"),
    ("curate-missing-input", ["curate", f"{R}/nope", "-o", f"{R}/new-ds"], "does not exist"),
    ("curate-score-missing", ["curate", f"{R}/run", "-o", f"{R}/new-ds", "--keep", "best", "--score", "nope"],
     "--score nope"),
    ("curate-into-user-dir", ["curate", f"{R}/run", "-o", f"{R}/mine"], "not empty"),
    ("curate-unwritable", ["curate", f"{R}/run", "-o", "/proc/x/ds"], "/proc/x"),
    # train: ranges before any model is loaded; never among the user's files
    *[
        (f"train-{flag}-{value}", ["train", f"{R}/ds", "-o", f"{R}/new-model", f"--{flag}", value], f"--{flag}")
        for flag, value in [("batch-size", "0"), ("steps", "0"), ("steps", "-1"), ("epochs", "0"), ("lora-r", "0"),
                            ("lr", "-1"), ("bucket", "0"), ("save-every", "0"), ("kd-weight", "2"),
                            ("kd", "nonsense"), ("warmup", "1"), ("max-length", "0")]
    ],
    ("train-kd-weight-alone", ["train", f"{R}/ds", "-o", f"{R}/new-model", "--kd-weight", "0.3"], "--kd topk"),
    ("train-out-is-file", ["train", f"{R}/ds", "-o", f"{R}/existing.jsonl"], "is a file"),
    ("train-out-user-dir", ["train", f"{R}/ds", "-o", f"{R}/mine"], "not empty"),
    ("train-out-unwritable", ["train", f"{R}/ds", "-o", "/proc/x/model", "--ledger", "/proc/x/l"], "/proc"),
    ("train-not-a-dataset", ["train", f"{R}/mine", "-o", f"{R}/new-model"], "not a curated dataset"),
    ("train-bad-messages", ["train", f"{R}/ds-badjson", "-o", f"{R}/new-model"], "'messages'"),
    ("train-kd-without-logprobs", ["train", f"{R}/ds", "-o", f"{R}/new-model", "--kd", "topk"], "logprobs"),
    # eval
    ("eval-n", ["eval", "--compare", "a", "b", "--n", "0"], "--n"),
    ("eval-max-tokens", ["eval", "--compare", "a", "b", "--max-tokens", "0"], "--max-tokens"),
    ("eval-match", ["eval", "--compare", "a", "b", "--match", "fuzzy"], "--match"),
    ("eval-both-modes", ["eval", "--compare", "a", "b", "--student", "c"], "drop --student"),
    ("eval-no-models", ["eval"], "--student and --teacher"),
    ("eval-suite-hi", ["eval", "--compare", "a", "b", "--suite", f"{R}/suite-hi.jsonl"], "suite-hi.jsonl:1"),
    ("eval-suite-utf8", ["eval", "--compare", "a", "b", "--suite", f"{R}/suite-utf8.jsonl"], "UTF-8"),
    ("eval-suite-skill", ["eval", "--compare", "a", "b", "--suite", f"{R}/suite-skill.jsonl"], "'skill'"),
    ("eval-suite-missing", ["eval", "--compare", "a", "b", "--suite", f"{R}/nope.jsonl"], "not a file"),
    ("eval-model-missing", ["eval", "--compare", f"{R}/mine", "pebble", "--suite", f"{R}/seeds.txt"], "seeds.txt:1"),
    # serve and provenance
    ("serve-port-high", ["serve", "--port", "99999"], "--port"),
    ("serve-port-negative", ["serve", "--port", "-1"], "--port"),
    ("serve-threads", ["serve", "--threads", "0"], "--threads"),
    ("provenance-not-a-model", ["provenance", f"{R}/mine"], "not trained by stillhouse"),
    ("quickstart-student", ["quickstart", "-o", f"{R}/qs", "--student", "granite"], "neither a model directory"),
    ("unknown-command", ["distil"], "No such command"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "args", "says"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_harms_nothing(files, monkeypatch, capsys, name, args, says):
    before = snapshot(files)
    monkeypatch.setattr(sys, "argv", ["stillhouse", *(a.replace(R, str(files)) for a in args)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert says in err, err
    assert snapshot(files) == before  # no input changed, nothing new written among them
