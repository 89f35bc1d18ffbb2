"""synth end to end: against our own server (a tiny random model) for the mechanics, and against a
scripted one where a test needs answers it controls: copies of shown tasks to reject, or a 429.

The scripted answer depends only on the request, so replays are reproducible: per request it lists
one near-copy and one exact copy of a task it was shown, one two-word task, and three fresh tasks.
"""

import asyncio
import functools
import hashlib
import json
import random
import re
import threading
import time
from contextlib import contextmanager

import pytest
from aiohttp import web
from typer.testing import CliRunner

from stillhouse.cli import app
from stillhouse.collect.store import RunStore
from stillhouse.collect.synth import SynthConfig, lcs_length, parse_tasks, rouge_l, rouge_tokens, synth
from stillhouse.core.errors import StillhouseError
from stillhouse.provenance.ledger import Ledger
from stillhouse.provenance.terms import Purpose
from stillhouse.serve import serve_in_background

VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ro", "sa", "tu") for b in range(300)]
SEEDS = [
    "Write a haiku about autumn leaves falling in the park",
    "Explain how a bicycle gear system works to a child",
    "List three reasons why people keep houseplants at home",
    "Translate the sentence good morning into French and Spanish",
]


@contextmanager
def scripted_teacher(throttle_first: bool = False):
    state = {"calls": 0, "throttled_at": None, "retry_gap": None, "bodies": []}

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        state["calls"] += 1
        if throttle_first and state["throttled_at"] is None:
            state["throttled_at"] = time.monotonic()
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "1"})
        if state["throttled_at"] is not None and state["retry_gap"] is None:
            state["retry_gap"] = time.monotonic() - state["throttled_at"]
        state["bodies"].append(body)
        prompt = body["messages"][-1]["content"]
        shown = re.findall(r"^\d+\. (.+)$", prompt, re.MULTILINE)
        rng = random.Random(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest())
        fresh = [" ".join(rng.choice(VOCAB) for _ in range(8)) for _ in range(3)]
        items = [shown[0] + " please", shown[-1], "Do it", *fresh]
        text = "Sure, here you go:\n" + "\n".join(f"{len(shown) + i}. {t}" for i, t in enumerate(items, 1))
        usage = {"prompt_tokens": 50, "completion_tokens": 40, "total_tokens": 90}
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        return web.json_response({"id": "x", "object": "chat.completion", "choices": [choice], "usage": usage})

    loop = asyncio.new_event_loop()
    web_app = web.Application()
    web_app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(web_app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/v1", state
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture
def seeds(tmp_path):
    path = tmp_path / "seeds.txt"
    path.write_text("\n".join(SEEDS) + "\n")
    return path


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with serve_in_background(tiny_model_dir, api_key="sk-synth") as s:
        yield s


def _ledger(result):
    """The ledger's runs by stage, after checking its hash chain."""
    with Ledger(result.run_dir / "ledger.sqlite") as led:
        assert led.verify() == []
        runs = led.runs()
    return {stage: [r for r in runs if r["stage"] == stage] for stage in ("synth", "collect")}


def _dp_lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_bit_parallel_lcs_matches_dynamic_programming():
    rng = random.Random(0)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        assert lcs_length(a, b) == _dp_lcs(a, b)
    a, b = rouge_tokens("The cat sat on the mat."), rouge_tokens("the cat is on the mat")
    assert rouge_l(a, b) == pytest.approx(2 * 5 / 12)


def test_parse_numbered_lists_with_continuations():
    text = "Here are tasks:\n7. First task\n   goes on here\n8) Second task\n\nThanks!\n- a bullet task"
    assert parse_tasks(text) == ["First task goes on here", "Second task", "a bullet task"]
    assert parse_tasks("just one line of text") == ["just one line of text"]


def test_synth_keeps_only_new_tasks_within_budget_and_records_it(tmp_path, seeds):
    with scripted_teacher() as (url, state):
        config = SynthConfig(target=100, max_requests=4, concurrency=2)
        result = synth(seeds, tmp_path / "prompts.jsonl", base_url=url, model="ember", config=config)
    assert result.requests == result.sent == state["calls"] == 4
    assert len(result.kept) == 12  # three fresh tasks per answer
    assert result.rejected == {"similar": 8, "too_short": 4}  # the two copies and "Do it", per answer
    lines = [json.loads(line) for line in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in lines] == result.kept and lines[0]["id"] == "synth-000000"
    # later requests show already-kept synthetic tasks next to the seeds
    assert any(result.kept[0] in b["messages"][0]["content"] for b in state["bodies"][2:])
    runs = _ledger(result)
    (run,) = runs["synth"]
    assert run["teacher"]["base_url"] == url and run["kept"] == 12 and run["stop_reason"] == "max-requests"
    assert run["succeeded"] == 4 and run["prompt_tokens"] == 200 and run["purpose"] == "distillation"
    # two rounds of two requests, each one collect run whose prompts file holds the round
    assert run["collect_runs"] == result.collect_runs == [r["run_id"] for r in runs["collect"]]
    assert [(r["sent"], r["succeeded"]) for r in runs["collect"]] == [(2, 2), (2, 2)]
    round_1 = (result.run_dir / "rounds" / result.run_id / "00001.jsonl").read_text().splitlines()
    round_1 = [json.loads(line) for line in round_1]
    assert [r["id"] for r in round_1] == ["r00001-000", "r00001-001"]
    assert [r["messages"] for r in round_1] == [b["messages"] for b in state["bodies"][2:]]


def test_resume_replays_answered_requests_and_stops_at_target(tmp_path, seeds):
    out = tmp_path / "prompts.jsonl"
    with scripted_teacher() as (url, state):
        ask = functools.partial(synth, seeds, out, base_url=url, model="ember")
        short = ask(config=SynthConfig(target=100, max_requests=2))
        longer = synth(
            seeds, out, base_url=url, model="ember", config=SynthConfig(target=100, max_requests=4), overwrite=True
        )
        assert (short.sent, longer.sent, state["calls"]) == (2, 2, 4)  # the first two were not re-sent
        again = synth(
            seeds, out, base_url=url, model="ember", config=SynthConfig(target=100, max_requests=4), overwrite=True
        )
        assert again.sent == 0 and again.kept == longer.kept and again.collect_runs == []
        capped = synth(
            seeds, out, base_url=url, model="ember", config=SynthConfig(target=5, concurrency=2), overwrite=True
        )
        assert capped.kept == longer.kept[:5] and capped.requests == 2 and capped.sent == 0


def test_no_request_is_asked_twice(tmp_path):
    """With one seed the first round can ask one thing only; the next shows kept tasks too, so it can ask more."""
    seeds = tmp_path / "one.txt"
    seeds.write_text(SEEDS[0] + "\n")
    with scripted_teacher() as (url, state):
        config = SynthConfig(target=100, max_requests=3, concurrency=2)
        result = synth(seeds, tmp_path / "p.jsonl", base_url=url, model="ember", config=config)
    assert result.sent == result.requests == state["calls"] == 3 and len(result.collect_runs) == 2
    assert len({json.dumps(b["messages"]) for b in state["bodies"]}) == 3


def test_retry_after_is_honoured(tmp_path, seeds):
    with scripted_teacher(throttle_first=True) as (url, state):
        result = synth(
            seeds, tmp_path / "p.jsonl", base_url=url, model="ember", config=SynthConfig(target=3, concurrency=1)
        )
    assert len(result.kept) == 3 and state["retry_gap"] >= 0.95


def test_synth_through_our_server_records_resumes_and_caps(tmp_path, server, monkeypatch):
    """A random model writes garbage: what counts here is what was sent, stored, recorded and replayed."""
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in ("Add 2 and 3", "Reverse cat", "Sort 3 1 2")))
    out = tmp_path / "p.jsonl"
    monkeypatch.setenv("SYNTH_KEY", "sk-synth")
    config = SynthConfig(target=50, max_requests=4, concurrency=2, shown_seeds=2, max_tokens=16)
    kwargs = dict(base_url=server.base_url, model=server.model, api_key_env="SYNTH_KEY", purpose=Purpose.evaluation)
    first = synth(seeds, out, config=config, **kwargs)
    assert (first.requests, first.sent, len(first.collect_runs)) == (4, 4, 2)
    assert first.totals["succeeded"] == 4 and first.totals["completion_tokens"] > 0
    with RunStore(first.run_dir) as store:
        assert store.counts()["ok"] == 4
        assert [sum(1 for _ in store.exchanges(run_id=r)) for r in first.collect_runs] == [2, 2]
    runs = _ledger(first)
    assert [r["run_id"] for r in runs["collect"]] == first.collect_runs
    assert all(r["sent"] == r["succeeded"] == 2 and r["purpose"] == "evaluation" for r in runs["collect"])
    assert runs["synth"][0]["kept"] == len(first.kept) and runs["synth"][0]["succeeded"] == 4
    written = [json.loads(line)["prompt"] for line in out.read_text().splitlines()]
    assert written == first.kept

    again = synth(seeds, out, config=config, overwrite=True, **kwargs)  # resume: everything is in the store
    assert (again.requests, again.sent, again.collect_runs, again.kept) == (4, 0, [], first.kept)
    assert [json.loads(line)["prompt"] for line in out.read_text().splitlines()] == first.kept

    # new requests (another wording) in the same run dir: collect's request cap counts what it holds
    other = SynthConfig(target=50, max_requests=4, concurrency=2, shown_seeds=2, max_tokens=16, per_request=3)
    capped = synth(seeds, out, config=other, overwrite=True, **kwargs)
    assert (capped.sent, capped.stop_reason, capped.totals) == (0, "max-requests", {"failed": 2})
    assert _ledger(capped)["collect"][-1]["stop_reason"] == "max-requests"
    with RunStore(first.run_dir) as store:
        assert store.counts()["exchanges"] == 4

    monkeypatch.delenv("SYNTH_KEY")  # the key reaches collect, which stops at the server's 401
    with pytest.raises(StillhouseError, match="401"):
        synth(seeds, tmp_path / "q.jsonl", config=config, **kwargs)


def test_cli_synth_and_bad_seeds(tmp_path, seeds, server, monkeypatch):
    monkeypatch.setenv("SYNTH_KEY", "sk-synth")
    short = tmp_path / "short.txt"  # the tiny model's context holds 256 tokens: short seeds, few shown
    short.write_text("Add 2 and 3\nReverse cat\nSort 3 1 2\n")
    args = ["synth", str(short), "-o", str(tmp_path / "p.jsonl"), "--base-url", server.base_url]
    args += ["--model", server.model, "--api-key-env", "SYNTH_KEY", "--max-requests", "2", "--rpm", "6000"]
    args += ["--shown-seeds", "2", "--max-tokens", "16"]  # the tiny model's context holds 256 tokens
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())
    assert "(2 requests, 2 sent now)" in printed and "stopped at max-requests" in printed
    assert (tmp_path / "p.jsonl").exists()
    with pytest.raises(StillhouseError, match="does not exist"):
        synth(tmp_path / "none.txt", tmp_path / "q.jsonl", base_url=server.base_url, model="m")
    with pytest.raises(StillhouseError, match="forbid"):
        synth(seeds, tmp_path / "q.jsonl", base_url="https://api.openai.com/v1", model="gpt-4o")
    assert not (tmp_path / "q.jsonl").exists()
