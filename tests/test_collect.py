"""`collect` and `export` against a real HTTP server on loopback: exactly-once answers, resumption,
new keys for new parameters, budget caps, provenance, bad input and round trips through export."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fake_upstream import MODEL, Call, Reply, Upstream, cli, run, write_prompts
from typer.testing import CliRunner

from stillhouse import RunStore, StillhouseError, collect
from stillhouse.cli import app
from stillhouse.collect.store import RequestKeys, request_key
from stillhouse.core.ids import canonical_json
from stillhouse.provenance.ledger import Ledger


def test_collect_answers_each_prompt_once_and_resumes_with_nothing_to_send(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 120)
    out = tmp_path / "run"
    with Upstream(latency=0.005) as up:
        r1 = run(prompts, up, out, system="You are terse.", temperature=0.0, max_tokens=32)
        assert (r1.ok, r1.failed, r1.sent, r1.skipped, r1.stop_reason) == (120, 0, 120, 0, "done")
        assert sorted(up.counts.values()) == [1] * 120  # one request per key
        assert all(c.body["messages"][0] == {"role": "system", "content": "You are terse."} for c in up.calls)
        r2 = run(prompts, up, out, system="You are terse.", temperature=0.0, max_tokens=32)
        assert (r2.sent, r2.skipped, r2.ok) == (0, 120, 0)
        assert len(up.calls) == 120  # the re-run sent nothing

    with RunStore(out) as store:
        rows = list(store.exchanges())
    assert len(rows) == 120 and len({r.prompt_id for r in rows}) == 120
    for r in rows:  # each answer belongs to its own prompt, with the record's extra fields kept
        assert r.texts() == [f"{r.messages[-1]['content']} => ok"]
        assert r.key == up.key(r.request)
        assert r.meta["skill"] in ("add", "reverse")
    assert {r.meta.get("answer") for r in rows if r.meta["skill"] == "add"} == set(range(2, 121, 2))
    assert r1.prompt_tokens == sum(r.prompt_tokens for r in rows) and r1.completion_tokens == 120 * 5

    with Ledger(out / "ledger.sqlite") as led:
        assert led.verify() == []
        kinds = [e.kind for e in led.entries()]
        runs = led.runs()
    assert kinds == ["collect.start", "collect.end"] * 2
    first = runs[0]
    assert first["teacher"]["model"] == MODEL and first["teacher"]["host"] == "127.0.0.1"
    assert first["teacher"]["fingerprints"] == ["fp_test"] and first["system_fingerprints"] == ["fp_test"]
    assert (first["purpose"], first["succeeded"], first["failed"], first["stop_reason"]) == (
        "distillation",
        120,
        0,
        "done",
    )
    assert first["operator"] and runs[1]["succeeded"] == 0 and runs[1]["skipped"] == 120


def test_changing_a_parameter_makes_new_keys_not_a_mix(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 20)
    out = tmp_path / "run"
    with Upstream() as up:
        run(prompts, up, out, temperature=0.0)
        assert run(prompts, up, out, temperature=0.7).sent == 20
        assert run(prompts, up, out, temperature=0.7, system="Be brief.").sent == 20  # system prompt is keyed
        assert run(prompts, up, out, temperature=0.7, samples=2).sent == 20  # only sample #1 is new
        # sample #1 has the same body as sample #0 (the index is in the key, not the request)
        assert len(up.calls) == 80 and sorted(Counter(up.counts.values()).items()) == [(1, 40), (2, 20)]
    with RunStore(out) as store:
        rows = list(store.exchanges())
    assert len(rows) == 80
    temps = {r.request.get("temperature") for r in rows}
    assert temps == {0.0, 0.7}


def test_request_key_format_is_stable() -> None:
    """Run directories made by earlier versions resume only while the key's definition holds."""
    base, messages = "http://h:1/v1/", [{"role": "system", "content": "é \u2603"}, {"role": "user", "content": "hi"}]
    params = {"temperature": 0.5, "stop": ["\n"], "seed": None}
    ident = ["http://h:1/v1", MODEL, messages, {"temperature": 0.5, "stop": ["\n"]}, 2]
    expected = hashlib.sha256(canonical_json(ident).encode()).hexdigest()
    assert request_key(base, MODEL, messages, params, 2) == expected
    assert RequestKeys(base, MODEL, params).key(canonical_json(messages), 2) == expected


def test_export_jsonl_and_parquet_round_trip_with_logprobs(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 30)
    out = tmp_path / "run"
    with Upstream() as up:
        run(prompts, up, out, top_logprobs=3, n=2)
    assert all(c.body["logprobs"] is True and c.body["top_logprobs"] == 3 for c in up.calls)
    runner = CliRunner()
    for fmt in ("jsonl", "parquet"):
        res = runner.invoke(app, ["export", str(out), "--format", fmt, "-o", str(tmp_path / f"x.{fmt}")])
        assert res.exit_code == 0, res.output
        assert "30 exchanges" in res.output
    lines = [json.loads(x) for x in (tmp_path / "x.jsonl").read_text().splitlines()]
    table = pq.read_table(tmp_path / "x.parquet").to_pylist()
    assert len(lines) == len(table) == 30
    with RunStore(out) as store:
        by_key = {e.key: e for e in store.exchanges()}
    for rec, row in zip(lines, table, strict=True):
        e = by_key[rec["key"]]
        assert rec["key"] == row["key"] and rec["prompt"] == row["prompt"] == e.messages[-1]["content"]
        assert rec["messages"] == row["messages"] == e.messages
        assert rec["responses"] == row["responses"] == [f"{rec['prompt']} => ok"] * 2
        assert rec["response"] == row["response"] and rec["finish_reasons"] == row["finish_reasons"] == ["stop"] * 2
        assert (
            (rec["prompt_tokens"], rec["completion_tokens"])
            == (e.prompt_tokens, e.completion_tokens)
            == (
                row["prompt_tokens"],
                row["completion_tokens"],
            )
        )
        assert rec["meta"] == json.loads(row["meta"]) == e.meta
        lp = rec["logprobs"]
        assert len(lp) == 2 and [t["token"] for t in lp[0]] == rec["response"].split()
        assert all(len(t["top_logprobs"]) == 3 for t in lp[0])
        parquet_lp = [[{k: t[k] for k in ("token", "logprob", "top_logprobs")} for t in c] for c in row["logprobs"]]
        assert parquet_lp == [[{k: t[k] for k in ("token", "logprob", "top_logprobs")} for t in c] for c in lp]


def test_prompts_from_parquet_and_saved_dataset_make_the_same_requests(tmp_path: Path) -> None:
    import datasets

    jsonl = write_prompts(tmp_path / "p.jsonl", 10)
    records = [json.loads(x) for x in jsonl.read_text().splitlines()]
    rows = [
        {"id": r["id"], "prompt": r.get("prompt") or r["messages"][0]["content"], "skill": r["skill"]} for r in records
    ]
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(tmp_path / "p.parquet")
    ds.save_to_disk(tmp_path / "saved")
    with Upstream() as up:
        keys = []
        for src in ("p.jsonl", "p.parquet", "saved"):
            assert run(tmp_path / src, up, tmp_path / f"run-{src}").ok == 10
            with RunStore(tmp_path / f"run-{src}") as store:
                rows = list(store.exchanges())
            keys.append({e.key for e in rows})
            assert {e.meta["skill"] for e in rows} == {"add", "reverse"}
    assert keys[0] == keys[1] == keys[2] and len(keys[0]) == 10
    assert set(up.counts) == keys[0] and set(up.counts.values()) == {3}  # one request per file per key


def test_malformed_line_is_named_before_any_request(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 10)
    lines = prompts.read_text().splitlines()
    lines[6] = '{"id": "bad", "prompt": "unterminated'
    prompts.write_text("\n".join(lines) + "\n")
    with Upstream() as up:
        res = cli("collect", str(prompts), "--base-url", up.base_url, "--model", MODEL, "--out", str(tmp_path / "r"),
                  "--purpose", "distillation")  # fmt: skip
        assert res.returncode == 2
        assert res.stderr.strip().splitlines() == [res.stderr.strip()]  # one line
        assert f"{prompts}:7: not valid JSON" in res.stderr and "Traceback" not in res.stderr
        lines[6] = '{"id": "bad", "text": "no prompt field"}'
        prompts.write_text("\n".join(lines) + "\n")
        with pytest.raises(StillhouseError, match=r"p\.jsonl:7: needs 'messages'"):
            run(prompts, up, tmp_path / "r")
        assert up.calls == []


def test_budget_caps_stop_cleanly_and_count_earlier_spend(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 60)
    (tmp_path / "prices.toml").write_text("[teacher-1]\ninput = 1000.0\noutput = 2000.0\n")  # USD per 1M tokens
    with Upstream(latency=0.01) as up:
        r = run(prompts, up, tmp_path / "a", max_requests=10)
        assert (r.stop_reason, r.sent, r.ok, len(up.calls)) == ("max-requests", 10, 10, 10)
        assert run(prompts, up, tmp_path / "a", max_requests=10).sent == 0  # the cap covers the run dir
        assert run(prompts, up, tmp_path / "a", max_requests=15).sent == 5

        up.reset()
        r = run(prompts, up, tmp_path / "b", max_cost=0.2, prices=tmp_path / "prices.toml")
        assert r.stop_reason == "max-cost" and 0 < r.sent < 60 and len(up.calls) == r.sent
        with RunStore(tmp_path / "b") as store:
            assert store.counts()["cost"] == pytest.approx(r.cost)
            most = max(e.cost for e in store.exchanges())
        # in-flight requests are counted before sending: at most one request's worth past the cap
        assert 0.2 - 2 * most < r.cost < 0.2 + most
        with Ledger(tmp_path / "b" / "ledger.sqlite") as led:
            end = led.runs()[0]
        assert end["stop_reason"] == "max-cost" and end["cost"] == pytest.approx(r.cost, abs=1e-6)

        r = run(prompts, up, tmp_path / "c", max_tokens_total=300)
        assert r.stop_reason == "max-tokens-total"
        assert 300 - 2 * 12 < r.prompt_tokens + r.completion_tokens < 300 + 12  # a request is <= 12 tokens here

        res = cli("collect", str(prompts), "--base-url", up.base_url, "--model", MODEL, "--out", str(tmp_path / "d"),
                  "--purpose", "evaluation", "--max-requests", "7", "--concurrency", "4")  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert "stopped: max-requests reached" in res.stderr and "7/" in res.stderr

        calls = len(up.calls)
        with pytest.raises(StillhouseError, match="--max-cost needs a price for model 'teacher-1'"):
            run(prompts, up, tmp_path / "e", max_cost=1.0)
        assert len(up.calls) == calls


def test_api_key_is_sent_but_never_written(tmp_path: Path) -> None:
    secret = "sk-test-SECRET-0123456789"
    prompts = write_prompts(tmp_path / "p.jsonl", 20)

    def script(call: Call) -> Reply | None:
        assert call.headers["Authorization"] == f"Bearer {secret}"
        if call.prompt.endswith("w4"):  # an error body that echoes the key, as some servers do
            return Reply(400, json={"error": {"message": f"bad request for key {secret}"}})
        return None

    with Upstream(script) as up:
        res = cli("collect", str(prompts), "--base-url", up.base_url, "--model", MODEL, "--out", str(tmp_path / "r"),
                  "--purpose", "distillation", "--api-key-env", "MY_KEY", env={"MY_KEY": secret})  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert len(up.calls) == 20
    files = list((tmp_path / "r").iterdir())
    assert {f.name for f in files} >= {"store.sqlite", "ledger.sqlite"}
    for f in files:
        assert secret.encode() not in f.read_bytes(), f
    assert secret not in res.stdout + res.stderr
    with RunStore(tmp_path / "r") as store:
        failed = list(store.exchanges("error"))
    assert len(failed) == 1 and "***" in failed[0].error


def test_missing_key_unreachable_endpoint_and_terms_fail_with_one_line(tmp_path: Path) -> None:
    import socket

    prompts = write_prompts(tmp_path / "p.jsonl", 3)
    res = cli("collect", str(prompts), "--base-url", "https://api.example.com/v1", "--model", "m", "--out",
              str(tmp_path / "r"), "--purpose", "evaluation")  # fmt: skip
    assert res.returncode == 2 and res.stderr.startswith("error: no API key: set $OPENAI_API_KEY")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = cli("collect", str(prompts), "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m", "--out",
              str(tmp_path / "r"), "--purpose", "evaluation")  # fmt: skip
    assert res.returncode == 2 and res.stderr.startswith(f"error: cannot reach http://127.0.0.1:{port}/v1")
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    with pytest.raises(StillhouseError, match="forbid 'distillation'"):
        collect(
            prompts, base_url="https://api.openai.com/v1", model="gpt-4o", out=tmp_path / "r", purpose="distillation"
        )
