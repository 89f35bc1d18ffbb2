"""KGW watermark: keys, green lists, the engine hook through the real server and openai client, and detection."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai
import pytest
from fake_upstream import cli
from transformers import AutoTokenizer
from typer.testing import CliRunner

from stillhouse.cli import app
from stillhouse.core.errors import StillhouseError
from stillhouse.forensics.detect import detect_ids, detect_texts, null_distribution, score_pairs, windows
from stillhouse.forensics.green import green_mask, is_green
from stillhouse.forensics.key import WatermarkKey, keygen, load_key
from stillhouse.serve import serve_in_background

PROMPTS = ["What is 12 plus 30?", "Reverse the word planet.", "Who are you?", "Sort these numbers: 5, 3, 9."]


def _answers(base_url: str, model: str, n: int) -> list[str]:
    """n concurrent 200-token answers (so the engine batches them, watermark included), seeded."""
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)

    def one(i: int) -> str:
        messages = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
        extra = {"ignore_eos": True}
        reply = client.chat.completions.create(
            model=model, messages=messages, temperature=1.0, max_tokens=200, seed=i, extra_body=extra
        )
        return reply.choices[0].message.content

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, WatermarkKey]:
    """A fixed key (so the test's outcome does not depend on the draw), in a key file as keygen writes it."""
    path = tmp_path_factory.mktemp("wm") / "key.json"
    k = WatermarkKey(bytes(range(32)))
    body = {"version": 1, "secret": k.secret.hex(), "gamma": k.gamma, "delta": k.delta, "context": k.context}
    path.write_text(json.dumps(body))
    assert load_key(path) == k
    return path, k


@pytest.fixture(scope="module")
def texts(tiny_model_dir: Path, key) -> dict[str, list[str]]:
    """200-token answers of the tiny model served with and without the watermark (same seeds)."""
    with serve_in_background(tiny_model_dir, watermark=key[1]) as s:
        marked = _answers(s.base_url, s.model, 6)
    with serve_in_background(tiny_model_dir) as s:
        plain = _answers(s.base_url, s.model, 6)
    return {"marked": marked, "plain": plain}


def test_key_file_round_trips_is_private_and_never_overwritten(tmp_path: Path):
    path = tmp_path / "k.json"
    k = keygen(path, gamma=0.5, delta=3.0, context=2)
    assert load_key(path) == k and path.stat().st_mode & 0o777 == 0o600
    assert k.secret.hex() not in repr(k) and k.fingerprint in repr(k)
    with pytest.raises(StillhouseError, match="already exists"):
        keygen(path)
    path.write_text("{}")
    with pytest.raises(StillhouseError, match="not a version-1 watermark key"):
        load_key(path)
    with pytest.raises(StillhouseError, match="gamma must be"):
        WatermarkKey(b"x" * 32, gamma=1.0)


def test_green_lists_hold_gamma_of_the_vocabulary_and_depend_on_key_and_context():
    k1, k2 = WatermarkKey(b"a" * 32), WatermarkKey(b"b" * 32)
    masks = np.stack([green_mask(k1, (c,), 4096) for c in range(50)])
    assert abs(masks.mean() - 0.25) < 0.01
    assert (green_mask(k1, (7,), 4096) != green_mask(k2, (7,), 4096)).mean() > 0.3
    assert (green_mask(k1, (7,), 4096) != green_mask(k1, (8,), 4096)).mean() > 0.3
    tokens = [3, 99, 4000]
    assert list(is_green(k1, [(7,)] * 3, tokens)) == list(green_mask(k1, (7,), 4096)[tokens])


def test_served_answers_carry_the_watermark_and_plain_ones_do_not(texts, key, tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    marked = [detect_texts(key[1], [t], tok) for t in texts["marked"]]
    assert all(s.scored >= 100 and s.p_value < 1e-4 for s in marked), marked
    plain = [detect_texts(key[1], [t], tok) for t in texts["plain"]]
    assert all(s.p_value > 1e-3 for s in plain), plain


def test_repeated_pairs_are_scored_once():
    k = WatermarkKey(b"c" * 32)
    green_pair = next(((5,), t) for t in range(100) if is_green(k, [(5,)], [t])[0])
    ids = [5, green_pair[1]] * 100  # one green pair, and its mirror, repeated
    naive, dedup = detect_ids(k, [ids], dedup=False), detect_ids(k, [ids])
    assert naive.scored == 199 and dedup.scored == 2 and dedup.p_value > 0.05 and naive.p_value < dedup.p_value


def test_p_values_are_uniform_over_random_keys_on_unmarked_text(texts, tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts["plain"]]
    pairs = [p for i in ids for p in windows(i, 1)]
    null = null_distribution(WatermarkKey(b"d" * 32), pairs, n=300).summary()
    assert null["ks_uniform_p"] > 0.01 and null["fpr_at_0.01"] <= 0.03, null
    assert score_pairs(WatermarkKey(b"d" * 32), pairs).scored == len(set(pairs))


def test_the_key_never_reaches_responses_or_logs(tiny_model_dir, key, caplog):
    secret = key[1].secret.hex()
    with caplog.at_level(logging.DEBUG), serve_in_background(tiny_model_dir, watermark=key[1]) as s:
        client = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model=s.model, messages=[{"role": "user", "content": "Who are you?"}], max_tokens=8, logprobs=True
        )
        body = raw.text
    assert secret not in body and secret not in caplog.text
    assert key[1].fingerprint in caplog.text


def test_cli_keygen_and_detect_in_process(tmp_path: Path, texts, tiny_model_dir):
    runner = CliRunner()
    path = tmp_path / "cli.key"
    res = runner.invoke(app, ["watermark", "keygen", "-o", str(path)])
    assert res.exit_code == 0 and load_key(path).fingerprint in res.stdout
    assert load_key(path).secret.hex() not in res.output
    again = runner.invoke(app, ["watermark", "keygen", "-o", str(path)])
    assert isinstance(again.exception, StillhouseError) and "exists" in str(again.exception)
    sample = tmp_path / "plain.txt"
    sample.write_text(texts["plain"][0])
    args = ["watermark", "detect", str(sample), "--key", str(path), "--tokenizer", str(tiny_model_dir), "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["scored"] > 50 and 0 < result["p_value"] <= 1 and result["key"]["fingerprint"].startswith("wm_")
    bad = runner.invoke(app, ["watermark", "detect", str(tmp_path / "missing.txt"), "--key", str(path)])
    assert isinstance(bad.exception, StillhouseError) and "cannot read" in str(bad.exception)


def test_cli_detects_the_served_watermark(tmp_path: Path, texts, key, tiny_model_dir):
    """The real console entry point, in a subprocess, on the server's own output."""
    sample = tmp_path / "marked.txt"
    sample.write_text(texts["marked"][0])
    res = cli("watermark", "detect", str(sample), "--key", str(key[0]), "--tokenizer", str(tiny_model_dir), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["watermarked_at_1e-4"] is True
    bad = cli("watermark", "detect", str(sample), "--key", str(tmp_path / "nokey.json"))
    assert bad.returncode == 2 and "keygen" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
