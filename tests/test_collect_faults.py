"""`collect` under faults, against a scripted upstream on loopback: Retry-After in its three forms,
429 storms, 5xx/timeouts/garbage/truncation/dropped connections, 401/404, rate-limit headers, RPM
and TPM pacing, a full disk, and a SIGKILL in the middle of a run."""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import pytest
from fake_upstream import MODEL, Call, Reply, Upstream, cli, run, write_prompts

from stillhouse import RunStore, StillhouseError, collect
from stillhouse.provenance.ledger import Ledger


def by_prompt(up: Upstream) -> dict[str, list[Call]]:
    calls: dict[str, list[Call]] = {}
    for c in up.calls:
        calls.setdefault(c.prompt, []).append(c)
    return calls


def test_retry_after_in_seconds_http_date_and_ms_is_honoured_without_holding_back_others(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 30)
    kinds = {f"what is {i} + 1?": k for i, k in [(5, "seconds"), (11, "date"), (17, "ms"), (23, "seconds"), (29, "ms")]}
    dates: dict[str, str] = {}

    def script(call: Call) -> Reply | None:
        kind = kinds.get(call.prompt)
        if kind is None or call.attempt > 1:
            return None
        if kind == "date":
            dates[call.prompt] = formatdate(time.time() + 2, usegmt=True)
            return Reply(429, headers={"Retry-After": dates[call.prompt]})
        if kind == "ms":  # both, as OpenAI sends them: the precise one wins
            return Reply(429, headers={"retry-after-ms": "300", "Retry-After": "1"})
        return Reply(429, headers={"Retry-After": "1"})

    with Upstream(script) as up:
        res = run(prompts, up, tmp_path / "r")
    assert res.ok == 30 and res.retries == 5
    calls = by_prompt(up)
    for prompt, kind in kinds.items():
        first, second = calls[prompt]
        gap = second.t - first.sent_at
        if kind == "seconds":
            assert gap >= 1.0, gap
        elif kind == "ms":
            assert 0.3 <= gap < 0.9, gap
        else:  # an HTTP date (1 s resolution): not before the instant it names
            assert second.wall >= parsedate_to_datetime(dates[prompt]).timestamp(), (second.wall, dates[prompt])
    # sporadic 429s delay only their own requests: every other prompt was answered before any retry
    retries = [calls[p][1].t for p in kinds]
    assert max(c[0].sent_at for p, c in calls.items() if p not in kinds) < min(retries)


def test_a_due_retry_goes_ahead_of_queued_fresh_requests(tmp_path: Path) -> None:
    """A retry has waited its Retry-After already: it must not also wait behind the queue (2C deep)."""
    prompts = write_prompts(tmp_path / "p.jsonl", 40)
    limited = "what is 3 + 1?"

    def script(call: Call) -> Reply | None:
        if call.prompt == limited and call.attempt == 1:
            return Reply(429, headers={"retry-after-ms": "150"})
        return None

    with Upstream(script, latency=0.05) as up:
        res = run(prompts, up, tmp_path / "r", concurrency=2)
    assert res.ok == 40 and res.retries == 1
    first, retry = by_prompt(up)[limited]
    after_due = [c for c in up.calls if c.t >= first.sent_at + 0.15]
    assert retry in after_due[:3], [c.prompt for c in after_due[:6]]  # first in line, not behind 4 queued


def test_429_storm_holds_back_the_whole_run_until_retry_after(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 64)
    storm: dict[str, float] = {}

    def script(call: Call) -> Reply | None:
        if "start" not in storm and len(up.calls) > 32:
            storm["start"] = call.t
        if "start" not in storm:  # staggered answers, so workers come back one by one
            return Reply(delay=0.02 + 0.008 * (len(up.calls) % 16))
        if call.t < storm["start"] + 0.7:
            return Reply(429, headers={"retry-after-ms": "700"})
        return None

    with Upstream(script) as up:
        res = run(prompts, up, tmp_path / "r", concurrency=16)
    assert res.ok == 64
    start = storm["start"]
    in_storm = [c for c in up.calls if start <= c.t < start + 0.7]
    # without a shared gate each of the 16 workers would send into the storm; with it the whole run
    # waits once half of the last 16 answers are 429s (8), give or take requests already on their way
    assert 8 <= len(in_storm) <= 11, len(in_storm)
    for c in up.calls:  # and no request came back before its own Retry-After
        later = [d for d in up.calls if d.key == c.key and d.t > c.t]
        if c.status == 429 and later:
            assert later[0].t - c.sent_at >= 0.7


def test_5xx_timeouts_garbage_truncation_and_drops_are_retried_other_4xx_are_not(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 12)
    faults = {
        "reverse the word w0": Reply(500),
        "reverse the word w2": Reply(502),
        "reverse the word w4": Reply(503, headers={"Retry-After": "0"}),
        "reverse the word w6": Reply(delay=1.5),  # past the 0.4 s timeout
        "reverse the word w8": Reply(raw=b"<html>upstream error</html>{"),  # 200 with garbage
        "reverse the word w10": Reply(mode="truncate"),
        "what is 1 + 1?": Reply(mode="drop"),
        "what is 3 + 1?": Reply(529, json={"error": {"message": "overloaded"}}),
        "what is 5 + 1?": Reply(raw=b'{"error": {"message": "busy"}}'),  # a 200 that is not an answer
        "what is 7 + 1?": Reply(400, json={"error": {"message": "prompt too long"}}),
    }

    def script(call: Call) -> Reply | None:
        fault = faults.get(call.prompt)
        return fault if fault is not None and (call.attempt == 1 or fault.status == 400) else None

    with Upstream(script) as up:
        res = run(prompts, up, tmp_path / "r", timeout_s=0.4)
        assert (res.ok, res.failed, res.retries) == (11, 1, 9)
        calls = by_prompt(up)
        assert {p: len(c) for p, c in calls.items() if p in faults} == {p: 2 for p in faults} | {"what is 7 + 1?": 1}
        assert len(calls["what is 9 + 1?"]) == len(calls["what is 11 + 1?"]) == 1
        with RunStore(tmp_path / "r") as store:
            ok = list(store.exchanges("ok"))
            (bad,) = list(store.exchanges("error"))
        assert all(e.texts() == [f"{e.messages[-1]['content']} => ok"] for e in ok)
        assert sorted(e.attempts for e in ok) == [1, 1] + [2] * 9
        assert bad.attempts == 1 and "HTTP 400: prompt too long" in bad.error

        up.reset()  # a re-run re-sends only what has no committed answer: the 400
        res = run(prompts, up, tmp_path / "r", timeout_s=0.4)
        assert (res.sent, res.skipped, res.failed) == (1, 11, 1) and len(up.calls) == 1


def test_401_stops_the_whole_run_at_once_with_one_line(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 200)
    with Upstream(lambda c: Reply(401, json={"error": {"message": "Incorrect API key provided"}}, delay=0.05)) as up:
        res = cli("collect", str(prompts), "--base-url", up.base_url, "--model", MODEL, "--out", str(tmp_path / "r"),
                  "--purpose", "distillation", "--concurrency", "4")  # fmt: skip
        assert res.returncode == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: HTTP 401 from http://127.0.0.1:"), res.stderr
        assert "Incorrect API key provided" in lines[0] and "check the API key" in lines[0]
        assert len(up.calls) <= 4  # the first wave only
    with Ledger(tmp_path / "r" / "ledger.sqlite") as led:
        (summary,) = led.runs()
    assert summary["stop_reason"].startswith("error: HTTP 401") and summary["succeeded"] == 0 and summary["ok"] is False


def test_a_run_whose_every_request_is_rejected_gives_up_early(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 200)
    msg = {"error": {"message": "logprobs are not supported by this model"}}
    with Upstream(lambda c: Reply(400, json=msg)) as up:
        with pytest.raises(StillhouseError, match="20 requests failed and none succeeded; last: HTTP 400: logprobs"):
            run(prompts, up, tmp_path / "r", top_logprobs=5, concurrency=4)
        assert 20 <= len(up.calls) <= 24  # not 200


def test_unknown_model_404_stops_with_a_clear_error(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 20)
    msg = {"error": {"message": "The model `nope` does not exist", "code": "model_not_found"}}
    with Upstream(lambda c: Reply(404, json=msg) if c.body["model"] != MODEL else None) as up:
        with pytest.raises(StillhouseError, match=r"HTTP 404 from .*: The model `nope` does not exist \(is 'nope'"):
            collect(
                prompts, base_url=up.base_url, model="nope", out=tmp_path / "r", purpose="evaluation", concurrency=4
            )
        assert len(up.calls) <= 4


def test_rate_limit_headers_rpm_and_tpm_pace_the_run(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 40)
    with Upstream() as up:
        run(prompts, up, tmp_path / "rpm", rpm=1200)  # 20/s with one second's burst: 20 at once, 20 paced
        span = up.calls[-1].t - up.calls[0].t
        assert 0.85 <= span < 2.0, span

        up.reset()
        run(prompts, up, tmp_path / "tpm", tpm=12000, max_tokens=5)  # ~10 tokens a request, 200 tokens/s
        span = up.calls[-1].t - up.calls[0].t
        assert 0.5 <= span < 2.5, span

    def exhausted(call: Call) -> Reply | None:
        if len(up2.calls) == 10:
            return Reply(headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "600ms"})
        return None

    with Upstream(exhausted) as up2:
        run(prompts, up2, tmp_path / "hdr", concurrency=1)
        tenth, eleventh = up2.calls[9], up2.calls[10]
        assert eleventh.t - tenth.sent_at >= 0.6
        assert max(b.t - a.sent_at for a, b in zip(up2.calls, up2.calls[1:], strict=False) if a is not tenth) < 0.3


def test_full_disk_fails_with_one_line_and_the_store_resumes(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 400)
    out = tmp_path / "r"

    def small_disk() -> None:  # files may not grow past 160 KiB: the store fills up mid-run
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (160 * 1024, 160 * 1024))

    args = ["collect", str(prompts), "--model", MODEL, "--out", str(out), "--purpose", "evaluation"]
    with Upstream(latency=0.002) as up:
        src = str(Path(__file__).resolve().parents[1] / "src")
        res = subprocess.run(
            [sys.executable, "-m", "stillhouse.cli", *args, "--base-url", up.base_url],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
            preexec_fn=small_disk,
        )
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: cannot write to {out}/store.sqlite"), res.stderr
        with RunStore(out) as store:
            kept = store.counts()["ok"]
        assert 0 < kept < 400
        up.reset()
        res = cli(*args, "--base-url", up.base_url)
        assert res.returncode == 0, res.stderr
    with RunStore(out) as store:
        assert store.counts()["ok"] == 400
    assert len(up.calls) == 400 - kept and set(up.counts.values()) == {1}


def test_sigkill_mid_run_then_resume_sends_only_what_was_not_committed(tmp_path: Path) -> None:
    n = 300
    prompts = write_prompts(tmp_path / "p.jsonl", n)
    out = tmp_path / "r"
    args = ["collect", str(prompts), "--model", MODEL, "--out", str(out), "--purpose", "distillation",
            "--concurrency", "8", "--system", "Answer briefly."]  # fmt: skip
    src = str(Path(__file__).resolve().parents[1] / "src")
    with Upstream(latency=0.02) as up:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stillhouse.cli", *args, "--base-url", up.base_url],
            env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120  # a loaded CI box can take a minute to import torch
        while time.monotonic() < deadline:
            if (out / "store.sqlite").exists() and _committed(out) >= 80:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with RunStore(out) as store:
            before = {e.key for e in store.exchanges("ok")}
        sent_before = set(up.counts)
        assert 80 <= len(before) < n, len(before)
        in_flight = sent_before - before  # sent, maybe answered, but not committed when killed

        up.reset()
        res = cli(*args, "--base-url", up.base_url)
        assert res.returncode == 0, res.stderr

    with RunStore(out) as store:
        rows = list(store.exchanges())
    assert len(rows) == n and len({r.prompt_id for r in rows}) == n and all(r.status == "ok" for r in rows)
    every = {r.key for r in rows}
    resent = set(up.counts)
    assert resent == every - before  # exactly the uncommitted requests, each once
    assert set(up.counts.values()) == {1}
    assert in_flight <= resent and not (before & resent)  # nothing committed was paid for twice
    with Ledger(out / "ledger.sqlite") as led:
        assert led.verify() == []
        assert [e.kind for e in led.entries()] == ["collect.start", "collect.start", "collect.end"]


def _committed(out: Path) -> int:
    db = sqlite3.connect(out / "store.sqlite", timeout=1)
    try:
        return db.execute("SELECT COUNT(*) FROM exchanges WHERE status = 'ok'").fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0
    finally:
        db.close()
