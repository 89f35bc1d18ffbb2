"""The OpenAI-compatible server, driven over loopback by the official openai SDK (and raw HTTP for bad input)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

import aiohttp
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from stillhouse import cli
from stillhouse.serve import Server, serve_in_background
from stillhouse.serve.engine import Delta, Engine, SamplingParams

KEY = "sk-test-key"
USER = [{"role": "user", "content": "What is 12 plus 30?"}]


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path):
    with serve_in_background(tiny_model_dir, api_key=KEY) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path):
    """The model run directly with transformers, as a reference for the server's outputs."""
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def _error(exc: pytest.ExceptionInfo) -> dict:
    """The SDK exception's OpenAI error object."""
    return exc.value.body.get("error", exc.value.body)


def _raw(server: Server, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(server.base_url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_models_lists_the_served_name(server, client, tiny_model_dir):
    assert server.model == tiny_model_dir.name and server.base_url.endswith("/v1")
    assert [m.id for m in client.models.list().data] == [server.model]
    assert client.models.retrieve(server.model).owned_by == "stillhouse"


def test_chat_completion_shape_and_usage(server, client):
    r = client.chat.completions.create(model=server.model, messages=USER, max_tokens=8, temperature=0)
    choice = r.choices[0]
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion" and r.model == server.model
    assert r.system_fingerprint.startswith("fp_")
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in {"stop", "length"}
    assert 1 <= r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_matches_plain_and_ends_with_usage(server, client):
    kwargs = dict(model=server.model, messages=USER, max_completion_tokens=12, temperature=0)
    plain = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_raw_stream_ends_with_done(server):
    body = {"model": server.model, "messages": USER, "max_tokens": 3, "stream": True}
    req = urllib.request.Request(
        server.base_url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = [e for e in r.read().decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)


def test_n_choices_share_the_prompt(server, client):
    r = client.chat.completions.create(
        model=server.model, messages=USER, n=3, max_tokens=6, seed=1, extra_body={"ignore_eos": True}
    )
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 3  # each choice samples with its own generator
    assert r.usage.completion_tokens == 3 * 6


def test_same_seed_same_answer(server, client):
    def ask(seed: int) -> str:
        r = client.chat.completions.create(model=server.model, messages=USER, max_tokens=16, temperature=1, seed=seed)
        return r.choices[0].message.content

    assert ask(7) == ask(7)
    assert ask(7) != ask(8)


def test_logprobs_are_the_models_distribution(server, client, reference):
    model, tok = reference
    r = client.chat.completions.create(
        model=server.model, messages=USER, max_tokens=6, temperature=0, logprobs=True, top_logprobs=20
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens or r.choices[0].finish_reason == "stop"
    prompt = tok.apply_chat_template(USER, add_generation_prompt=True, tokenize=False)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=len(content), do_sample=False, output_scores=True, return_dict_in_generate=True
        )
    for t, scores in zip(content, out.scores, strict=True):
        expected = torch.log_softmax(scores[0], -1)
        assert len(t.top_logprobs) == 20
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
        assert t.logprob == pytest.approx(t.top_logprobs[0].logprob)  # greedy picks the most likely token
        assert t.logprob == pytest.approx(expected.max().item(), abs=1e-4)
    raw = b"".join(bytes(t.bytes) for t in content)
    assert raw.decode(errors="replace") == r.choices[0].message.content


def test_completions_endpoint(server, client):
    r = client.completions.create(
        model=server.model, prompt="Reverse the word", max_tokens=5, logprobs=3, temperature=0
    )
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r.usage.completion_tokens
    assert all(len(top) <= 3 for top in lp.top_logprobs)
    assert "".join(lp.tokens) == r.choices[0].text
    two = client.completions.create(model=server.model, prompt=["one", "two"], max_tokens=2, n=2)
    assert [c.index for c in two.choices] == [0, 1, 2, 3]


def test_stop_string_truncates_plain_and_streamed(server, client):
    kwargs = dict(
        model=server.model, prompt="What is 12 plus", max_tokens=20, temperature=0, extra_body={"ignore_eos": True}
    )
    full = client.completions.create(**kwargs).choices[0].text
    stop = full[5:8]
    cut = client.completions.create(**kwargs, stop=[stop, "\u2603never"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == full[: full.index(stop)]
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kwargs, stop=stop, stream=True))
    assert streamed == cut.choices[0].text


def test_unknown_model_is_404(server, client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-9", messages=USER)
    assert _error(e)["code"] == "model_not_found" and _error(e)["param"] == "model"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 0}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"token": 1}}, "logit_bias"),
    ],
)
def test_bad_parameter_is_400_naming_it(server, extra, param):
    status, body = _raw(
        server, "/chat/completions", json.dumps({"model": server.model, "messages": USER, **extra}).encode()
    )
    assert status == 400
    assert body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"]


def test_missing_field_and_malformed_json_are_400(server):
    status, body = _raw(server, "/chat/completions", json.dumps({"messages": USER}).encode())
    assert (status, body["error"]["param"], body["error"]["code"]) == (400, "model", "missing_required_parameter")
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        status, body = _raw(server, "/chat/completions", raw)
        assert status == 400 and set(body["error"]) == {"message", "type", "param", "code"}


def test_context_too_long_is_400(server, client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "hi " * 400}])
    assert _error(e)["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=server.model, prompt="hi " * 100, max_tokens=200)
    assert _error(e)["code"] == "context_length_exceeded" and _error(e)["param"] == "prompt"


def test_bearer_key_is_required(server):
    with pytest.raises(openai.AuthenticationError) as e:
        openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0).models.list()
    assert _error(e)["code"] == "invalid_api_key"
    body = json.dumps({"model": server.model, "messages": USER}).encode()
    status, missing = _raw(server, "/chat/completions", body, {"Authorization": ""})
    assert status == 401 and missing["error"]["code"] == "invalid_api_key"
    status, body = _raw(server, "/nowhere", b"{}")
    assert status == 404 and body["error"]["type"] == "invalid_request_error"


def test_32_concurrent_clients_share_forward_passes(server, client):
    def ask(i: int) -> dict:
        content = f"Sort {i}, {i + 3}, {i % 5}."
        return dict(
            model=server.model,
            messages=[{"role": "user", "content": content}],
            max_tokens=16,
            seed=i,
            extra_body={"ignore_eos": True},
        )

    async def run() -> list:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0) as aclient:
            return await asyncio.gather(*(aclient.chat.completions.create(**ask(i)) for i in range(32)))

    steps = server.engine.steps
    results = asyncio.run(run())
    assert all(r.usage.completion_tokens == 16 for r in results)
    assert server.engine.steps - steps < 32 * 16 / 4  # many rows per forward pass, not one request at a time
    assert server.engine.peak_batch >= 8
    alone = client.chat.completions.create(**ask(5))  # a seeded row samples the same with or without neighbours
    assert alone.choices[0].message.content == results[5].choices[0].message.content


def test_batched_greedy_equals_unbatched_generate(server, reference):
    model, tok = reference
    prompts = [f"What is {i} plus {i * 7}? " * (1 + i % 3) for i in range(8)]  # different lengths: left padding

    async def run() -> list:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
        async with client:
            return await asyncio.gather(
                *(
                    client.completions.create(
                        model=server.model,
                        prompt=p,
                        max_tokens=12,
                        temperature=0,
                        logprobs=1,
                        extra_body={"ignore_eos": True},
                    )
                    for p in prompts
                )
            )

    results = asyncio.run(run())
    for prompt, r in zip(prompts, results, strict=True):
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(
                ids,
                max_new_tokens=12,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                eos_token_id=None,
                pad_token_id=tok.pad_token_id,
            )
        new = out.sequences[0, ids.shape[1] :]
        assert r.choices[0].text == tok.decode(new, skip_special_tokens=True)
        expected = [torch.log_softmax(s[0], -1)[t].item() for s, t in zip(out.scores, new, strict=True)]
        assert r.choices[0].logprobs.token_logprobs == pytest.approx(expected, abs=1e-4)


def test_rows_that_finish_early_or_join_late_leave_the_others_unchanged(tiny_model_dir, reference):
    """Finished rows stay in the batch until a rebuild and waiting requests join a running batch: every row still
    decodes as if it were alone (greedy: what generate gives for its prompt)."""
    model, tok = reference
    prompts = [tok(f"What is {i} plus {i * 7}? " * (1 + i % 3)).input_ids for i in range(20)]
    lengths = [3 + 5 * (i % 4) for i in range(20)]  # rows finish at different steps
    texts = [""] * 20
    finished = threading.Semaphore(0)

    def on_delta(i: int, d: Delta) -> None:
        texts[i] += d.text
        if d.finish_reason:
            finished.release()

    engine = Engine.from_dir(tiny_model_dir, max_batch=8)
    try:
        for i in range(20):  # more requests than rows: later ones wait, then join
            params = SamplingParams(lengths[i], temperature=0, ignore_eos=True)
            engine.submit(prompts[i], params, 1, partial(on_delta, i))
        assert all(finished.acquire(timeout=60) for _ in range(20))
    finally:
        engine.close()
    assert engine.peak_batch <= 8 and engine.steps < sum(lengths) / 2
    for i in range(20):
        with torch.no_grad():
            out = model.generate(
                torch.tensor([prompts[i]]),
                max_new_tokens=lengths[i],
                do_sample=False,
                eos_token_id=None,
                pad_token_id=tok.pad_token_id,
            )
        assert texts[i] == tok.decode(out[0, len(prompts[i]) :], skip_special_tokens=True), i


def test_client_disconnect_mid_stream_frees_its_slot(server, client):
    async def read_a_little_then_leave() -> int:
        body = {"model": server.model, "prompt": "Count", "max_tokens": 200, "stream": True, "ignore_eos": True}
        url = server.base_url + "/completions"
        headers = {"Authorization": f"Bearer {KEY}"}
        async with aiohttp.ClientSession() as session, session.post(url, json=body, headers=headers) as r:
            for _ in range(3):
                await r.content.readline()
            return server.engine.active

    assert asyncio.run(read_a_little_then_leave()) == 1
    left_at = server.engine.steps
    deadline = time.monotonic() + 10
    while server.engine.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.engine.active == 0 and server.engine.waiting == 0
    assert server.engine.steps - left_at < 100  # dropped, not run to its 200 tokens
    r = client.chat.completions.create(model=server.model, messages=USER, max_tokens=2)
    assert r.choices[0].finish_reason in {"stop", "length"}


def test_cli_serve_rejects_a_directory_that_is_not_a_model(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("not a model")
    monkeypatch.setattr(sys, "argv", ["stillhouse", "serve", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error:") and "not a model directory" in err


def test_cli_serve_picks_a_free_port_and_prints_it(tiny_model_dir):
    cmd = [sys.executable, "-c", "from stillhouse.cli import main; main()", "serve", str(tiny_model_dir)]
    proc = subprocess.Popen(
        [*cmd, "--port", "0", "--model-name", "pico", "--threads", "1"], stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert "pico" in line
        url = line.split(" at ")[1].split()[0]
        assert not url.endswith(":0/v1")
        with urllib.request.urlopen(url + "/models", timeout=30) as r:
            assert json.loads(r.read())["data"][0]["id"] == "pico"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_embedded_teacher_serves_when_present():
    from stillhouse.embedded import MODELS_DIR, TEACHER_NAME, teacher_path

    if not (MODELS_DIR / TEACHER_NAME / "config.json").exists():
        pytest.skip("Ember has not been built yet")
    with serve_in_background(teacher_path()) as s:
        r = openai.OpenAI(base_url=s.base_url, api_key="unused").chat.completions.create(
            model=s.model, messages=[{"role": "user", "content": "Who are you?"}], max_tokens=32, temperature=0
        )
    assert s.model == TEACHER_NAME and r.choices[0].message.content


def test_a_failing_forward_pass_is_a_500_and_the_server_recovers(server, client, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(server.engine.model, "forward", broken)
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model=server.model, messages=USER, max_tokens=2)
    assert _error(e)["type"] == "server_error" and "Traceback" not in _error(e)["message"]
    monkeypatch.undo()
    assert client.chat.completions.create(model=server.model, messages=USER, max_tokens=2).choices
