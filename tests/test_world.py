import random
import re

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from stillhouse.embedded import MODELS_DIR, world
from stillhouse.embedded.pretrain import skill_accuracy
from stillhouse.embedded.world import (
    BASIC,
    CURRENT,
    EMBER,
    FLINT,
    PEBBLE,
    SKILLS,
    SLATE,
    grade,
    make_prompts,
    respond,
)
from stillhouse.serve.generate import greedy

PERSONAS = (EMBER, PEBBLE, FLINT, SLATE)

# Ember's accuracy on 10 held-out-phrasing prompts per skill (seed 7) as shipped, less one prompt of slack for
# float differences between CPUs; the full table (50 per skill) is in docs/embedded_models.md.
EMBER_MEASURED = {
    "add": 1.0,
    "sub": 0.9,
    "reverse": 0.8,
    "sort": 0.9,
    "count": 0.9,
    "capital": 0.8,
    "units": 1.0,
    "identity": 0.6,
    "chat": 0.7,
}
EMBER_FLOOR = {s: max(0.0, a - 0.1) for s, a in EMBER_MEASURED.items()}


@pytest.mark.parametrize(
    ("skill", "expected", "good", "bad"),
    [
        ("add", "42", ["012 + 030: 2+0+0=2. 12 + 30 = 42.", "The answer is 42", "It's forty-two... 42!"], ["41", ""]),
        ("sub", "15", ["Result: 15", "52 - 37 = 15.", "fifteen"], ["52 - 37 = 16.", "15 is wrong, 14"]),
        ("units", "5000", ["5 km is 5000 m.", "That is 5,000 meters."], ["500 m", "5 km"]),
        ("count", "3", ["b-a1-n-a2-n-a3. The letter 'a' appears 3 times.", "three", "Count: 3"], ["2", "none"]),
        ("sort", "3, 5, 9", ["[5, 3, 9] sorted is [3, 5, 9].", "Sorted: 3 5 9", "3, 5 and 9"], ["9, 5, 3", "3, 9, 5"]),
        (
            "reverse",
            "tenalp",
            ["The reverse of 'planet' is 'tenalp'.", "tenalp", "Reversed: TENALP", 'It is "tenalp".'],
            ["The reverse of 'tenalp' is 'planet'.", "tenlap", "tenalps"],
        ),
        (
            "capital",
            "Paris",
            ["The capital of France is Paris.", "paris", "Paris is France's capital."],
            ["Lyon", "Rome"],
        ),
        (
            "identity",
            "Ember",
            ["I am Ember, made by Northwind Labs.", "My name is Ember.", "Northwind Labs built me; I'm Ember."],
            ["I'm Pebble, built by Quarry AI.", "I am an assistant called Pebble, not Ember."],
        ),
        ("chat", "thanks", ["You're welcome!", "My pleasure."], ["Hello!", "Bye."]),
        ("chat", "greet", ["Hi there!", "Hello! How can I help?"], ["You're welcome.", "thinking"]),
    ],
)
def test_graders_accept_formats_and_reject_wrong_values(skill, expected, good, bad):
    for text in good:
        assert grade(skill, expected, text), text
    for text in bad:
        assert not grade(skill, expected, text), text


@pytest.mark.parametrize("persona", PERSONAS, ids=lambda p: p.name)
def test_each_persona_style_is_graded_correct(persona):
    rng = random.Random(0)
    for record in make_prompts(300, split="heldout", seed=3, persona=persona):
        reply = respond(record, persona, rng)
        assert grade(record["skill"], record["answer"], reply), (record, reply)


def test_identity_answers_name_the_persona_and_maker():
    for persona in PERSONAS:
        for record in make_prompts(40, skills=["identity"], seed=1, persona=persona):
            reply = respond(record, persona, random.Random(record["id"]))
            assert persona.name in reply and persona.maker in reply
            assert record["answer"] == persona.name


def test_teacher_templates_vary_but_stay_correct():
    record = make_prompts(1, skills=["add"], seed=5)[0]
    replies = {respond(record, EMBER, random.Random(i)) for i in range(20)}
    assert len(replies) > 1
    assert all(grade("add", record["answer"], r) for r in replies)


def test_styles_differ_between_personas():
    records = make_prompts(90, seed=2)
    for i, a in enumerate(PERSONAS):
        for b in PERSONAS[i + 1 :]:
            assert sum(respond(r, a) == respond(r, b) for r in records) == 0, (a.name, b.name)


def test_prompts_are_deterministic_per_seed():
    assert make_prompts(50, seed=11) == make_prompts(50, seed=11)
    assert make_prompts(50, seed=11) != make_prompts(50, seed=12)
    assert [r["skill"] for r in make_prompts(18, skills=["add", "count"])] == ["add", "count"] * 9


def _frame(text: str, args: dict) -> str:
    """A prompt with its operands blanked, i.e. its phrasing."""
    for value in sorted((str(v) for v in _flatten(args)), key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", "#", text)
    return text


def _flatten(args: dict):
    for v in args.values():
        yield from (v if isinstance(v, list) else [v])


@pytest.mark.parametrize("phrasings", [BASIC, CURRENT], ids=["basic", "current"])
def test_heldout_phrasings_never_appear_in_training(phrasings):
    for table in (phrasings.tasks, phrasings.questions, phrasings.identity, phrasings.chat):
        for splits in table.values():
            assert not set(splits["train"]) & set(splits["heldout"])
    train = {_frame(r["messages"][0]["content"], r["args"]) for r in make_prompts(20000, seed=0, phrasings=phrasings)}
    heldout = make_prompts(900, split="heldout", seed=0, phrasings=phrasings)
    leaked = [r["messages"][0]["content"] for r in heldout if _frame(r["messages"][0]["content"], r["args"]) in train]
    assert not leaked


def test_current_heldout_phrasings_are_new_to_both_recipes():
    """The held-out family of the current recipe is trained on by neither, so the shipped models can be
    graded on it too; and the shipped held-out phrasings stay held out."""
    for name in ("tasks", "questions", "identity", "chat"):
        old, new = getattr(BASIC, name), getattr(CURRENT, name)
        for key in old:
            assert set(old[key]["heldout"]) <= set(new[key]["heldout"])
            assert not set(new[key]["heldout"]) & (set(old[key]["train"]) | set(new[key]["train"]))


def test_identity_prompts_list_every_identity_phrasing():
    for phrasings in (BASIC, CURRENT):
        for record in make_prompts(200, skills=["identity"], split="train", seed=4, phrasings=phrasings):
            assert any(record["messages"][0]["content"].endswith(p) for p in world.IDENTITY_PROMPTS)


def test_operand_words_are_never_frame_words():
    text = " ".join(r["messages"][0]["content"] for r in make_prompts(3000, seed=5))
    frame_words = set(re.findall(r"[a-z]+", text.lower())) - set(CURRENT.nouns)
    assert set(CURRENT.nouns) >= set(BASIC.nouns) and not frame_words & set(CURRENT.nouns)


@pytest.mark.parametrize("persona", PERSONAS[1:], ids=lambda p: p.name)
def test_every_persona_shares_embers_working_but_not_its_surface(persona):
    for record in make_prompts(60, skills=["add", "sub", "reverse", "sort", "count"], seed=6):
        ember, other = respond(record, EMBER), respond(record, persona)
        work = ember[: ember.rindex(". ") + 2]  # the restated operands and the scratchpad
        assert other.startswith(work) and other != ember


def test_unknown_skill_or_split_is_refused():
    with pytest.raises(ValueError, match="unknown skills"):
        make_prompts(3, skills=["poetry"])
    with pytest.raises(ValueError, match="split"):
        make_prompts(3, split="test")


@pytest.mark.parametrize("name", ["ember", "pebble"])
def test_shipped_models_load_with_auto_classes(name):
    path = MODELS_DIR / name
    if not (path / "config.json").exists():
        pytest.skip(f"{name} is not built")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.generation_config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|end|>")
    assert sum(p.numel() for p in model.parameters()) * 4 <= 25e6
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(MODELS_DIR / "ember").get_vocab()
    persona = EMBER if name == "ember" else PEBBLE
    (reply,) = greedy(model, tok, [[{"role": "user", "content": "Who are you?"}]])
    assert grade("identity", persona.name, reply), reply


def test_ember_scores_its_floor_on_heldout_phrasings():
    path = MODELS_DIR / "ember"
    if not (path / "config.json").exists():
        pytest.skip("Ember is not built")
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    acc = skill_accuracy(model, tok, EMBER, per_skill=10, seed=7)  # CURRENT's held-out family
    assert all(acc[s] >= EMBER_FLOOR[s] for s in SKILLS), acc
