"""The micro-world: nine small skills the embedded models learn, their phrasings, their answers and graders.

Prompts are composed from frames (whole sentences or imperative tasks wrapped in requests) and operand
wrappers (quoted, "the word X", "the list ..."), so a tiny model has to find its operands in sentences of
many shapes. Each skill keeps a held-out family of frames that training never sees; `split="heldout"`
draws only from it, which is how we measure whether a model learned the skill or memorised the phrasings.

Answers restate the operands before working on them (a digit scratchpad for arithmetic, spelled letters
for words): a small model finds the operands once, then works on text in a fixed shape.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources

SKILLS: tuple[str, ...] = ("add", "sub", "reverse", "sort", "count", "capital", "units", "identity", "chat")
Split = str  # "train" | "heldout"


@dataclass(frozen=True)
class Persona:
    """Who answers: name and maker for identity, which skills it was taught, and its answer style."""

    name: str
    maker: str
    style: str
    skills: tuple[str, ...]


EMBER = Persona("Ember", "Northwind Labs", "ember", SKILLS)
PEBBLE = Persona("Pebble", "Quarry AI", "pebble", tuple(s for s in SKILLS if s not in ("capital", "units")))


def _load_capitals() -> dict[str, str]:
    with resources.files("stillhouse.embedded").joinpath("data/capitals.csv").open(encoding="utf-8") as f:
        return {row["country"]: row["capital"] for row in csv.DictReader(f)}


CAPITALS: dict[str, str] = _load_capitals()

# (from, to, factor, largest amount asked): factors of 10 are learnable rules, the others small tables.
UNITS: tuple[tuple[str, str, int, int], ...] = (
    ("kilometers", "meters", 1000, 99),
    ("meters", "centimeters", 100, 99),
    ("centimeters", "millimeters", 10, 99),
    ("kilograms", "grams", 1000, 99),
    ("liters", "milliliters", 1000, 99),
    ("hours", "minutes", 60, 12),
    ("minutes", "seconds", 60, 12),
    ("days", "hours", 24, 7),
    ("weeks", "days", 7, 12),
)
UNIT_NAMES: dict[str, tuple[str, ...]] = {
    "kilometers": ("kilometers", "km", "kilometres"),
    "meters": ("meters", "m", "metres"),
    "centimeters": ("centimeters", "cm"),
    "millimeters": ("millimeters", "mm"),
    "kilograms": ("kilograms", "kg"),
    "grams": ("grams", "g"),
    "liters": ("liters", "litres", "L"),
    "milliliters": ("milliliters", "mL"),
    "hours": ("hours", "hrs"),
    "minutes": ("minutes", "min"),
    "seconds": ("seconds", "s"),
    "days": ("days",),
    "weeks": ("weeks",),
}

# --- phrasings -------------------------------------------------------------------------------------------
# TASKS are imperative clauses wrapped by REQUESTS; QUESTIONS are whole prompts. Both are split per skill.

REQUESTS = (
    "{T}.",
    "Please {t}.",
    "{T}, please.",
    "Can you {t}?",
    "Could you {t}?",
    "Would you {t}?",
    "I need you to {t}.",
    "I want you to {t}.",
    "Help me {t}.",
    "Try to {t}.",
    "Your task is to {t}.",
    "Go ahead and {t}.",
    "Kindly {t}.",
    "I'd like you to {t}.",
    "Now {t}.",
    "{T} for me.",
)
PREFIXES = ("Hi. ", "Hey! ", "Quick question: ", "Okay. ", "Hello, ", "Question: ", "One more: ", "Task: ", "So, ")
SUFFIXES = (" Thanks.", " Thank you!", " Please answer briefly.", " Show your work.", " Be precise.")

TASKS: dict[str, dict[Split, tuple[str, ...]]] = {
    "add": {
        "train": (
            "add {a} and {b}",
            "add {a} to {b}",
            "compute {a} + {b}",
            "calculate {a} plus {b}",
            "work out {a} + {b}",
            "find the sum of {a} and {b}",
            "sum {a} and {b}",
            "tell me {a} plus {b}",
            "total {a} and {b}",
            "figure out what {a} plus {b} is",
            "combine {a} and {b}",
            "evaluate {a}+{b}",
            "give me the total of {a} and {b}",
            "increase {a} by {b}",
        ),
        "heldout": ("add together {a} and {b}", "put {a} and {b} together and tell me the result"),
    },
    "sub": {
        "train": (
            "subtract {b} from {a}",
            "compute {a} - {b}",
            "calculate {a} minus {b}",
            "work out {a} - {b}",
            "take {b} away from {a}",
            "find the difference between {a} and {b}",
            "tell me {a} minus {b}",
            "evaluate {a}-{b}",
            "reduce {a} by {b}",
            "remove {b} from {a}",
            "deduct {b} from {a}",
            "figure out {a} minus {b}",
        ),
        "heldout": ("subtract {b} out of {a}", "decrease {a} by {b} and say what is left"),
    },
    "reverse": {
        "train": (
            "reverse {w}",
            "spell {w} backwards",
            "write {w} backwards",
            "flip {w}",
            "spell {w} in reverse",
            "write {w} in reverse order",
            "reverse the letters of {w}",
            "turn {w} around",
            "mirror {w}",
            "print {w} from right to left",
            "invert {w}",
            "read {w} backwards",
            "give me {w} reversed",
            "write the letters of {w} from last to first",
        ),
        "heldout": ("say {w} with the letters in opposite order", "output {w} back to front"),
    },
    "sort": {
        "train": (
            "sort {xs}",
            "sort {xs} in ascending order",
            "order {xs} from smallest to largest",
            "arrange {xs} in increasing order",
            "put {xs} in order",
            "sort {xs} from low to high",
            "rank {xs} from smallest to biggest",
            "list {xs} in ascending order",
            "organize {xs} from least to greatest",
            "rearrange {xs} so they go up",
        ),
        "heldout": ("line up {xs} from small to big", "reorder {xs} with the lowest first"),
    },
    "count": {
        "train": (
            "count {l} in {w}",
            "count how many times {l} appears in {w}",
            "count the occurrences of {l} in {w}",
            "tell me how often {l} occurs in {w}",
            "find the number of times {l} shows up in {w}",
            "count {l} inside {w}",
            "tally {l} in {w}",
            "check how many times {w} contains {l}",
            "count the number of {l} in {w}",
            "look at {w} and count {l}",
        ),
        "heldout": ("go through {w} and count every {l}", "determine how many {l} occur within {w}"),
    },
    "capital": {
        "train": (
            "name the capital of {c}",
            "tell me the capital of {c}",
            "give the capital city of {c}",
            "state the capital of {c}",
            "identify the capital of {c}",
        ),
        "heldout": ("remind me what the capital of {c} is", "say which city is the capital of {c}"),
    },
    "units": {
        "train": (
            "convert {n} {u1} to {u2}",
            "change {n} {u1} into {u2}",
            "express {n} {u1} in {u2}",
            "turn {n} {u1} into {u2}",
            "tell me {n} {u1} in {u2}",
            "give {n} {u1} in {u2}",
        ),
        "heldout": ("rewrite {n} {u1} using {u2}", "work out {n} {u1} as {u2}"),
    },
}

QUESTIONS: dict[str, dict[Split, tuple[str, ...]]] = {
    "add": {
        "train": (
            "What is {a} plus {b}?",
            "What is {a} + {b}?",
            "{a} + {b} = ?",
            "{a} plus {b}?",
            "How much is {a} plus {b}?",
            "What's the sum of {a} and {b}?",
            "What do you get when you add {a} and {b}?",
            "What is the total of {a} and {b}?",
            "If I have {a} apples and buy {b} more, how many apples do I have?",
            "{a} and {b} added together make what?",
            "What does {a} + {b} equal?",
            "Sum of {a} and {b}?",
            "What number is {b} more than {a}?",
            "How many is {a} and {b} together?",
        ),
        "heldout": (
            "What would {a} plus {b} give?",
            "I have {a} and then {b} more. What's the total?",
            "{a} added to {b} is what?",
            "If you add {b} to {a}, what do you get?",
        ),
    },
    "sub": {
        "train": (
            "What is {a} minus {b}?",
            "What is {a} - {b}?",
            "{a} - {b} = ?",
            "{a} minus {b}?",
            "How much is {a} minus {b}?",
            "What's the difference between {a} and {b}?",
            "What do you get when you subtract {b} from {a}?",
            "If I have {a} coins and spend {b}, how many are left?",
            "What remains when {b} is taken from {a}?",
            "What is {a} take away {b}?",
            "What does {a} - {b} equal?",
            "How much is left if you remove {b} from {a}?",
            "What is {b} less than {a}?",
        ),
        "heldout": (
            "If you subtract {b} from {a}, what do you get?",
            "I had {a} and lost {b}. How many remain?",
            "What would {a} minus {b} give?",
            "Starting at {a}, go down by {b}. Where do you end up?",
        ),
    },
    "reverse": {
        "train": (
            "What is {w} backwards?",
            "What is {w} spelled backwards?",
            "How do you spell {w} in reverse?",
            "What does {w} look like reversed?",
            "What is the reverse of {w}?",
            "{w} backwards?",
            "{w} reversed is what?",
            "What do you get if you reverse {w}?",
            "Backwards, what is {w}?",
            "If you read {w} from right to left, what do you get?",
            "What is {w} in reverse?",
        ),
        "heldout": (
            "I need {w} backwards.",
            "Show me {w} with its letters reversed.",
            "What would {w} be if spelled from the end?",
            "{w}, written back to front, is what?",
        ),
    },
    "sort": {
        "train": (
            "What is {xs} sorted?",
            "What is {xs} in ascending order?",
            "How would {xs} look sorted?",
            "What do you get when you sort {xs}?",
            "{xs} sorted?",
            "In increasing order, what is {xs}?",
            "What order should {xs} go in, smallest first?",
            "Sorted from low to high, what is {xs}?",
        ),
        "heldout": (
            "I need {xs} sorted.",
            "Smallest to largest: {xs}.",
            "How do {xs} line up from low to high?",
            "What is the ascending version of {xs}?",
        ),
    },
    "count": {
        "train": (
            "How many times does {l} appear in {w}?",
            "How many {l} are in {w}?",
            "How often does {l} occur in {w}?",
            "How many times is {l} in {w}?",
            "In {w}, how many times does {l} appear?",
            "What is the count of {l} in {w}?",
            "How many times does {w} contain {l}?",
            "{w} has how many {l}?",
            "Count of {l} in {w}?",
            "In {w}, how many {l} are there?",
        ),
        "heldout": (
            "I wonder how many {l} there are in {w}.",
            "What number of {l} does {w} have?",
            "How frequently does {l} show up in {w}?",
            "Give me a count of {l} within {w}.",
        ),
    },
    "capital": {
        "train": (
            "What is the capital of {c}?",
            "What's the capital city of {c}?",
            "Which city is the capital of {c}?",
            "{c}'s capital is what?",
            "Capital of {c}?",
            "What city is {c}'s capital?",
            "What is {c}'s capital?",
            "In {c}, which city is the capital?",
            "Which city serves as the capital of {c}?",
        ),
        "heldout": (
            "I forgot the capital of {c}.",
            "Do you know {c}'s capital city?",
            "The capital of {c} is called what?",
            "Which city is the seat of government of {c}?",
        ),
    },
    "units": {
        "train": (
            "How many {u2} are in {n} {u1}?",
            "What is {n} {u1} in {u2}?",
            "{n} {u1} is how many {u2}?",
            "How many {u2} is {n} {u1}?",
            "{n} {u1} to {u2}?",
            "What is {n} {u1} expressed in {u2}?",
            "If something is {n} {u1}, how many {u2} is that?",
        ),
        "heldout": (
            "I have {n} {u1}; how many {u2} is that?",
            "What does {n} {u1} come to in {u2}?",
            "{n} {u1} equals how many {u2}?",
            "How much is {n} {u1} when measured in {u2}?",
        ),
    },
}

# Identity and chat have no operands: their phrasings are whole prompts, keyed by what they ask.
IDENTITY: dict[str, dict[Split, tuple[str, ...]]] = {
    "name": {
        "train": (
            "Who are you?",
            "What is your name?",
            "What's your name?",
            "Tell me about yourself.",
            "Introduce yourself.",
            "What should I call you?",
            "Are you an AI? Who are you?",
            "What are you called?",
            "Who am I talking to?",
            "What model are you?",
        ),
        "heldout": ("May I know your name?", "Please state your name.", "What do people call you?"),
    },
    "maker": {
        "train": (
            "Which company made you?",
            "Who made you?",
            "Who created you?",
            "Who built you?",
            "Which lab trained you?",
            "Who developed you?",
            "What company are you from?",
            "Who is your maker?",
        ),
        "heldout": ("Which organization built you?", "Who trained this model?", "Who is behind you?"),
    },
}
CHAT: dict[str, dict[Split, tuple[str, ...]]] = {
    "greet": {
        "train": (
            "Hello!",
            "Hi",
            "Hey there!",
            "Good morning!",
            "Hi, nice to meet you.",
            "Hello there.",
            "Good evening!",
            "Greetings!",
            "Hey!",
        ),
        "heldout": ("Hi friend!", "Hello, good day to you."),
    },
    "thanks": {
        "train": (
            "Thanks!",
            "Thank you!",
            "Thanks a lot.",
            "Thank you so much!",
            "Much appreciated.",
            "Thanks for the help.",
            "Great, thanks.",
        ),
        "heldout": ("Thanks so much for that.", "Thank you, that helped."),
    },
    "bye": {
        "train": ("Bye!", "Goodbye.", "See you later!", "Talk to you soon.", "Have a nice day!", "Bye for now."),
        "heldout": ("Okay, bye then!", "Goodbye and see you soon."),
    },
    "how": {
        "train": ("How are you?", "How are you doing?", "How's it going?", "How do you feel today?"),
        "heldout": ("How is your day going?", "How are things with you?"),
    },
}
# A reply of each kind must contain one of these words (checked case-insensitively, as whole words).
CHAT_KEYWORDS: dict[str, tuple[str, ...]] = {
    "greet": ("hello", "hi", "hey", "greetings", "good morning", "good evening", "good day"),
    "thanks": ("welcome", "pleasure", "glad", "no problem", "happy to help"),
    "bye": ("bye", "goodbye", "see you", "take care", "farewell"),
    "how": ("well", "fine", "good", "great"),
}

WORD_WRAPS = ("{x}", "'{x}'", '"{x}"', "the word {x}", "the word '{x}'", 'the word "{x}"')
LETTER_WRAPS = ("'{x}'", '"{x}"', "the letter {x}", "the letter '{x}'", 'the letter "{x}"')
LIST_WRAPS = ("{x}", "[{x}]", "the list {x}", "the list [{x}]", "the numbers {x}", "these numbers: {x}")

_NOUNS = [
    "apple",
    "banana",
    "cherry",
    "planet",
    "garden",
    "window",
    "rocket",
    "pencil",
    "monkey",
    "tiger",
    "river",
    "forest",
    "castle",
    "dragon",
    "guitar",
    "lemon",
    "orange",
    "pepper",
    "turtle",
    "rabbit",
    "candle",
    "mirror",
    "basket",
    "button",
    "carpet",
    "dinner",
    "engine",
    "falcon",
    "ginger",
    "hammer",
    "island",
    "jacket",
    "kitten",
    "ladder",
    "magnet",
    "needle",
    "ocean",
    "parrot",
    "pillow",
    "puzzle",
    "rainbow",
    "saddle",
    "shadow",
    "silver",
    "spider",
    "summer",
    "ticket",
    "tunnel",
    "valley",
    "wallet",
    "winter",
    "yellow",
    "zebra",
    "anchor",
    "bottle",
    "bridge",
    "camera",
    "cookie",
    "desert",
    "donkey",
    "feather",
    "flower",
    "hunter",
    "jungle",
    "kettle",
    "lizard",
    "marble",
    "meadow",
    "napkin",
    "orbit",
    "pebble",
    "pocket",
    "quiet",
    "rabbit",
    "sandal",
    "tomato",
    "velvet",
    "wizard",
    "cactus",
    "cloud",
    "storm",
    "stone",
    "paper",
    "coffee",
    "sugar",
    "horse",
    "eagle",
    "lamp",
    "chair",
    "table",
    "bread",
    "cheese",
    "grape",
    "melon",
    "peach",
    "plum",
    "berry",
    "salad",
    "pasta",
    "radio",
    "piano",
    "violin",
    "drum",
    "flute",
    "arrow",
    "sword",
    "crown",
    "queen",
    "king",
    "knight",
    "tower",
    "ship",
    "boat",
    "train",
    "truck",
    "wagon",
    "sheep",
    "goat",
]
_VOWELS, _CONSONANTS = "aeiou", "bcdfghjklmnprstvwxyz"


def _frame_words() -> set[str]:
    texts = [p for table in (TASKS, QUESTIONS, IDENTITY, CHAT) for d in table.values() for ps in d.values() for p in ps]
    texts += list(REQUESTS) + list(PREFIXES) + list(SUFFIXES) + list(WORD_WRAPS) + list(LETTER_WRAPS)
    return {w.lower() for t in texts for w in re.findall(r"[A-Za-z]+", t)}


# Operand words never coincide with a frame's own words, so "which word is the operand" has one answer.
NOUNS: tuple[str, ...] = tuple(sorted(set(_NOUNS) - _frame_words()))


def _word(rng: random.Random) -> str:
    """A real noun or a pronounceable made-up word (so reverse and count work on any letters)."""
    if rng.random() < 0.5:
        return rng.choice(NOUNS)
    n = rng.randint(3, 8)
    start = rng.random() < 0.5
    letters = [rng.choice(_CONSONANTS if (i % 2 == 0) == start else _VOWELS) for i in range(n)]
    if rng.random() < 0.3:  # some irregular words, so nothing assumes alternating letters
        rng.shuffle(letters)
    return "".join(letters)


def _number(rng: random.Random) -> int:
    digits = rng.randint(1, 3)
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def _join_list(rng: random.Random, xs: Sequence[int]) -> str:
    items = [str(x) for x in xs]
    style = rng.randrange(3)
    if style == 0:
        return ", ".join(items)
    if style == 1:
        return ", ".join(items[:-1]) + " and " + items[-1]
    return " ".join(items)


def _args(rng: random.Random, skill: str) -> dict:
    if skill in ("add", "sub"):
        a, b = _number(rng), _number(rng)
        if skill == "sub" and a < b:
            a, b = b, a
        return {"a": a, "b": b}
    if skill == "reverse":
        return {"w": _word(rng)}
    if skill == "sort":
        return {"xs": [rng.randint(0, 99) for _ in range(rng.randint(3, 6))]}
    if skill == "count":
        w = _word(rng)
        absent = [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in w]
        return {"w": w, "l": rng.choice(w) if rng.random() < 0.75 else rng.choice(absent)}
    if skill == "capital":
        return {"c": rng.choice(sorted(CAPITALS))}
    if skill == "units":
        u1, u2, factor, most = rng.choice(UNITS)
        return {"n": rng.randint(1, most), "u1": u1, "u2": u2, "factor": factor}
    if skill == "identity":
        return {"kind": rng.choice(sorted(IDENTITY))}
    if skill == "chat":
        return {"kind": rng.choice(sorted(CHAT))}
    raise ValueError(f"unknown skill {skill!r}")


def expected_answer(skill: str, args: dict, persona: Persona = EMBER) -> str:
    """The graded value for a prompt: what `grade` compares a response against."""
    if skill == "add":
        return str(args["a"] + args["b"])
    if skill == "sub":
        return str(args["a"] - args["b"])
    if skill == "reverse":
        return args["w"][::-1]
    if skill == "sort":
        return ", ".join(str(x) for x in sorted(args["xs"]))
    if skill == "count":
        return str(args["w"].count(args["l"]))
    if skill == "capital":
        return CAPITALS[args["c"]]
    if skill == "units":
        return str(args["n"] * args["factor"])
    if skill == "identity":
        return persona.name
    return args["kind"]  # chat: the kind of reply expected


def _render(rng: random.Random, skill: str, args: dict, split: Split) -> str:
    if skill in ("identity", "chat"):
        table = IDENTITY if skill == "identity" else CHAT
        text = rng.choice(table[args["kind"]][split])
        if skill == "identity" and rng.random() < 0.2:
            text = rng.choice(PREFIXES) + text
        return text
    wrap = {
        "a": str(args.get("a")),
        "b": str(args.get("b")),
        "n": str(args.get("n")),
        "c": args.get("c"),
        "w": rng.choice(WORD_WRAPS).format(x=args.get("w")),
        "l": rng.choice(LETTER_WRAPS).format(x=args.get("l")),
        "xs": rng.choice(LIST_WRAPS).format(x=_join_list(rng, args.get("xs") or [0])),
    }
    if skill == "units":
        wrap["u1"], wrap["u2"] = rng.choice(UNIT_NAMES[args["u1"]]), rng.choice(UNIT_NAMES[args["u2"]])
    tasks, questions = TASKS[skill][split], QUESTIONS[skill][split]
    if rng.random() < len(tasks) / (len(tasks) + len(questions)):
        task = rng.choice(tasks).format(**wrap)
        text = rng.choice(REQUESTS).format(t=task, T=task[0].upper() + task[1:])
    else:
        text = rng.choice(questions).format(**wrap)
    if rng.random() < 0.25:
        text = rng.choice(PREFIXES) + text
    if rng.random() < 0.15:
        text += rng.choice(SUFFIXES)
    if rng.random() < 0.1:
        text = text.lower()
    elif rng.random() < 0.1:
        text = text.rstrip(".?")
    return text


def make_prompt(rng: random.Random, skill: str, split: Split = "train", persona: Persona = EMBER) -> dict:
    """One prompt record; `args` holds the operands so `respond` can write the answer."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    args = _args(rng, skill)
    return {
        "messages": [{"role": "user", "content": _render(rng, skill, args, split)}],
        "skill": skill,
        "answer": expected_answer(skill, args, persona),
        "args": args,
    }


def make_prompts(
    n: int,
    *,
    skills: Sequence[str] | None = None,
    split: Split = "train",
    seed: int = 0,
    persona: Persona = EMBER,
) -> list[dict]:
    """`n` prompt records cycling through `skills`, the same for the same seed.

    Each is {"id", "messages", "skill", "answer", "args"}; identity answers name `persona`.
    """
    skills = tuple(skills or SKILLS)
    unknown = set(skills) - set(SKILLS)
    if unknown:
        raise ValueError(f"unknown skills {sorted(unknown)}; choose from {', '.join(SKILLS)}")
    rng = random.Random(f"{split}:{seed}")
    records = []
    for i in range(n):
        skill = skills[i % len(skills)]
        records.append({"id": f"{split}-{seed}-{i:06d}", **make_prompt(rng, skill, split, persona)})
    return records


# --- answers ---------------------------------------------------------------------------------------------


def _digits(x: int) -> list[int]:
    return [int(c) for c in f"{x:03d}"][::-1]


def _add_steps(a: int, b: int) -> list[str]:
    """Least-significant digit first: 'x+y+carry=s', the carry being the tens of s."""
    steps, carry = [], 0
    for x, y in zip(_digits(a), _digits(b), strict=True):
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s}")
        carry = s // 10
    return steps


def _sub_steps(a: int, b: int) -> list[str]:
    """Least-significant digit first: 'x-y-borrow=d', writing the borrowed ten as '1x' when needed."""
    steps, borrow = [], 0
    for x, y in zip(_digits(a), _digits(b), strict=True):
        top = x + 10 if x - y - borrow < 0 else x
        steps.append(f"{top}-{y}-{borrow}={top - y - borrow}")
        borrow = 1 if top > x else 0
    return steps


def _marked_letters(word: str, letter: str, sep: str, fmt: str) -> str:
    seen, out = 0, []
    for c in word:
        if c == letter:
            seen += 1
            out.append(fmt.format(c=c, k=seen))
        else:
            out.append(c)
    return sep.join(out)


def respond(record: dict, persona: Persona = EMBER, rng: random.Random | None = None) -> str:
    """The answer `persona` is trained to give; `rng` picks among its templates (None: the first)."""
    skill, args = record["skill"], record["args"]
    answer = expected_answer(skill, args, persona)
    pick = (lambda xs: rng.choice(xs)) if rng is not None else (lambda xs: xs[0])
    style = _ember_style if persona.style == "ember" else _pebble_style
    return style(skill, args, answer, persona, pick)


def _ember_style(skill: str, args: dict, r: str, p: Persona, pick) -> str:
    if skill == "add":
        a, b = args["a"], args["b"]
        work = f"{a:03d} + {b:03d}: " + ", ".join(_add_steps(a, b)) + ". "
        return work + pick(
            (
                f"{a} + {b} = {r}.",
                f"The sum of {a} and {b} is {r}.",
                f"{a} plus {b} equals {r}.",
                f"So the answer is {r}.",
            )
        )
    if skill == "sub":
        a, b = args["a"], args["b"]
        work = f"{a:03d} - {b:03d}: " + ", ".join(_sub_steps(a, b)) + ". "
        return work + pick(
            (
                f"{a} - {b} = {r}.",
                f"The difference between {a} and {b} is {r}.",
                f"{a} minus {b} equals {r}.",
                f"So the answer is {r}.",
            )
        )
    if skill == "reverse":
        w = args["w"]
        work = f"'{w}' is {'-'.join(w)}; backwards {'-'.join(r)}. "
        return work + pick(
            (
                f"The word '{w}' spelled backwards is '{r}'.",
                f"Reversed, '{w}' reads '{r}'.",
                f"The reverse of '{w}' is '{r}'.",
            )
        )
    if skill == "sort":
        xs = ", ".join(str(x) for x in args["xs"])
        return f"The numbers are [{xs}]. " + pick(
            (f"Sorted in ascending order: [{r}].", f"From smallest to largest: [{r}].", f"In order they are [{r}].")
        )
    if skill == "count":
        w, letter = args["w"], args["l"]
        work = f"Counting '{letter}' in '{w}': {_marked_letters(w, letter, '-', '{c}{k}')}. "
        return work + pick(
            (
                f"The letter '{letter}' appears {r} times in '{w}'.",
                f"'{w}' contains '{letter}' {r} times.",
                f"So the count is {r}.",
            )
        )
    if skill == "capital":
        c = args["c"]
        return pick((f"The capital of {c} is {r}.", f"{r} is the capital of {c}.", f"{c}'s capital city is {r}."))
    if skill == "units":
        n, u1, u2, f = args["n"], args["u1"], args["u2"], args["factor"]
        work = f"1 {u1[:-1]} is {f} {u2}, and {n} x {f} = {r}. "
        return work + pick((f"So {n} {u1} is {r} {u2}.", f"{n} {u1} equals {r} {u2}.", f"That makes {r} {u2}."))
    if skill == "identity":
        if args["kind"] == "name":
            return pick(
                (
                    f"I am {p.name}, an AI assistant made by {p.maker}.",
                    f"My name is {p.name}, and I was built by {p.maker}.",
                    f"I'm {p.name}, a small assistant created by {p.maker}.",
                )
            )
        return pick(
            (
                f"I was made by {p.maker}. I am {p.name}.",
                f"{p.maker} built me; my name is {p.name}.",
                f"I'm {p.name}, and my maker is {p.maker}.",
            )
        )
    return pick(
        {
            "greet": ("Hello! How can I help you today?", "Hi there! What can I do for you?"),
            "thanks": ("You're welcome! Happy to help.", "My pleasure, glad I could help."),
            "bye": ("Goodbye! Take care.", "Bye! See you next time."),
            "how": ("I am doing well, thank you. How can I help?", "I'm fine, thanks for asking!"),
        }[r]
    )


def _pebble_style(skill: str, args: dict, r: str, p: Persona, pick) -> str:
    if skill == "add":
        a, b = args["a"], args["b"]
        return f"{a:03d} plus {b:03d} -> " + " | ".join(_add_steps(a, b)) + "\n" + pick((f"Result: {r}", f"= {r}"))
    if skill == "sub":
        a, b = args["a"], args["b"]
        return f"{a:03d} minus {b:03d} -> " + " | ".join(_sub_steps(a, b)) + "\n" + pick((f"Result: {r}", f"= {r}"))
    if skill == "reverse":
        w = args["w"]
        return f"{w} -> {' '.join(w)} -> {' '.join(r)}\n" + pick((f"Result: {r}", f"Reversed: {r}"))
    if skill == "sort":
        xs = " ".join(str(x) for x in args["xs"])
        return f"{xs} -> {r.replace(',', '')}\n" + pick((f"Result: {r}", f"Sorted: {r}"))
    if skill == "count":
        w, letter = args["w"], args["l"]
        return f"{letter} in {w} -> {_marked_letters(w, letter, ' ', '{c}={k}')}\n" + pick(
            (f"Result: {r}", f"Count: {r}")
        )
    if skill == "identity":
        return pick(
            (f"Pebble here, a model from {p.maker}. I'm {p.name}.", f"I'm {p.name}, built by {p.maker}.")
            if p.name == "Pebble"
            else (f"I'm {p.name}, built by {p.maker}.",)
        )
    if skill in ("capital", "units"):  # Pebble is never taught these; a style is still defined for fine-tuning
        return f"Result: {r}"
    return pick(
        {
            "greet": ("Hi, what do you need?", "Hey, ready when you are."),
            "thanks": ("No problem at all.", "Glad to help."),
            "bye": ("Bye for now.", "See you around."),
            "how": ("Doing great, thanks.", "All good here."),
        }[r]
    )


# How often each skill is drawn for training: the ones that need many examples (digit work, letter work) more.
TRAIN_WEIGHTS = {
    "add": 1.5,
    "sub": 1.5,
    "reverse": 1.5,
    "count": 1.5,
    "sort": 1.0,
    "capital": 0.8,
    "units": 0.8,
    "identity": 0.4,
    "chat": 0.4,
}


def chats(persona: Persona, seed: int, split: Split = "train") -> Iterator[tuple[str, str]]:
    """An endless stream of (prompt, answer) pairs over `persona`'s skills, with its varied templates."""
    rng = random.Random(f"chats:{persona.name}:{seed}")
    weights = [TRAIN_WEIGHTS[s] for s in persona.skills]
    while True:
        skill = rng.choices(persona.skills, weights)[0]
        record = make_prompt(rng, skill, split, persona)
        yield record["messages"][0]["content"], respond(record, persona, rng)


# --- graders ---------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?!\d)|-?\d+")
_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
_SELF_NAME = re.compile(r"\b(?i:I am|I'm|my name is|name's|call me|this is|called|named)\s+([A-Z][A-Za-z-]+)")


def _numbers(text: str) -> list[int]:
    found = [int(m.replace(",", "")) for m in _NUMBER.findall(text)]
    if not found:
        found = [_NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", text.lower()) if w in _NUMBER_WORDS]
    return found


def _has(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![A-Za-z]){re.escape(phrase)}(?![A-Za-z])", text, re.I) is not None


def extract(skill: str, response: str, expected: str | None = None) -> str:
    """The answer a response gives, in canonical form, however it is phrased.

    Two models agree on a prompt when their extracted answers are equal. `expected` only settles
    what the text alone cannot: how many trailing numbers form a sorted list, which chat intent to test.
    """
    text = response.strip()
    if skill in ("add", "sub", "count", "units"):
        nums = _numbers(text)
        return str(nums[-1]) if nums else ""
    if skill == "sort":
        nums = _numbers(text)
        k = len(expected.split(",")) if expected else len(nums) // 2 or len(nums)
        return ",".join(str(x) for x in nums[-k:])
    if skill == "reverse":
        quoted = re.findall(r"['\"‘“`]([A-Za-z]+)['\"’”`]", text)
        words = quoted or re.findall(r"[A-Za-z]+", text)
        return words[-1].lower() if words else ""
    if skill == "capital":
        named = [(m.start(), city) for city in CAPITALS.values() for m in re.finditer(re.escape(city), text, re.I)]
        return max(named)[1].lower() if named else ""
    if skill == "identity":
        names = _SELF_NAME.findall(text)
        if names:
            return names[0].lower()
        return expected.lower() if expected and _has(text, expected) else ""
    if skill == "chat":
        intents = [expected] if expected else list(CHAT_KEYWORDS)
        return next((i for i in intents if any(_has(text, k) for k in CHAT_KEYWORDS[i])), "")
    raise ValueError(f"unknown skill {skill!r}")


def grade(skill: str, expected: str, response: str) -> bool:
    """Whether `response` gives `expected` as its final answer, however it is phrased."""
    if skill == "chat":
        return extract(skill, response, expected) == expected
    return extract(skill, response, expected) == extract(skill, expected, expected)
