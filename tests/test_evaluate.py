"""Eval on real local models with a JSONL suite, compare mode's interval, and an endpoint that dies."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import threading

import pytest
import torch
from aiohttp import web
from chats import skill_chats, write_dataset

from stillhouse import cli
from stillhouse.core.errors import StillhouseError
from stillhouse.evaluate import Endpoint, Grader, LocalModel, compare, evaluate, load_suite, normalise, wilson
from stillhouse.provenance.ledger import Ledger
from stillhouse.train import TrainConfig, train


def last_number(text: str) -> str:
    found = re.findall(r"-?\d+", text)
    return found[-1] if found else ""


# A tiny grader set for the toy skills: an addition is right when its last number is the sum.
TOY = Grader(
    grade=lambda skill, expected, reply: (last_number(reply) if skill == "add" else normalise(reply)) == expected,
    extract=lambda skill, expected, reply: last_number(reply) if skill == "add" else normalise(reply),
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    path = tmp_path_factory.mktemp("suite") / "suite.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in skill_chats(8, seed=3)))
    return path


@pytest.fixture(scope="module")
def drilled(tmp_path_factory, tiny_model_dir, suite):
    """A model that has learnt the suite's answers by heart: a teacher that is mostly right."""
    root = tmp_path_factory.mktemp("drilled")
    rows = [json.loads(line) for line in suite.read_text().splitlines()]
    data = write_dataset(root / "data", rows)
    config = TrainConfig(student=str(tiny_model_dir), max_steps=60, batch_size=8, lr=3e-3, warmup=0.0)
    return train(data, root / "model", config, progress=False).model_dir


def test_student_vs_teacher_accuracy_and_agreement_per_skill(drilled, tiny_model_dir, suite, tmp_path):
    records = load_suite(str(suite))
    assert all(r["messages"][-1]["role"] == "user" for r in records)  # reference answers stripped
    teacher, untrained = LocalModel(drilled), LocalModel(tiny_model_dir)
    ledger = tmp_path / "ledger.sqlite"

    res = evaluate(untrained, teacher, records, TOY, ledger=ledger, suite="toy")
    assert res["teacher"]["accuracy"] >= 0.75
    assert res["student"]["accuracy"] == 0.0 and res["student"]["agreement"] == 0.0
    assert set(res["per_skill"]) == {"add", "reverse"}
    assert all(s["n"] == 4 for s in res["per_skill"].values())

    same = evaluate(teacher, teacher, records, TOY, ledger=ledger)
    assert same["student"]["agreement"] == 1.0
    assert same["student"]["accuracy"] == same["teacher"]["accuracy"] == res["teacher"]["accuracy"]

    with Ledger(ledger) as led:
        assert not led.verify()
        runs = led.runs()
    assert [r["stage"] for r in runs] == ["eval", "eval"] and all(r["ok"] for r in runs)
    assert runs[0]["result"]["teacher"]["accuracy"] == res["teacher"]["accuracy"]


def test_compare_gives_agreement_with_a_wilson_interval(drilled, tiny_model_dir, suite, tmp_path):
    records = load_suite(str(suite))
    drilled_model = LocalModel(drilled)
    same = compare(drilled_model, drilled_model, records, TOY, ledger=tmp_path / "l.sqlite")
    assert same["agreement"] == 1.0 and same["n"] == 8
    assert same["agreement_ci95"] == pytest.approx([0.6756, 1.0], abs=1e-3)
    apart = compare(drilled_model, LocalModel(tiny_model_dir), records, TOY, ledger=tmp_path / "l.sqlite")
    assert apart["agreement"] == 0.0 and apart["agreement_ci95"][1] == pytest.approx(0.3244, abs=1e-3)


def test_wilson_interval():
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_cli_eval_json(drilled, suite, tmp_path, monkeypatch, capsys):
    ledger = tmp_path / "l.sqlite"
    args = ["eval", "--student", drilled, "--teacher", drilled, "--suite", suite, "--json", "--ledger", ledger]
    monkeypatch.setattr(sys, "argv", ["stillhouse", *map(str, args)])
    cli.main()
    res = json.loads(capsys.readouterr().out)
    assert res["student"]["agreement"] == 1.0
    assert {"accuracy"} <= set(res["teacher"]) and {"accuracy", "agreement"} <= set(res["student"])
    assert set(res["per_skill"]) == {"add", "reverse"}
    assert res["per_skill"]["add"]["student"]["agreement"] == 1.0


class DyingUpstream:
    """Fault injection: an OpenAI-style endpoint that answers `alive` requests, then only 503s."""

    def __init__(self, alive: int):
        self.alive, self.calls = alive, 0
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.sock, self.port = sock, sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()

    async def _chat(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls > self.alive:
            return web.Response(status=503, text="upstream is down")
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": "42"}}]})

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_an_endpoint_that_dies_mid_eval_is_one_clear_error(tiny_model_dir, suite, tmp_path):
    upstream = DyingUpstream(alive=3)
    try:
        teacher = Endpoint(f"http://127.0.0.1:{upstream.port}", "teacher", concurrency=1, retries=2)
        with pytest.raises(StillhouseError) as e:
            evaluate(LocalModel(tiny_model_dir), teacher, load_suite(str(suite)), TOY, ledger=tmp_path / "l.sqlite")
    finally:
        upstream.close()
    assert "stopped answering" in str(e.value) and "3 of 8" in str(e.value) and "503" in str(e.value)
    with Ledger(tmp_path / "l.sqlite") as led:
        (run,) = led.runs()
    assert run["ok"] is False and "stopped answering" in run["error"]


def test_endpoint_and_local_dir_are_interchangeable(tiny_model_dir, suite, tmp_path):
    serve = pytest.importorskip("stillhouse.serve", reason="stillhouse serve is not merged into this branch yet")
    records = load_suite(str(suite))
    with serve.serve_in_background(tiny_model_dir) as server:
        remote = Endpoint(server.base_url)
        res = compare(remote, LocalModel(tiny_model_dir), records, TOY, ledger=tmp_path / "l.sqlite")
    assert res["agreement"] == 1.0 and res["a"]["model"].endswith(server.model)


def test_bad_suites_are_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi"}\n')
    with pytest.raises(StillhouseError, match=r"bad\.jsonl:1"):
        load_suite(str(bad))
    with pytest.raises(StillhouseError, match="is not a file"):
        load_suite(str(tmp_path / "missing.jsonl"))
