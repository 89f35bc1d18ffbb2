"""The front door, end to end: `stillhouse quickstart --fast` on the embedded default."""

import json
import re
import subprocess
import sys

from stillhouse.provenance.ledger import Ledger


def test_quickstart_fast_runs_the_whole_pipeline(tmp_path):
    run = tmp_path / "qs"
    proc = subprocess.run(
        # --fast's sizes, smaller still: every step runs, in a third of the time (the figures are not asserted)
        [sys.executable, "-m", "stillhouse.cli", "quickstart", "--fast", "--train-prompts", "360", "--steps", "40",
         "--eval-per-skill", "4", "--forensics", "-o", str(run)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Who are you?" in proc.stdout
    report = json.loads((run / "report.json").read_text())
    for side in (report, report["baseline"]):
        assert 0 <= side["student"]["agreement"] <= 1
        assert {"accuracy"} <= side["teacher"].keys() and {"accuracy", "agreement"} <= side["student"].keys()
        assert set(side["per_skill"]) == {
            "add",
            "sub",
            "reverse",
            "sort",
            "count",
            "capital",
            "units",
            "identity",
            "chat",
        }
    assert report["steps"]["collect"]["ok"] > 0 and report["steps"]["train"]["steps"] > 0
    assert "Pebble" in report["identity"]["student_before"]
    # identity and chat are measured on held-out phrasings, so decontamination leaves their training rows alone
    # (it left 7 and 3 of 2,089 when they were measured on their training phrasings); what exact dedup takes
    # from their small prompt pool remains: measured 36 and 35 of ~100 per skill in a --fast run
    rows = report["curated_rows_per_skill"]
    others = min(v for k, v in rows.items() if k not in ("identity", "chat"))
    assert min(rows["identity"], rows["chat"]) >= 0.25 * others
    assert set(report["heldout_phrasings"]["per_skill"]) == set(report["per_skill"])
    assert len(report["train_losses"]) == report["steps"]["train"]["steps"]
    assert "95 % lower bound" in proc.stdout, proc.stdout
    assert not re.search(r"\d\.\d{4,}", proc.stdout), proc.stdout  # percentages, not floats
    assert "it/s" not in proc.stderr  # no third-party loading bars
    page = (run / "report.html").read_text()
    assert page.count("<svg") == 3 and "Who are you?" in page and "ledger" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # self-contained: nothing to fetch
    assert (run / "student" / "config.json").exists() and (run / "dataset" / "README.md").exists()
    with Ledger(run / "ledger.sqlite") as led:
        assert led.verify() == []
        stages = {r["stage"] for r in led.runs()}
    assert {"collect", "curate", "train", "eval", "forensics"} <= stages

    # the detect half: the student and the control tested for the watermark, asked who they are, and the key's
    # secret nowhere but its own file
    verdicts = report["forensics"]["verdicts"]
    assert set(verdicts) == {"student_after", "student_before"}
    for who, v in verdicts.items():
        assert 0 <= v["radioactivity"]["p_value"] <= 1 and v["radioactivity"]["null"]["keys"] >= 100
        # open mode is tested against Ember's answers under fresh keys, since Pebble shares Ember's working; each
        # key answers every sampled chat (--fast: 8 keys)
        control = v["radioactivity"]["control"]
        assert control["keys"] == 8 and control["shape"] == "full" and control["scored"] > 0
        for test in ("radioactivity", "identity", "lineage"):
            evidence = json.loads((run / "evidence" / f"{who}-{test}.json").read_text())
            assert evidence["test"] == test and evidence["ledger_anchor"]
    assert verdicts["student_before"]["identity"]["top"] == "Pebble"
    # the control is traced only to Ember, and (its own base) not at all; the student's base weights show at once
    assert [c["candidate"] for c in verdicts["student_after"]["lineage"]["candidates"]] == ["ember", "pebble"]
    assert verdicts["student_before"]["lineage"]["summary"] == "attributed to no candidate"
    # after --fast's 40 steps from Pebble at delta 8, its outputs may still be Pebble's too (measured: 1 run in 4)
    assert re.search(r"pebble \([^)]*weights\)", verdicts["student_after"]["lineage"]["summary"])
    secret = json.loads((run / "watermark.key").read_text())["secret"]
    assert all(secret not in (run / f).read_text() for f in ("report.json", "report.html"))
    assert secret.encode() not in (run / "ledger.sqlite").read_bytes()
    assert "forensics, student after: watermark radioactivity" in proc.stdout and "Forensics" in page
    assert "lineage: attributed to" in proc.stdout


def test_quickstart_refuses_to_overwrite_a_run(tmp_path):
    (tmp_path / "report.json").write_text("{}")
    proc = subprocess.run(
        [sys.executable, "-m", "stillhouse.cli", "quickstart", "--fast", "-o", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "already holds a quickstart run" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_quickstart_refuses_a_delta_without_forensics(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "stillhouse.cli", "quickstart", "--fast", "--delta", "6", "-o", str(tmp_path / "q")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "pass --forensics too" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "q").exists()  # refused before any work


def test_heldout_suites_ask_each_prompt_once_and_none_the_student_was_trained_on():
    from stillhouse.embedded import world
    from stillhouse.embedded.quickstart import _operands, heldout_suites

    train = world.make_prompts(900, split="train", seed=1)
    seen = {r["messages"][0]["content"] for r in train}
    operands = {(r["skill"], _operands(r)) for r in train}
    suites = heldout_suites(train, 30, 0)
    for records in suites.values():
        # a repeated prompt gets the same greedy answer: weight, not evidence (chat has 12 held-out phrasings)
        texts = [(r["skill"], r["messages"][0]["content"]) for r in records]
        assert len(set(texts)) == len(texts)
        per_skill = {s: sum(r["skill"] == s for r in records) for s in world.SKILLS}
        assert per_skill == dict.fromkeys(world.SKILLS, 30) | {"chat": 12}
        assert not {r["messages"][0]["content"] for r in records} & seen
    fresh = {(r["skill"], _operands(r)) for r in suites["prompts"] if r["skill"] not in ("identity", "chat")}
    assert not fresh & operands
