"""synth against a scripted OpenAI-compatible server on loopback (fault injection: 429 with Retry-After).

Each answer depends only on the request, so replays are reproducible: per request it lists one
near-copy and one exact copy of a task it was shown, one two-word task, and three fresh tasks.
"""

import asyncio
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
from stillhouse.errors import StillhouseError
from stillhouse.ledger import Ledger
from stillhouse.synth import SynthConfig, lcs_length, parse_tasks, rouge_l, rouge_tokens, synth

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
    with Ledger(result.run_dir / "ledger.sqlite") as led:
        (run,) = led.runs()
    assert run["stage"] == "synth" and run["teacher"]["base_url"] == url and run["kept"] == 12
    assert run["ok"] == 4 and run["prompt_tokens"] == 200 and run["purpose"] == "distillation"


def test_resume_replays_answered_requests_and_stops_at_target(tmp_path, seeds):
    out = tmp_path / "prompts.jsonl"
    with scripted_teacher() as (url, state):
        short = synth(seeds, out, base_url=url, model="ember", config=SynthConfig(target=100, max_requests=2))
        longer = synth(seeds, out, base_url=url, model="ember", config=SynthConfig(target=100, max_requests=4))
        assert (short.sent, longer.sent, state["calls"]) == (2, 2, 4)  # the first two were not re-sent
        again = synth(seeds, out, base_url=url, model="ember", config=SynthConfig(target=100, max_requests=4))
        assert again.sent == 0 and again.kept == longer.kept
        capped = synth(seeds, out, base_url=url, model="ember", config=SynthConfig(target=5, concurrency=2))
        assert capped.kept == longer.kept[:5] and capped.requests == 2 and capped.sent == 0


def test_retry_after_is_honoured(tmp_path, seeds):
    with scripted_teacher(throttle_first=True) as (url, state):
        result = synth(
            seeds, tmp_path / "p.jsonl", base_url=url, model="ember", config=SynthConfig(target=3, concurrency=1)
        )
    assert len(result.kept) == 3 and state["retry_gap"] >= 0.95


def test_cli_synth_and_bad_seeds(tmp_path, seeds):
    with scripted_teacher() as (url, _):
        args = ["synth", str(seeds), "-o", str(tmp_path / "p.jsonl"), "--base-url", url, "--model", "m"]
        result = CliRunner().invoke(app, [*args, "--target", "6"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 6
    with pytest.raises(StillhouseError, match="does not exist"):
        synth(tmp_path / "none.txt", tmp_path / "q.jsonl", base_url=url, model="m")
    with pytest.raises(StillhouseError, match="forbid"):
        synth(seeds, tmp_path / "q.jsonl", base_url="https://api.openai.com/v1", model="gpt-4o")
    assert not (tmp_path / "q.jsonl").exists()
