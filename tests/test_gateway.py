"""The gateway in front of the real server (Ember) on loopback, driven by the real openai client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
from fake_upstream import Reply, Upstream

from stillhouse.core.errors import StillhouseError
from stillhouse.embedded import teacher_path
from stillhouse.gateway.keys import KeyStore
from stillhouse.gateway.log import SEGMENTS, read_log
from stillhouse.gateway.proxy import gateway_in_background
from stillhouse.serve import serve_in_background

ASK = [{"role": "user", "content": "What is 2 plus 3?"}]


@pytest.fixture(scope="module")
def ember():
    with serve_in_background(teacher_path()) as s:
        yield s


@pytest.fixture()
def keys(tmp_path: Path) -> Path:
    return tmp_path / "keys.sqlite"


def _key(path: Path, name: str = "alice", **limits) -> str:
    with KeyStore(path) as store:
        return store.create(name, **limits)[1]


def _rows(log_dir: Path, gw) -> list[dict]:
    gw.gateway.log.flush()
    return read_log(log_dir).to_pylist()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stillhouse.cli", *args], capture_output=True, text=True, timeout=60)


def test_chat_stream_and_errors_pass_through_and_are_logged(ember, keys, tmp_path):
    secret = _key(keys)
    direct = openai.OpenAI(base_url=ember.base_url, api_key="none", max_retries=0)
    with gateway_in_background(ember.base_url, keys, tmp_path / "log") as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0)
        assert [m.id for m in client.models.list().data] == [ember.model]
        args = dict(model=ember.model, messages=ASK, max_tokens=16, temperature=0)
        via, plain = client.chat.completions.create(**args), direct.chat.completions.create(**args)
        assert via.choices[0].message.content == plain.choices[0].message.content and via.usage == plain.usage
        stream = dict(args, stream=True, stream_options={"include_usage": True})
        chunks, reference = (
            list(client.chat.completions.create(**stream)),
            list(direct.chat.completions.create(**stream)),
        )
        assert [c.choices[0].delta.content for c in chunks if c.choices] == [
            c.choices[0].delta.content for c in reference if c.choices
        ]
        assert chunks[-1].usage == reference[-1].usage
        with pytest.raises(openai.NotFoundError) as via_err:
            client.chat.completions.create(model="no-such-model", messages=ASK)
        with pytest.raises(openai.NotFoundError) as direct_err:
            direct.chat.completions.create(model="no-such-model", messages=ASK)
        assert via_err.value.body == direct_err.value.body
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=ember.model, messages=ASK, temperature=5)
        text = client.completions.create(model=ember.model, prompt="Reverse the word stone.", max_tokens=8)
        rows = _rows(tmp_path / "log", gw)
    key_id = KeyStore(keys).list()[0].id
    chat = [r for r in rows if r["endpoint"] == "chat"]
    assert [r["status"] for r in chat] == [200, 200, 404, 400]
    assert all(r["key_id"] == key_id and r["source"] == "127.0.0.1" and "OpenAI" in r["user_agent"] for r in rows)
    assert chat[0]["prompt"] == "What is 2 plus 3?" and chat[0]["answer"] == via.choices[0].message.content
    assert chat[1]["stream"] and chat[1]["answer"] == chat[0]["answer"]
    assert chat[1]["completion_tokens"] == via.usage.completion_tokens
    assert chat[0]["prompt_tokens"] == via.usage.prompt_tokens and chat[0]["latency_ms"] > 0
    assert "model_not_found" in chat[2]["error"]
    assert [r["answer"] for r in rows if r["endpoint"] == "completions"] == [text.choices[0].text]


def test_missing_unknown_and_revoked_keys_get_401_and_are_logged(ember, keys, tmp_path):
    secret = _key(keys)
    with gateway_in_background(ember.base_url, keys, tmp_path / "log") as gw:
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(gw.base_url + "/models", timeout=10)  # no Authorization header at all
        assert missing.value.code == 401 and json.loads(missing.value.read())["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError) as e:
            openai.OpenAI(base_url=gw.base_url, api_key="shk-not-a-key", max_retries=0).models.list()
        assert e.value.body["code"] == "invalid_api_key"
        client = openai.OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0)
        client.models.list()
        revoked = _cli("keys", "revoke", "alice", "--keys", str(keys))  # another process, as an operator would
        assert revoked.returncode == 0, revoked.stderr
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
        rows = _rows(tmp_path / "log", gw)
    assert [(r["status"], r["key_id"] is None) for r in rows] == [(401, True), (401, True), (200, False), (401, True)]
    assert all(r["source"] == "127.0.0.1" for r in rows)


def test_limits_answer_429_with_retry_after(ember, keys, tmp_path):
    rpm_key, tpm_key = _key(keys, "few", rpm=2), _key(keys, "small", tpm=40)
    with gateway_in_background(ember.base_url, keys, tmp_path / "log") as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=rpm_key, max_retries=0)
        for _ in range(2):
            r = client.chat.completions.with_raw_response.create(model=ember.model, messages=ASK, max_tokens=2)
        assert r.headers["x-ratelimit-limit-requests"] == "2" and r.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model=ember.model, messages=ASK, max_tokens=2)
        assert e.value.body["code"] == "rate_limit_exceeded" and e.value.body["type"] == "requests"
        assert 25 <= int(e.value.response.headers["Retry-After"]) <= 30  # one request per 30 s
        other = openai.OpenAI(base_url=gw.base_url, api_key=tpm_key, max_retries=0)  # limits are per key
        other.chat.completions.create(model=ember.model, messages=ASK, max_tokens=30)  # ~42 tokens: in debt now
        with pytest.raises(openai.RateLimitError) as e:
            other.chat.completions.create(model=ember.model, messages=ASK, max_tokens=2)
        assert e.value.body["type"] == "tokens" and int(e.value.response.headers["Retry-After"]) >= 1
        rows = _rows(tmp_path / "log", gw)
    assert [r["status"] for r in rows] == [200, 200, 429, 200, 429]
    assert rows[2]["error"] == "rate_limit_requests" and rows[4]["error"] == "rate_limit_tokens"


def test_hashes_retention_keeps_no_text_and_segments_roll(ember, keys, tmp_path):
    secret = _key(keys)
    with gateway_in_background(ember.base_url, keys, tmp_path / "log", retention="hashes", segment_rows=2) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0)
        for i in range(3):
            client.completions.create(model=ember.model, prompt=f"Reverse the word stone{i}.", max_tokens=4)
            gw.gateway.log.flush()  # one flush per request, so SQLite reaches segment_rows before the third
        rows = _rows(tmp_path / "log", gw)
    assert len(list((tmp_path / "log" / SEGMENTS).glob("part-*.parquet"))) == 1
    assert len(rows) == 3 and all(r["prompt"] is None and r["answer"] is None for r in rows)
    assert all(len(r["prompt_sha256"]) == 64 and len(r["sketch"]) == 256 for r in rows)


def test_gateway_refuses_bad_options_in_one_line(tmp_path):
    with pytest.raises(StillhouseError, match="--upstream must be"):
        gateway_in_background("localhost:8000", tmp_path / "k.sqlite", tmp_path / "log").__enter__()
    r = _cli("gateway", "--upstream", "ftp://x", "--keys", str(tmp_path / "k.sqlite"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--upstream must be" in r.stderr
    with KeyStore(tmp_path / "k.sqlite") as store, pytest.raises(StillhouseError, match="--rpm must be at least 1"):
        store.create("bob", rpm=0)


def test_keys_cli_create_list_revoke(tmp_path):
    path = str(tmp_path / "keys.sqlite")
    made = _cli("keys", "create", "carol", "--rpm", "60", "--keys", path)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("shk-") and secret not in (tmp_path / "keys.sqlite").read_bytes().decode(errors="ignore")
    listed = _cli("keys", "list", "--json", "--keys", path)
    [row] = json.loads(listed.stdout)
    assert row["name"] == "carol" and row["rpm"] == 60 and row["revoked"] is None
    with KeyStore(path) as store:
        assert store.lookup(secret).id == row["id"]
        store.revoke(row["id"])
        assert store.lookup(secret) is None and store.list()[0].revoked <= time.time()
        with pytest.raises(StillhouseError, match="no live key"):
            store.revoke(row["id"])


def test_upstream_faults_pass_through_or_become_502(keys, tmp_path):
    """Fault injection with the scripted upstream: its own 429 and headers reach the client; a drop is a 502."""
    secret = _key(keys)
    script = {"limited": Reply(429, headers={"Retry-After": "7"}), "dropped": Reply(mode="drop")}
    with (
        Upstream(lambda call: script.get(call.prompt)) as up,
        gateway_in_background(up.base_url, keys, tmp_path / "log", upstream_key="sk-upstream") as gw,
    ):
        client = openai.OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0)
        assert client.chat.completions.create(model="teacher-1", messages=[{"role": "user", "content": "fine"}])
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model="teacher-1", messages=[{"role": "user", "content": "limited"}])
        assert e.value.response.headers["Retry-After"] == "7" and e.value.body["message"] == "scripted 429"
        with pytest.raises(openai.InternalServerError) as e:
            client.chat.completions.create(model="teacher-1", messages=[{"role": "user", "content": "dropped"}])
        assert e.value.status_code == 502 and e.value.body["code"] == "upstream_unavailable"
        rows = _rows(tmp_path / "log", gw)
    assert all(c.headers["Authorization"] == "Bearer sk-upstream" for c in up.calls)  # never the client's key
    assert [r["status"] for r in rows] == [200, 429, 502] and rows[2]["error"].startswith("upstream:")
