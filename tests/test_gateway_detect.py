"""Simulator -> detector -> STIX, through the CLI on each other's real output, and a replay through the gateway."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import stix2validator

from stillhouse.core.errors import StillhouseError
from stillhouse.curate.hashing import HashIndex, first_seen
from stillhouse.embedded import teacher_path
from stillhouse.gateway import sketch
from stillhouse.gateway.detect import detect
from stillhouse.gateway.keys import KeyStore
from stillhouse.gateway.log import ACCOUNTS, SEGMENTS, finish_rows, read_log, write_segment
from stillhouse.gateway.proxy import gateway_in_background
from stillhouse.gateway.simulate import read_labels, replay, scenario, simulate
from stillhouse.serve import serve_in_background


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stillhouse.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "tiny"
    r = _cli("simulate", "-o", str(out), "--scenario", "tiny")
    assert r.returncode == 0, r.stderr
    return out


def _recall_and_false_positives(accounts: list[dict], labels: dict) -> tuple[float, int]:
    flagged = {a["account"] for a in accounts if a["flagged"]}
    campaign = {a for a, c in labels.items() if c}
    return len(flagged & campaign) / len(campaign), len(flagged - campaign)


def test_simulate_then_detect_through_the_cli_finds_the_campaign(tiny, tmp_path):
    r = _cli("detect", str(tiny), "--json", "--stix", str(tmp_path / "bundle.json"))
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    labels = read_labels(tiny)
    assert {a["account"] for a in result["accounts"]} == set(labels)
    recall, false_positives = _recall_and_false_positives(result["accounts"], labels)
    assert recall >= 0.9 and false_positives == 0
    top = result["clusters"][0]
    assert all(labels[a] for a in top["accounts"]) and top["reasons"]
    flagged = [a for a in result["accounts"] if a["flagged"]]
    assert all(a["cluster"] == top["id"] and a["reasons"][0].startswith("member of cluster") for a in flagged)
    assert all(set(a) == {"account", "score", "flagged", "cluster", "reasons"} for a in result["accounts"])

    bundle = tmp_path / "bundle.json"
    assert stix2validator.validate_file(str(bundle)).is_valid
    text = bundle.read_text()
    objects = json.loads(text)["objects"]
    kinds = {o["type"] for o in objects}
    assert {"campaign", "indicator", "infrastructure", "sighting", "attack-pattern", "marking-definition"} <= kinds
    assert any(r.get("external_id") == "AML.T0024.002" for o in objects for r in o.get("external_references", []))
    assert not any(a in text for a in labels)  # no account ids, and no prompt text either:
    assert "step by step" not in text.lower() and "Write a complete" not in text


def test_simulate_is_seeded_and_refuses_to_overwrite(tiny, tmp_path):
    again = simulate(scenario("tiny"), tmp_path / "again")
    assert again["rows"] == read_log(tiny).num_rows
    assert (tmp_path / "again" / "labels.jsonl").read_text() == (tiny / "labels.jsonl").read_text()
    first, second = (read_log(d, ["ts", "key_id", "prompt"]) for d in (tiny, tmp_path / "again"))
    assert first.equals(second)
    other = simulate(scenario("tiny", seed=1), tmp_path / "other")
    assert not read_log(tmp_path / "other", ["prompt"]).equals(read_log(tiny, ["prompt"])) and other["rows"] > 0
    with pytest.raises(StillhouseError, match="exists"):
        simulate(scenario("tiny"), tmp_path / "again")
    with pytest.raises(StillhouseError, match="unknown scenario 'nope'"):
        scenario("nope")
    r = _cli("simulate", "-o", str(tiny), "--scenario", "tiny")
    assert r.returncode == 2 and "exists" in r.stderr and r.stderr.count("\n") == 1
    r = _cli("detect", str(tmp_path / "nothing-here"))
    assert r.returncode == 2 and "no log at" in r.stderr
    r = _cli("detect", str(tiny), "--stix", str(tiny / "labels.jsonl"))
    assert r.returncode == 2 and "exists" in r.stderr


def test_a_log_with_hashes_only_gives_the_same_detection(tiny, tmp_path):
    rows = read_log(tiny).to_pylist()
    for row in rows:
        row["sketch"] = None
    hashed = tmp_path / "hashed"
    hashed.mkdir()
    write_segment(hashed, pa.Table.from_pylist(finish_rows(rows, "hashes")))
    shutil.copy(tiny / ACCOUNTS, hashed / ACCOUNTS)
    [segment] = (hashed / SEGMENTS).glob("*.parquet")
    assert pq.read_table(segment, columns=["prompt"]).column(0).null_count == len(rows)
    full, hashes_only = detect(tiny), detect(hashed)
    assert {a.account for a in full.accounts if a.flagged} == {a.account for a in hashes_only.accounts if a.flagged}
    assert {frozenset(c.accounts) for c in full.clusters} == {frozenset(c.accounts) for c in hashes_only.clusters}


def test_accounts_sharing_a_payment_instrument_are_linked_only_past_infra_min(tiny, tmp_path):
    labels = read_labels(tiny)
    benign = sorted(a for a, c in labels.items() if c is None)[:12]
    billing = tmp_path / "billing.csv"
    billing.write_text("account,payment\n" + "".join(f"{a},{'pm_shared' if a in benign else a}\n" for a in labels))
    r = _cli("detect", str(tiny), "--json", "--accounts", str(billing))
    assert r.returncode == 0, r.stderr
    clusters = [c for c in json.loads(r.stdout)["clusters"] if set(benign) <= set(c["accounts"])]
    assert len(clusters) == 1 and any("share 1 payment value," in reason for reason in clusters[0]["reasons"])
    loose = detect(tiny, accounts=tmp_path / "billing.csv", infra_min=13)
    assert not any(set(benign) <= set(c.accounts) for c in loose.clusters)
    (tmp_path / "bad.csv").write_text("who,payment\nx,y\n")
    r = _cli("detect", str(tiny), "--accounts", str(tmp_path / "bad.csv"))
    assert r.returncode == 2 and "no 'account' column" in r.stderr and r.stderr.count("\n") == 1


def test_linking_a_batch_matches_curates_streaming_first_seen():
    rng = np.random.default_rng(0)
    keys = rng.integers(1, 40, size=(5_000, sketch.BANDS)).astype(np.uint64)  # few values: long chains
    keys[::7] = rng.integers(1 << 20, 1 << 30, size=(len(keys[::7]), sketch.BANDS)).astype(np.uint64)  # loners
    keys += np.arange(sketch.BANDS, dtype=np.uint64) << np.uint64(32)  # a band's keys never meet another's, as salted
    linked = first_seen(HashIndex(), keys, np.arange(len(keys)))
    while not np.array_equal(deeper := linked[linked], linked):
        linked = deeper
    assert np.array_equal(sketch.link(keys), linked)


def test_benign_traffic_alone_flags_nothing_much(tmp_path):
    simulate(scenario("benign", scale=0.2), tmp_path / "benign")
    result = detect(tmp_path / "benign")
    assert len(result.accounts) >= 990  # (an account whose only requests failed has no answered ones)
    assert sum(a.flagged for a in result.accounts) <= 1  # 0.1 % false positives


def test_replay_through_the_gateway_then_detect_its_log(tiny, tmp_path):
    labels = read_labels(tiny)
    with KeyStore(tmp_path / "keys.sqlite") as store:
        secrets = {account: store.create(account)[1] for account in labels}
        ids = {k.name: k.id for k in store.list()}
    with (
        serve_in_background(teacher_path()) as ember,
        gateway_in_background(ember.base_url, tmp_path / "keys.sqlite", tmp_path / "log", trust_forwarded=True) as gw,
    ):
        sent = replay(tiny, gw.base_url, secrets, ember.model, limit=120, concurrency=32)
        with pytest.raises(StillhouseError, match="loopback"):
            replay(tiny, "http://198.51.100.7/v1", secrets, ember.model)
    log = read_log(tmp_path / "log")
    assert log.num_rows == sent == 120 and set(log.column("status").to_pylist()) == {200}
    r = _cli("detect", str(tmp_path / "log"), "--json")
    assert r.returncode == 0, r.stderr
    by_id = {ids[a]: c for a, c in labels.items()}
    flagged = {a["account"] for a in json.loads(r.stdout)["accounts"] if a["flagged"]}
    assert len(flagged) >= 5 and all(by_id[a] for a in flagged)  # accounts with 1-2 requests so far cannot be linked
