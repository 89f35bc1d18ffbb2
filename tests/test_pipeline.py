"""The distil half as a user runs it: every stage through the CLI, each on the previous stage's real output.

serve (Ember) -> collect --top-logprobs 5 -> curate (Parquet, then JSONL) -> train --kd topk -> eval against the
served teacher -> provenance, which must name the teacher, terms and purpose given to collect and the exact
counts curate dropped; then the ledger's tail is cut and provenance and verify must say so.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from stillhouse.core.dataset import load_dataset, read_card
from stillhouse.embedded import world

CLI = [sys.executable, "-m", "stillhouse.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(*args: object, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr[-2000:]
    return p


@pytest.fixture(scope="module")
def teacher_url():
    """`stillhouse serve` (the embedded teacher) in its own process, on a free loopback port."""
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", "0", "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    line = proc.stdout.readline()
    found = re.search(r"at (http://\S+)", line)
    assert found, line + proc.stderr.read()
    yield found.group(1)
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, teacher_url):
    root = tmp_path_factory.mktemp("chain")
    prompts = root / "prompts.jsonl"
    records = world.make_prompts(48, split="train", seed=5)
    prompts.write_text("".join(json.dumps({"id": r["id"], "messages": r["messages"]}) + "\n" for r in records))
    heldout = root / "heldout.jsonl"
    heldout.write_text("".join(json.dumps({"messages": r["messages"]}) + "\n" for r in records[:6]))
    run("collect", prompts, "--base-url", teacher_url, "--model", "ember", "--out", root / "run",
        "--purpose", "distillation", "--terms", "own", "--top-logprobs", "5", "--max-tokens", "96",
        "--temperature", "0.7", "--seed", "1", "--concurrency", "16")  # fmt: skip
    run("curate", root / "run", "-o", root / "ds", "--eval", f"heldout={heldout}")
    run("curate", root / "run", "-o", root / "ds-jsonl", "--format", "jsonl", "--eval", f"heldout={heldout}")
    run("train", root / "ds", "-o", root / "student", "--student", "pebble", "--kd", "topk", "--steps", "3",
        "--batch-size", "8", "--save-every", "2")  # fmt: skip
    return root


def test_curate_keeps_the_teachers_logprobs_in_both_formats(chain):
    parquet, jsonl = load_dataset(chain / "ds"), load_dataset(chain / "ds-jsonl")
    assert parquet.has_logprobs and jsonl.has_logprobs
    assert len(parquet.train) == len(jsonl.train) > 0
    first = parquet.train[0]["logprobs"][0]
    assert len(first["top_logprobs"]) == 5 and isinstance(first["logprob"], float)
    card = read_card(chain / "ds")
    assert card["terms"] == ["own"] and card["purposes"] == ["distillation"]
    assert card["steps"]["decontamination"] == {"heldout": card["steps"]["decontamination"].get("heldout", 0)}


def test_hf_datasets_reads_what_curate_wrote(chain, tmp_path):
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset(str(chain / "ds"), cache_dir=str(tmp_path))  # a cache of its own: never stale
    assert loaded["train"].num_rows == len(load_dataset(chain / "ds").train)
    assert "logprobs" in loaded["train"].column_names


def test_train_on_jsonl_dataset_and_eval_against_the_served_teacher(chain, teacher_url):
    run("train", chain / "ds-jsonl", "-o", chain / "student-jsonl", "--student", "pebble", "--steps", "2",
        "--batch-size", "8")  # fmt: skip
    p = run("eval", "--student", chain / "student", "--teacher", teacher_url, "--suite", "micro", "--n", "2", "--json")
    result = json.loads(p.stdout)
    assert result["n"] == 2 * len(world.SKILLS) and 0 <= result["student"]["agreement"] <= 1
    assert result["teacher"]["model"].endswith("ember")


def test_provenance_names_teacher_terms_purpose_and_exact_drops(chain):
    p = json.loads(run("provenance", chain / "student", "--json").stdout)
    card = read_card(chain / "ds")
    assert p["teachers"] == ["ember"] and p["terms"] == ["own"] and p["purposes"] == ["distillation"]
    assert p["dataset"]["content_hash"] == card["content_hash"] == load_dataset(chain / "ds").hash
    assert p["dataset"]["dropped"] == card["steps"] and p["dataset"]["read"] == card["read"]
    (collected,) = p["collect_runs"]
    distinct = {json.dumps(r["messages"]) for r in world.make_prompts(48, split="train", seed=5)}
    assert collected["exchanges"] == len(distinct) and collected["failed"] == 0
    assert collected["purpose"] == "distillation" and collected["terms"] == "own"
    assert p["model"]["method"] == "topk" and p["chain"]["intact"], p["chain"]
    text = run("provenance", chain / "student").stdout
    assert "ember" in text and "own" in text and "chain intact" in text


def test_a_cut_ledger_tail_is_named_by_provenance_and_verify(chain, tmp_path):
    meta = json.loads((chain / "student" / "stillhouse.json").read_text())
    ledger = Path(meta["ledger"])
    backup = ledger.read_bytes()
    try:
        with sqlite3.connect(ledger) as db:  # the chain's tail, from the entry the model was made at, deleted
            db.execute("DELETE FROM entries WHERE seq >= ?", (meta["ledger_anchor"]["seq"],))
        assert run("ledger", "verify", ledger).returncode == 0  # the chain alone cannot see it...
        cut = run("ledger", "verify", ledger, "--artifact", chain / "student", ok=False)
        assert cut.returncode == 1 and "tail was deleted" in cut.stderr
        prov = run("provenance", chain / "student", ok=False)
        assert prov.returncode == 1 and "TAMPERED" in prov.stderr
    finally:
        for side in ("-wal", "-shm"):
            Path(f"{ledger}{side}").unlink(missing_ok=True)
        ledger.write_bytes(backup)


def test_eval_compare_on_a_user_suite_and_a_broken_line(chain, tmp_path):
    suite = tmp_path / "user.jsonl"
    suite.write_text(
        json.dumps({"messages": [{"role": "user", "content": "Who are you?"}], "answer": "Pebble"}) + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "Add 2 and 3."}], "answer": "5"}) + "\n"
    )  # fmt: skip
    ledger = ["--ledger", tmp_path / "eval.sqlite"]  # Pebble names no ledger: never the working directory's
    p = run("eval", "--compare", chain / "student", "pebble", "--suite", suite, "--match", "contains", *ledger)
    assert "agreement" in p.stdout and "all" in p.stdout
    suite.write_text(suite.read_text() + '{"messages": "hi"}\n')
    bad = run("eval", "--compare", chain / "student", "pebble", "--suite", suite, *ledger, ok=False)
    assert bad.returncode == 2 and "user.jsonl:3" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
