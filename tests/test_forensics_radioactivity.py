"""Radioactivity, open and closed: a student trained (for real, briefly) on our watermarked answers is caught;
the model it started from is not. Served through the real server, collected, curated and trained by stillhouse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fake_upstream import cli
from micro_models import collect_from_ember, micro_model
from scipy import stats
from transformers import AutoTokenizer
from typer.testing import CliRunner

from stillhouse.cli import app
from stillhouse.core.errors import StillhouseError
from stillhouse.curate import CurateConfig, curate
from stillhouse.embedded import student_path, teacher_path
from stillhouse.embedded import world as micro_world
from stillhouse.forensics.chats import Chat, load_chats
from stillhouse.forensics.key import WatermarkKey
from stillhouse.forensics.radioactivity import closed_pairs, control_chats, key_spread_test, radioactivity
from stillhouse.provenance.ledger import Ledger
from stillhouse.serve import serve_in_background
from stillhouse.train import TrainConfig, train

# Ember's answers have little entropy, so a strong delta puts enough watermark in 160 of them to be learned in
# seconds; bench/radioactivity.py measures the realistic doses.
KEY = WatermarkKey(bytes(range(100, 132)), gamma=0.25, delta=8.0, context=1)


def _key_file(path: Path, key: WatermarkKey) -> Path:
    body = {"version": 1, "secret": key.secret.hex(), "gamma": key.gamma, "delta": key.delta, "context": key.context}
    path.write_text(json.dumps(body))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Ember served watermarked, its answers collected and curated, and a student trained on them."""
    root = tmp_path_factory.mktemp("radio")
    records = micro_world.make_prompts(160, seed=3, phrasings=micro_world.BASIC)
    collect_from_ember(records, root, watermark=KEY, temperature=1.0, max_tokens=80)
    curate([root / "run"], root / "data", config=CurateConfig(near_dedup=False))
    config = TrainConfig(student=str(micro_model(root / "micro")), max_steps=150, batch_size=16, lr=5e-3, seed=0)
    train(root / "data", root / "student", config)
    return {"root": root, "run": root / "run", "student": root / "student", "key": _key_file(root / "k.json", KEY)}


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(teacher_path())


def test_open_mode_catches_the_student_and_clears_a_model_that_never_saw_the_watermark(world, tok):
    chats, _ = load_chats(world["run"])
    caught = radioactivity(str(world["student"]), KEY, chats, tok, mode="open")
    clean = radioactivity(str(student_path()), KEY, chats, tok, mode="open")  # Pebble
    assert caught["p_value"] < 1e-3, caught["summary"]
    assert clean["p_value"] > 0.01, clean["summary"]
    for verdict in (caught, clean):
        assert verdict["null"]["keys"] == 100 and verdict["null"]["ks_uniform_p"] > 0.001
        f = verdict["filters"]
        assert f["positions"] == f["predicted_the_text"] + f["repeated"] + verdict["statistic"]["scored"]


@pytest.fixture(scope="module")
def control(world):
    """Ember's answers to the same prompts under 8 fresh keys, as the real server gives them."""
    return control_chats(teacher_path(), load_chats(world["run"])[0], KEY, keys=8)


def test_a_control_clears_our_own_teacher_where_the_binomial_is_biased_and_still_catches_the_student(
    world, tok, control
):
    chats, _ = load_chats(world["run"])
    assert len(control.parts) == 8 and sum(len(c) for _, c in control.parts) >= 0.9 * len(chats)
    assert all(fresh.secret != KEY.secret and fresh.delta == KEY.delta for fresh, _ in control.parts)
    # Ember's first choice, where it differs from its watermarked text, is often the token the watermark
    # rejected, so against gamma it looks far "cleaner" than chance (measured z -8.3); the control shares that
    ember = radioactivity(str(teacher_path()), KEY, chats, tok, mode="open", control=control)
    assert ember["statistic"]["z"] < -3, ember["statistic"]
    assert ember["p_value"] == ember["control"]["p_value"] > 1e-3, ember["summary"]
    assert len(ember["control"]["leave_one_out_p"]) == 8 and "fresh keys (control)" in ember["summary"]
    caught = radioactivity(str(world["student"]), KEY, chats, tok, mode="open", control=control)
    # keys differ here by ~3 points, as much as 160 chats move this student, so the test (conservative) is weak:
    # p < 1e-4 to 0.042 over 8 controls of 8 keys (t 2.0 to 9.3); bench/radioactivity.py has the dose table
    assert caught["p_value"] < 0.1 and caught["p_value"] < ember["p_value"], caught["summary"]
    assert caught["control"]["true_green_rate"] > caught["control"]["green_rate"]


def test_a_full_control_on_the_chats_a_suspect_was_served_catches_it_and_clears_our_teacher(world, tok):
    """The supervised setting: the provider knows which chats it served the suspect (here 48 of them), and every
    fresh key answers all of them, so each key is scored on the same prompts as ours."""
    served = load_chats(world["run"])[0][:48]
    full = control_chats(teacher_path(), served, KEY, keys=10, full=True)
    assert len(full.marked) == 1 and all(len(c) == len(served) for _, c in full.parts)
    ember = radioactivity(str(teacher_path()), KEY, served, tok, mode="open", control=full)
    caught = radioactivity(str(world["student"]), KEY, served, tok, mode="open", control=full)
    assert ember["control"]["shape"] == caught["control"]["shape"] == "full"
    assert ember["p_value"] > 1e-3, ember["summary"]
    # fresh keys are drawn anew each run: 1 miss of p < 1e-3 in 7 runs with 8 keys, hence 10 keys and 1e-2
    assert caught["p_value"] < 1e-2, caught["summary"]
    # copies of the text's token count against a control, not against gamma
    assert caught["control"]["true_scored"] > caught["statistic"]["scored"]


def test_the_control_test_holds_its_level_when_keys_differ_by_more_than_sampling_noise():
    """Keys whose green rates spread around 20 % (sd 1 point, about what Ember's text shows at delta 8): a pooled
    two-proportion test calls a fresh key radioactive far too often; the prediction t keeps alpha, exactly where
    the key effect dominates and conservatively where a control key's share adds its own noise."""
    rng = np.random.default_rng(0)

    def rejections(share: int, pooled: bool = False) -> float:
        hits = 0
        for _ in range(1000):
            rates = rng.normal(0.20, 0.01, 11).clip(0.01, 0.99)
            keys = [(int(rng.binomial(share, r)), share) for r in rates[1:]]
            green = int(rng.binomial(10 * share, rates[0]))
            if pooled:
                g0 = sum(g for g, _ in keys)
                table = [[green, 10 * share - green], [g0, 10 * share - g0]]
                hits += stats.fisher_exact(table, alternative="greater")[1] < 0.05
            else:
                hits += key_spread_test(green, 10 * share, keys)[1] < 0.05
        return hits / 1000

    assert 0.03 < rejections(1_000_000) < 0.075
    assert rejections(1000) < 0.05
    assert rejections(1000, pooled=True) > 0.15  # why the pooled test was replaced
    assert key_spread_test(2600, 10_000, [(200, 1000)] * 5 + [(210, 1000)] * 5)[1] < 1e-5


def test_a_control_is_refused_when_it_cannot_be_exchangeable(world, tok, control, tmp_path):
    chats, _ = load_chats(world["run"])
    exported = [Chat(c.prompt, c.answer) for c in chats]  # a JSONL export: the sampling is not recorded
    with pytest.raises(StillhouseError, match="pass the collect run directory"):
        control_chats(teacher_path(), exported, KEY)
    mixed = [*chats[:5], Chat(chats[5].prompt, chats[5].answer, {"temperature": 0.0})]
    with pytest.raises(StillhouseError, match="one sampling setting"):
        control_chats(teacher_path(), mixed, KEY)
    with pytest.raises(StillhouseError, match="at least 2 fresh keys"):
        control_chats(teacher_path(), chats, KEY, keys=1)
    with pytest.raises(StillhouseError, match="not a model directory"):
        control_chats(tmp_path, chats, KEY)
    with pytest.raises(StillhouseError, match="built from other chats"):
        radioactivity(str(world["student"]), KEY, chats[:-3], tok, mode="open", control=control)
    with pytest.raises(StillhouseError, match="closed mode needs none"):
        radioactivity("http://127.0.0.1:9/v1", KEY, chats, tok, mode="closed", control=control)


def test_closed_mode_over_the_api(world, tok):
    chats, _ = load_chats(world["run"])
    with serve_in_background(world["student"]) as s:
        caught = radioactivity(s.base_url, KEY, chats, tok, mode="closed")
    assert caught["p_value"] < 1e-2, caught["summary"]
    assert caught["null"]["keys"] == 100 and caught["filters"]["positions"] > caught["statistic"]["scored"]


def test_closed_mode_drops_pairs_copied_from_the_prompt_and_repeats():
    prompt = [1, 2, 3, 4]
    scored = closed_pairs([prompt], [[2, 3, 9, 2, 3, 9]], context=1)
    assert scored.pairs == [((3,), 9), ((9,), 2)]
    assert scored.filtered == {"positions": 5, "copied_from_prompt": 2, "repeated": 1}


def test_bad_input_is_refused_before_work(world, tok, tiny_model_dir):
    chats, _ = load_chats(world["run"])
    with pytest.raises(StillhouseError, match="for an API use --mode closed"):
        radioactivity("http://127.0.0.1:9/v1", KEY, chats, tok, mode="open")
    with pytest.raises(StillhouseError, match="at least 100"):
        radioactivity(str(world["student"]), KEY, chats, tok, null_keys=10)
    with pytest.raises(StillhouseError, match="another vocabulary"):
        radioactivity(str(tiny_model_dir), KEY, chats, tok)
    with pytest.raises(StillhouseError, match="not a collect run directory"):
        load_chats(world["root"])


def test_cli_records_the_verdict_in_the_ledger_and_an_evidence_file(world):
    ledger, evidence = world["root"] / "ledger.sqlite", world["root"] / "evidence.json"
    args = ["forensics", "radioactivity", str(world["student"]), "--key", str(world["key"]), "--texts"]
    args += [str(world["run"]), "--ledger", str(ledger), "--evidence", str(evidence)]
    res = cli(*args, "--json", timeout=120)
    assert res.returncode == 0, res.stderr
    verdict = json.loads(evidence.read_text())
    assert verdict == json.loads(res.stdout)
    assert verdict["p_value"] < 1e-3 and verdict["key"]["fingerprint"] == KEY.fingerprint
    assert verdict["inputs"]["sha256"] and len(verdict["null"]["p_values"]) == 100
    with Ledger(ledger, readonly=True) as led:
        kinds = [e.kind for e in led.entries()]
        assert kinds == ["forensics.start", "forensics.end"] and led.entries()[-1].body["ok"] is True
        assert verdict["ledger_anchor"] == led.head().to_json()
    secret = KEY.secret.hex()
    assert secret not in ledger.read_bytes().decode(errors="ignore") and secret not in evidence.read_text()
    again = CliRunner().invoke(app, args)
    assert isinstance(again.exception, StillhouseError) and "exists" in str(again.exception)


def test_cli_tests_a_suspect_against_a_control_from_our_teacher(world):
    args = ["forensics", "radioactivity", str(teacher_path()), "--key", str(world["key"]), "--texts"]
    res = cli(*args, str(world["run"]), "--teacher", str(teacher_path()), "--control-keys", "3", timeout=180)
    assert res.returncode == 0, res.stderr
    assert "fresh keys (control)" in res.stdout and "against gamma alone" in res.stdout
    closed = cli(*args, str(world["run"]), "--teacher", str(teacher_path()), "--mode", "closed", timeout=60)
    assert closed.returncode == 2 and "closed mode needs none" in closed.stderr
    assert len(closed.stderr.strip().splitlines()) == 1
