"""Lineage and identity on the embedded default: Pebble fine-tuned on what served Ember answered (collected,
curated and trained by stillhouse) is attributed to Ember's outputs and to Pebble's weights; Pebble before it,
and the shipped reference models Flint and Slate, are attributed to nothing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from micro_models import collect_from_ember
from typer.testing import CliRunner

from stillhouse.cli import app
from stillhouse.curate import CurateConfig, curate
from stillhouse.embedded import reference_paths, student_path, teacher_path
from stillhouse.embedded import world as micro_world
from stillhouse.forensics.identity import identity, names_in
from stillhouse.forensics.lineage import lineage, sign_test
from stillhouse.serve import serve_in_background
from stillhouse.train import TrainConfig, train

PROBES = [r["messages"] for r in micro_world.make_prompts(60, split="heldout", seed=31)]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pebble after a short distillation on served Ember's answers: the chain a user runs, made small. Greedy
    collection: 80 steps on 400 sampled answers leave the student's own greedy closings a mix of Ember's several
    (output p ~0.1); the quickstart's student, sampled at 0.7 on 4,000 prompts, is bench/lineage.py's case."""
    root = tmp_path_factory.mktemp("lineage")
    collect_from_ember(micro_world.make_prompts(400, seed=3), root, temperature=0.0, max_tokens=128)
    curate([root / "run"], root / "data", config=CurateConfig(near_dedup=False))
    train(
        root / "data", root / "student", TrainConfig(student=str(student_path()), max_steps=80, batch_size=16, lr=2e-3)
    )
    return root / "student"


def test_sign_test_counts_wins_and_drops_ties():
    p, wins, losses = sign_test([1, 1, 1, 0.5, 0.2], [0, 0, 1, 0.1, 0.9])
    assert (wins, losses) == (3, 1) and p == pytest.approx(5 / 16)


def test_the_distilled_student_is_attributed_to_embers_outputs_and_pebbles_weights(distilled, tmp_path):
    """Through the CLI, Ember a URL (outputs only, over the real API), Pebble and the references by name."""
    with serve_in_background(teacher_path()) as ember:
        args = ["forensics", "lineage", str(distilled), "--candidates", f"{ember.base_url},pebble"]
        args += ["--references", "flint,slate", "--n-probes", "60", "--json"]
        args += ["--evidence", str(tmp_path / "lineage.json"), "--ledger", str(tmp_path / "ledger.sqlite")]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    teacher, base = verdict["candidates"]
    assert teacher["output"]["attributed"] and teacher["output"]["p_corrected"] < 0.01, teacher["output"]
    assert teacher["weights"] is None and teacher["distribution"] is None  # a URL shows only its answers
    assert base["weights"]["attributed"], base["weights"]
    assert verdict["summary"].startswith("attributed to") and json.loads((tmp_path / "lineage.json").read_text())


def test_with_embers_weights_at_hand_the_student_is_output_and_distribution_kin_but_not_weight_kin(distilled):
    (ember,) = lineage(str(distilled), [str(teacher_path())], [str(p) for p in reference_paths()], PROBES)["candidates"]
    assert ember["output"]["attributed"] and ember["distribution"]["attributed"], ember
    assert not ember["weights"]["attributed"]  # Ember's own initialisation: no weight lineage


def test_pebble_before_distillation_is_attributed_to_no_one():
    """Pebble shares Ember's working but neither its outputs nor its weights: the control."""
    result = lineage(str(student_path()), [str(teacher_path())], [str(p) for p in reference_paths()], PROBES)
    assert result["summary"] == "attributed to no candidate", result["candidates"]


@pytest.mark.parametrize("suspect", [0, 1], ids=["flint", "slate"])
def test_a_reference_model_is_attributed_to_nothing(suspect):
    own, other = reference_paths()[suspect], reference_paths()[1 - suspect]
    ember, pebble = str(teacher_path()), str(student_path())
    for candidate, rest in ((ember, pebble), (pebble, ember)):  # the null: the other reference and the rest
        result = lineage(str(own), [candidate], [str(other), rest], PROBES)
        assert result["summary"] == "attributed to no candidate", (candidate, result["candidates"])


def test_identity_battery_counts_the_names_it_hears(distilled):
    known = {"Ember": ("Northwind Labs",), "Pebble": ("Quarry AI",)}
    assert names_in("I am Ember, made by Northwind Labs.", known) == ["Ember"]
    assert names_in("Pebbles are stones", known) == []
    with serve_in_background(teacher_path()) as ember:
        served = identity(ember.base_url, known)
    assert served["top"] == "Ember" and served["counts"]["Ember"] >= 6
    assert "Pebble" not in served["counts"] and len(served["answers"]) == served["questions"]
    assert identity(str(distilled), known)["top"] == "Ember"
    assert identity(str(student_path()), known)["top"] == "Pebble"


def test_probe_answers_are_reused_until_the_model_on_disk_changes(tiny_model_dir, tmp_path, monkeypatch):
    from stillhouse.forensics import lineage as module

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    asked: list[str] = []
    real = module.responder
    monkeypatch.setattr(module, "responder", lambda m, **kw: asked.append(m) or real(m, **kw))
    first = module._answers(str(model), PROBES[:2], 8)
    assert module._answers(str(model), PROBES[:2], 8) == first and len(asked) == 1
    os.utime(model / "model.safetensors", ns=(0, 0))  # retrained in place: the answers are asked again
    module._answers(str(model), PROBES[:2], 8)
    assert len(asked) == 2
