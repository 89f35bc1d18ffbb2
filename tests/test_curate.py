import json
import sqlite3

import numpy as np
import pyarrow.parquet as pq
import pytest
from curate_data import EVAL_A, planted, write_evals, write_run
from typer.testing import CliRunner

from stillhouse.cli import app
from stillhouse.core.dataset import content_hash
from stillhouse.core.errors import StillhouseError
from stillhouse.core.grading import Grader
from stillhouse.curate import CurateConfig, curate
from stillhouse.provenance.ledger import Ledger


@pytest.fixture
def run_dir(tmp_path):
    return write_run(tmp_path / "run", planted())


def _dropped(result):
    return {step: sum(c.values()) for step, c in result.dropped.items()}


def test_planted_items_are_removed_with_exact_counts(tmp_path, run_dir):
    p = planted()
    result = curate([run_dir], tmp_path / "ds", evals=write_evals(tmp_path))
    assert result.read == len(p.exchanges)
    assert _dropped(result) == {
        "failed": 1,
        "empty": 2,
        "truncated": 2,
        "refusal": 3,
        "length": 0,
        "repetition": 1,
        "decontamination": 4,
        "exact_dedup": 5,
        "near_dedup": 5,
    }
    assert result.dropped["decontamination"] == p.contamination
    assert result.rows == {"train": p.unique}
    table = pq.read_table(next((tmp_path / "ds" / "data").glob("train-00000-of-00001.parquet")))
    kept = table.to_pylist()
    assert [m["role"] for m in kept[0]["messages"]] == ["system", "user", "assistant"]
    assert json.loads(kept[0]["meta"]) == {"skill": "s0"}
    assert not any(EVAL_A[0][-17:] in m["content"] for r in kept for m in r["messages"])


def test_dataset_loads_with_datasets_and_card_and_ledger_tell_its_story(tmp_path, run_dir):
    from datasets import load_dataset

    config = CurateConfig(validation=0.3, shard_rows=10)
    result = curate([run_dir], tmp_path / "ds", config=config)
    ds = load_dataset(str(tmp_path / "ds"), cache_dir=str(tmp_path / "cache"))
    assert set(ds) == {"train", "validation"}
    assert ds["train"].num_rows == result.rows["train"] and ds["validation"].num_rows == result.rows["validation"]
    assert ds["train"][0]["messages"][-1]["role"] == "assistant"
    prompts = {s: {m[1]["content"].lower() for m in ds[s]["messages"]} for s in ds}
    assert not prompts["train"] & prompts["validation"]  # a prompt's answers never straddle the split
    shards = sorted((tmp_path / "ds" / "data").glob("train-*.parquet"))
    assert len(shards) == -(-result.rows["train"] // 10) and shards[-1].name.endswith(f"-of-{len(shards):05d}.parquet")

    card = (tmp_path / "ds" / "README.md").read_text()
    for fact in ("ember", "http://127.0.0.1:9/v1", "| own |", "| distillation |", "threshold=0.8", result.content_hash):
        assert fact in card
    assert "| refusal | 3 |" in card and "| near_dedup | 5 |" in card

    with Ledger(run_dir / "ledger.sqlite") as led:
        assert led.verify() == []
        (run,) = [r for r in led.runs() if r["stage"] == "curate"]
    assert run["outputs"]["content_hash"] == result.content_hash
    assert run["source_runs"] == ["collect-test-1"]
    assert run["teachers"] == [{"host": "127.0.0.1", "model": "ember", "base_url": "http://127.0.0.1:9/v1"}]
    assert content_hash(tmp_path / "ds")[0] == result.content_hash


def test_keep_best_keeps_the_highest_scored_duplicate(tmp_path):
    p = planted()
    # the exact duplicates of examples 0-4 carry no logprob; give one of them a better score than its original
    dup = next(e for e in p.exchanges if e.sample == 1)
    dup.response["choices"][0]["logprobs"] = {"content": [{"token": "x", "logprob": -0.1}]}
    run_dir = write_run(tmp_path / "run", p)
    first = curate([run_dir], tmp_path / "first", config=CurateConfig(keep="first"))
    best = curate([run_dir], tmp_path / "best", config=CurateConfig(keep="best"))
    assert _dropped(best) == _dropped(first)
    ids = {r["id"] for r in pq.read_table(tmp_path / "best" / "data").to_pylist()}
    assert f"{dup.key}:0" in ids and f"{p.exchanges[0].key}:0" not in ids
    assert best.rows == first.rows


def test_filters_switch_off_and_refusal_patterns_extend(tmp_path, run_dir):
    config = CurateConfig(no_filter=["refusal", "truncated"], refusal_pattern=[r"\bthe cat sat\b"], near_dedup=False)
    result = curate([run_dir], tmp_path / "ds", config=config)
    dropped = _dropped(result)
    assert "refusal" not in dropped and "truncated" not in dropped and "near_dedup" not in dropped
    assert dropped["exact_dedup"] == 5 and result.rows["train"] == planted().unique + 3 + 2 + 5 + 4


def test_length_bounds_count_estimated_or_real_tokens(tmp_path, run_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    answers = [t for e in planted().exchanges for t in (e.texts() or [""])]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    real = [len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers]
    only_length = dict(
        no_filter=["failed", "empty", "truncated", "refusal", "repetition"], exact_dedup=False, near_dedup=False
    )
    cap = int(np.median(real))
    exact = curate(
        [run_dir], tmp_path / "a", config=CurateConfig(**only_length, max_tokens=cap, tokenizer=str(tiny_model_dir))
    )
    assert _dropped(exact) == {"length": sum(n > cap for n in real)}
    estimated = curate([run_dir], tmp_path / "b", config=CurateConfig(**only_length, min_tokens=100))
    assert _dropped(estimated) == {"length": sum(-(-len(a) // 4) < 100 for a in answers)}


def test_exports_in_jsonl_and_parquet(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": f"q{i} {'x ' * i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(6)
    ]
    rows.append(dict(rows[0]))
    jsonl = tmp_path / "chats.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"prompt": f"p{i}", "response": f"r{i}", "skill": "k"}) + "\n" for i in range(3))
    )
    stored = tmp_path / "exchanges.jsonl"  # stored exchanges, as an export of a run store would hold them
    records = [(e.request, e.response, e.status) for e in planted().exchanges[:3]]
    records.append((records[0][0], None, "error"))
    stored.write_text("".join(json.dumps({"request": q, "response": r, "status": s}) + "\n" for q, r, s in records))
    only = curate([stored], tmp_path / "ds0")
    assert only.rows == {"train": 3} and _dropped(only)["failed"] == 1
    curate([jsonl, pairs], tmp_path / "ds1", config=CurateConfig(format="parquet"))
    curate([tmp_path / "ds1" / "data"], tmp_path / "ds2", config=CurateConfig(format="jsonl"))
    lines = (tmp_path / "ds2" / "data" / "train-00000-of-00001.jsonl").read_text().splitlines()
    assert len(lines) == 9  # 6 chats (one exact duplicate dropped) + 3 prompt/response pairs
    assert json.loads(json.loads(lines[-1])["meta"]) == {"skill": "k"}
    assert (tmp_path / "ds1" / "ledger.sqlite").exists()  # exports only: the dataset keeps its own ledger


def _left_behind(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))


def test_bad_inputs_fail_in_one_line_and_write_nothing(tmp_path, run_dir):
    with pytest.raises(StillhouseError, match="does not exist"):
        curate([run_dir], tmp_path / "ds", evals=[("gsm", tmp_path / "missing.jsonl")])
    assert not (tmp_path / "ds").exists()

    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"prompt": "a", "response": "b"}\n' * 3000 + '{"messages": []}\n')
    with pytest.raises(StillhouseError, match=r"mixed\.jsonl:3001: mixed schemas"):
        curate([mixed], tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and _left_behind(tmp_path) == []

    garbage = tmp_path / "bad.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(StillhouseError, match="cannot read"):
        curate([garbage], tmp_path / "ds")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "store.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(StillhouseError):
        curate([broken], tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and _left_behind(tmp_path) == []


def test_existing_dataset_is_refused_unless_overwrite(tmp_path, run_dir):
    first = curate([run_dir], tmp_path / "ds")
    with pytest.raises(StillhouseError, match="already holds a dataset; pass --overwrite"):
        curate([run_dir], tmp_path / "ds")
    again = curate([run_dir], tmp_path / "ds", overwrite=True, config=CurateConfig(near_dedup=False))
    assert again.rows["train"] == first.rows["train"] + 5 and _left_behind(tmp_path) == []
    with Ledger(run_dir / "ledger.sqlite") as led:
        assert [r["outputs"]["content_hash"] for r in led.runs() if r["stage"] == "curate"] == [
            first.content_hash,
            again.content_hash,
        ]


def test_cli_curate(tmp_path, run_dir):
    evals = write_evals(tmp_path)
    args = ["curate", str(run_dir), "-o", str(tmp_path / "ds"), "--validation", "0.2"]
    args += [a for name, path in evals for a in ("--eval", f"{name}={path}")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "decontamination" in result.output and str(planted().unique) in result.output
    assert (tmp_path / "ds" / "README.md").exists()


def test_failed_run_is_recorded_in_the_ledger(tmp_path, run_dir):
    db = sqlite3.connect(run_dir / "store.sqlite")
    db.execute("UPDATE exchanges SET request = 'not json' WHERE rowid = 30")
    db.commit()
    with pytest.raises(StillhouseError, match="cannot read"):
        curate([run_dir], tmp_path / "ds")
    with Ledger(run_dir / "ledger.sqlite") as led:
        end = [e for e in led.entries() if e.kind == "curate.end"]
    assert len(end) == 1 and end[0].body["ok"] == 0 and "error" in end[0].body
    assert not (tmp_path / "ds").exists() and _left_behind(tmp_path) == []


def test_near_dedup_counts_depend_on_target(tmp_path, run_dir):
    # On prompts alone, the three same-prompt/different-answer examples become duplicates too.
    result = curate([run_dir], tmp_path / "ds", evals=write_evals(tmp_path), config=CurateConfig(dedup_on="prompt"))
    assert _dropped(result)["near_dedup"] == 5 + 3
    assert result.rows == {"train": planted().unique - 3}


def test_cli_bad_input_is_one_line(tmp_path, run_dir):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "stillhouse.cli", "curate", str(run_dir), "-o", str(tmp_path / "ds")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([*cmd, "--eval", f"gsm={tmp_path / 'nope.jsonl'}"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: evaluation set 'gsm': {tmp_path / 'nope.jsonl'} does not exist"
    ]
    assert not (tmp_path / "ds").exists()


def test_verify_keeps_only_answers_graded_right(tmp_path):
    """Rejection sampling: with --verify, a row whose prompt had an expected answer stays only when it is right;
    rows without one pass, and the card and ledger count the drops."""
    rows = [
        {"prompt": "2 + 2?", "response": "It is 4.", "meta": {"answer": "4"}},  # as collect's prompts file put it
        {"prompt": "3 + 3?", "response": "It is 7.", "meta": {"answer": "6"}},
        {"prompt": "Hello", "response": "Hi there."},
    ]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["curate", str(pairs), "-o", str(tmp_path / "ds"), "--verify", "contains"])
    assert result.exit_code == 0, result.output
    kept = pq.read_table(tmp_path / "ds" / "data").to_pylist()
    assert sorted(r["messages"][-1]["content"] for r in kept) == ["Hi there.", "It is 4."]
    assert "| verify | 1 | grader=contains |" in (tmp_path / "ds" / "README.md").read_text()

    # a task's own grader, from Python: here the answer is the last number, so "It is 7." is wrong for 6 too
    last_number = Grader(lambda _s, exp, reply: reply.rstrip(".").split()[-1] == exp, lambda _s, _e, reply: reply)
    custom = curate([pairs], tmp_path / "ds2", verifier=last_number)
    assert custom.rows == {"train": 2} and custom.dropped["verify"] == {"verify": 1}

    with pytest.raises(StillhouseError, match="--verify 'fuzzy': must be one of 'exact', 'normalised' or 'contains'"):
        CliRunner().invoke(
            app, ["curate", str(pairs), "-o", str(tmp_path / "ds3"), "--verify", "fuzzy"], catch_exceptions=False
        )
    assert not (tmp_path / "ds3").exists()
