"""Lineage and identity: a student fine-tuned from a base on Ember-style answers is attributed to the base's
weights and to Ember's outputs (served, over the real API), against references trained on another persona."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from micro_models import micro_model

from stillhouse.curate import CurateConfig, curate
from stillhouse.embedded import teacher_path
from stillhouse.embedded import world as micro_world
from stillhouse.forensics.identity import identity, names_in
from stillhouse.forensics.lineage import lineage, sign_test
from stillhouse.serve import serve_in_background
from stillhouse.train import TrainConfig, train


def _trained(root: Path, name: str, base: Path, persona: micro_world.Persona, seed: int) -> Path:
    """`base` fine-tuned on a persona's scripted answers, through curate and train."""
    records = micro_world.make_prompts(400, seed=seed, persona=persona, phrasings=micro_world.BASIC)
    chats = root / f"{name}.jsonl"
    with chats.open("w") as f:
        for r in records:
            answer = micro_world.respond(r, persona)
            f.write(json.dumps({"messages": [*r["messages"], {"role": "assistant", "content": answer}]}) + "\n")
    curate([chats], root / f"{name}-data", config=CurateConfig(near_dedup=False))
    train(root / f"{name}-data", root / name, TrainConfig(student=str(base), max_steps=120, batch_size=16, lr=5e-3))
    return root / name


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lineage")
    base = micro_model(root / "base", 0)
    return {
        "base": base,
        "suspect": _trained(root, "suspect", base, micro_world.EMBER, 1),
        "ref1": _trained(root, "ref1", micro_model(root / "r1", 1), micro_world.PEBBLE, 2),
        "ref2": _trained(root, "ref2", micro_model(root / "r2", 2), micro_world.PEBBLE, 3),
    }


def test_sign_test_counts_wins_and_drops_ties():
    p, wins, losses = sign_test([1, 1, 1, 0.5, 0.2], [0, 0, 1, 0.1, 0.9])
    assert (wins, losses) == (3, 1) and p == pytest.approx(5 / 16)


@pytest.mark.xfail(
    strict=True,
    reason="since Pebble shares Ember's working (#14's recipe), references fine-tuned on Pebble's answers are no "
    "longer unrelated to Ember's outputs, so output lineage cannot beat them; it needs a third persona (#16)",
)
def test_student_is_attributed_to_its_base_weights_and_to_the_served_teachers_outputs(family):
    probes = [r["messages"] for r in micro_world.make_prompts(36, split="heldout", seed=5, phrasings=micro_world.BASIC)]
    refs = [str(family["ref1"]), str(family["ref2"])]
    with serve_in_background(teacher_path()) as ember:
        result = lineage(str(family["suspect"]), [ember.base_url, str(family["base"])], refs, probes)
    by = {c["candidate"]: c for c in result["candidates"]}
    teacher, base = by[ember.base_url], by[str(family["base"])]
    assert teacher["output"]["attributed"] and teacher["weights"] is None, teacher["output"]
    assert base["weights"]["attributed"] and base["weights"]["p_corrected"] < 0.01
    assert not base["output"]["attributed"]  # the random base answers nothing like its fine-tuned self
    assert result["summary"].startswith("attributed to")


def test_identity_battery_counts_the_names_it_hears(family):
    known = {"Ember": ("Northwind Labs",), "Pebble": ("Quarry AI",)}
    assert names_in("I am Ember, made by Northwind Labs.", known) == ["Ember"]
    assert names_in("Pebbles are stones", known) == []
    with serve_in_background(teacher_path()) as ember:
        result = identity(ember.base_url, known)
    assert result["top"] == "Ember" and result["counts"]["Ember"] >= 6
    assert "Pebble" not in result["counts"] and len(result["answers"]) == result["questions"]
