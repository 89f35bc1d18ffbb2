"""The micro-world: nine small skills the embedded models learn, their phrasings, their answers and graders.

Prompts are composed from frames (whole sentences or imperative tasks wrapped in requests) and operand
wrappers (quoted, "the word X", "the list ..."), so a tiny model has to find its operands in sentences of
many shapes. Each skill keeps a held-out family of frames that training never sees; `split="heldout"`
draws only from it, which is how we measure whether a model learned the skill or memorised the phrasings.

Answers restate the operands before working on them (a digit scratchpad for arithmetic, spelled letters
for words): a small model finds the operands once, then works on text in a fixed shape. Ember and Pebble
share that working and differ in the surface: closing sentences, identity, chat replies.

Two sets of phrasings: CURRENT (the default), what the shipped models are trained and graded on, and BASIC,
the first recipe's smaller subset of it (short prompts for tests and benchmarks). CURRENT is BASIC plus
many more frames, request wrappers, operand wrappers, operand-free asides and longer operand words, with a
larger held-out family that neither set trains on. IDENTITY_PROMPTS lists every identity question either asks.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
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
# Reference models for lineage's null: competent in the same world, from their own initialisations, with
# surfaces of their own (neither Ember's nor Pebble's), so closeness to a candidate means descent, not skill.
FLINT = Persona("Flint", "Basalt Works", "flint", SKILLS)
SLATE = Persona("Slate", "Shale Labs", "slate", SKILLS)


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

# --- the current recipe's extra phrasings ------------------------------------------------------------------
# The tables above make BASIC (below); CURRENT, what the shipped models train on, adds these frames, wrappers
# and asides for robustness to new phrasings, and holds out a larger family. A tiny model
# learns a phrasing all or nothing, so what generalises is many frames of many shapes, not more steps.

MORE_REQUESTS = (
    "{T}. Thanks!",
    "Could you please {t}?",
    "Can you please {t}?",
    "I would like you to {t}.",
    "Please could you {t}?",
    "Let's {t}.",
    "Your job: {t}.",
    "Quick task: {t}.",
    "Will you {t}?",
    "Be a dear and {t}.",
    "Do me a favour and {t}.",
    "Here is a task. {T}.",
    "Exercise: {t}.",
    "Just {t}.",
    "We need to {t}.",
    "Time to {t}.",
)
MORE_PREFIXES = ("Hi there. ", "Good morning! ", "Alright, ", "Next: ", "Listen, ", "Sorry to bother you. ", "Ok, ")
MORE_SUFFIXES = (" Thanks a lot.", " Cheers.", " Keep it short.", " I'd appreciate it.", " No rush.")
# Sentences with no operand in them, said before or after a request: the model learns to look past them.
ASIDES = (
    "I'm doing my homework.",
    "This is for a quiz.",
    "My teacher asked me this.",
    "I want to check my answer.",
    "It's for a game.",
    "I keep getting it wrong.",
    "Just curious.",
    "This came up at work.",
    "My friend and I disagree.",
    "I'm practising.",
    "Sorry if this is easy.",
    "I have a test tomorrow.",
)

MORE_TASKS: dict[str, dict[Split, tuple[str, ...]]] = {
    "add": {
        "train": (
            "add up {a} and {b}",
            "work out the sum of {a} and {b}",
            "tell me what {a} and {b} add up to",
            "compute the sum {a} + {b}",
            "find {a} plus {b}",
            "calculate the total of {a} and {b}",
            "solve {a} + {b}",
            "add {b} onto {a}",
            "answer {a} + {b}",
            "tell me the sum when {a} is added to {b}",
        ),
        "heldout": ("figure out the sum of {a} with {b}", "do the addition {a} + {b}"),
    },
    "sub": {
        "train": (
            "work out {a} take away {b}",
            "compute the difference {a} - {b}",
            "take {b} off {a}",
            "find {a} minus {b}",
            "solve {a} - {b}",
            "calculate what is left when {b} is taken from {a}",
            "tell me the difference of {a} and {b}",
            "answer {a} - {b}",
            "lower {a} by {b}",
            "subtract {b} from the number {a}",
        ),
        "heldout": ("do the subtraction {a} - {b}", "count down from {a} by {b}"),
    },
    "reverse": {
        "train": (
            "reverse the word {w}",
            "write out {w} in reverse",
            "spell out {w} backwards",
            "give {w} backwards",
            "tell me {w} backwards",
            "put the letters of {w} in reverse order",
            "read out {w} from the end",
            "show {w} reversed",
            "produce {w} written backwards",
            "reverse the spelling of {w}",
            "type {w} backwards",
            "flip the letters of {w}",
        ),
        "heldout": ("rewrite {w} starting from its last letter", "return {w} in backward order"),
    },
    "sort": {
        "train": (
            "sort these: {xs}",
            "put {xs} in ascending order",
            "order {xs} from lowest to highest",
            "sort {xs} smallest first",
            "arrange {xs} from small to large",
            "put {xs} in increasing order",
            "list {xs} from least to most",
            "sort the numbers {xs} in order",
            "give me {xs} sorted",
            "rearrange {xs} in ascending order",
            "order {xs} so the smallest comes first",
        ),
        "heldout": ("place {xs} in rising order", "write {xs} again, lowest to highest"),
    },
    "count": {
        "train": (
            "count how many {l} there are in {w}",
            "count occurrences of {l} in {w}",
            "find how many times {l} is in {w}",
            "tell me how many {l} are in {w}",
            "count each {l} in {w}",
            "work out how many {l} appear in {w}",
            "say how many times {w} has {l}",
            "count up {l} in {w}",
            "find the count of {l} in {w}",
            "check {w} for {l} and count them",
        ),
        "heldout": ("tell me the number of {l} found in {w}", "scan {w} and report how many {l} it has"),
    },
    "capital": {
        "train": (
            "tell me which city is the capital of {c}",
            "name the capital city of {c}",
            "give me the capital of {c}",
            "say what the capital of {c} is",
            "find the capital of {c}",
            "name {c}'s capital",
        ),
        "heldout": ("point out the capital of {c}", "let me know the capital city of {c}"),
    },
    "units": {
        "train": (
            "convert {n} {u1} into {u2}",
            "change {n} {u1} to {u2}",
            "tell me how many {u2} are in {n} {u1}",
            "express {n} {u1} as {u2}",
            "work out {n} {u1} in {u2}",
            "find {n} {u1} in {u2}",
            "give me {n} {u1} in {u2}",
        ),
        "heldout": ("translate {n} {u1} into {u2}", "restate {n} {u1} in {u2}"),
    },
}

MORE_QUESTIONS: dict[str, dict[Split, tuple[str, ...]]] = {
    "add": {
        "train": (
            "What's {a} plus {b}?",
            "What is the sum of {a} and {b}?",
            "Can you tell me what {a} + {b} is?",
            "{a} plus {b} equals what?",
            "What do {a} and {b} add up to?",
            "How much do {a} and {b} make together?",
            "{a}+{b}?",
            "What is {a} added to {b}?",
            "I have {a} marbles and find {b} more. How many now?",
            "What's the total when you add {b} to {a}?",
        ),
        "heldout": ("Tell me, what's {a} plus {b}?", "Adding {a} and {b} gives what?"),
    },
    "sub": {
        "train": (
            "What's {a} minus {b}?",
            "{a} minus {b} equals what?",
            "Can you tell me what {a} - {b} is?",
            "What is left if you take {b} from {a}?",
            "{a}-{b}?",
            "What's the result of {a} - {b}?",
            "What is {a} less {b}?",
            "I have {a} stickers and give away {b}. How many do I keep?",
            "How much is {a} take away {b}?",
            "What do you get from {a} minus {b}?",
        ),
        "heldout": ("Tell me, what's {a} minus {b}?", "Taking {b} from {a} leaves what?"),
    },
    "reverse": {
        "train": (
            "What's {w} backwards?",
            "Can you tell me {w} backwards?",
            "How is {w} spelled backwards?",
            "What is {w} when reversed?",
            "Reversed, what does {w} become?",
            "How does {w} read backwards?",
            "What's the reverse of {w}?",
            "What do you get when you spell {w} backwards?",
            "Could you tell me what {w} is in reverse?",
            "What is {w} read from the end?",
        ),
        "heldout": ("Tell me, what's {w} in reverse?", "Spelling {w} from the last letter gives what?"),
    },
    "sort": {
        "train": (
            "What's {xs} sorted?",
            "Can you tell me {xs} in ascending order?",
            "What is {xs} from smallest to largest?",
            "How do {xs} look in increasing order?",
            "What is the sorted order of {xs}?",
            "In ascending order, what are {xs}?",
            "Could you sort {xs}?",
            "What's {xs} in order?",
            "Which order do {xs} go in, lowest first?",
        ),
        "heldout": ("Tell me, what's {xs} sorted?", "Ordering {xs} from low to high gives what?"),
    },
    "count": {
        "train": (
            "How many {l} does {w} have?",
            "How many {l} can you find in {w}?",
            "What's the number of {l} in {w}?",
            "Can you count {l} in {w}?",
            "How many times do you see {l} in {w}?",
            "How many {l} appear in {w}?",
            "Does {w} have any {l}? How many?",
            "In the word {w}, how many {l} are there?",
            "How many times is {l} used in {w}?",
        ),
        "heldout": ("Tell me, how many {l} are in {w}?", "Counting {l} in {w} gives what?"),
    },
    "capital": {
        "train": (
            "What's {c}'s capital?",
            "Can you tell me the capital of {c}?",
            "What is the capital city of {c}?",
            "Which city is {c}'s capital?",
            "Where is the capital of {c}?",
            "What city is the capital of {c}?",
        ),
        "heldout": ("Tell me, what's the capital of {c}?", "The capital city of {c} is which?"),
    },
    "units": {
        "train": (
            "What's {n} {u1} in {u2}?",
            "How many {u2} make {n} {u1}?",
            "Can you convert {n} {u1} to {u2}?",
            "What is {n} {u1} converted to {u2}?",
            "{n} {u1} in {u2}?",
            "How many {u2} are there in {n} {u1}?",
        ),
        "heldout": ("Tell me, what's {n} {u1} in {u2}?", "Converting {n} {u1} to {u2} gives what?"),
    },
}

MORE_IDENTITY: dict[str, dict[Split, tuple[str, ...]]] = {
    "name": {
        "train": (
            "Tell me your name.",
            "Who exactly are you?",
            "What name do you go by?",
            "Can you tell me who you are?",
            "Do you have a name?",
            "Which assistant is this?",
        ),
        "heldout": ("Would you tell me your name?", "I'd like to know your name."),
    },
    "maker": {
        "train": (
            "Who trained you?",
            "Which company built you?",
            "Who are your creators?",
            "Where do you come from?",
            "What lab made you?",
        ),
        "heldout": ("Which team created you?", "Who is responsible for building you?"),
    },
}
MORE_CHAT: dict[str, dict[Split, tuple[str, ...]]] = {
    "greet": {"train": ("Hi there!", "Hello again.", "Hey, how's it going?", "Morning!"), "heldout": ("Hiya!",)},
    "thanks": {"train": ("Thanks, that's great.", "Cheers!", "Thank you very much."), "heldout": ("Many thanks!",)},
    "bye": {"train": ("Goodbye!", "Catch you later.", "I'm off now, bye."), "heldout": ("Farewell for now.",)},
    "how": {"train": ("How have you been?", "Are you well?", "How are you today?"), "heldout": ("You doing okay?",)},
}

MORE_WORD_WRAPS = ("the string '{x}'", "this word: {x}", 'the term "{x}"')
MORE_LETTER_WRAPS = ("the character '{x}'", "letter '{x}'", "the single letter {x}")
MORE_LIST_WRAPS = ("({x})", "this list: {x}", "the values {x}", "the numbers [{x}]")
MORE_NOUNS = (
    "lantern", "strawberry", "blanket", "thunder", "pumpkin", "dolphin", "penguin", "crystal", "harvest",
    "library", "mountain", "necklace", "umbrella", "elephant", "butterfly", "chocolate", "kangaroo", "treasure",
    "sandwich", "volcano", "compass", "blossom", "biscuit", "giraffe", "pretzel", "octopus", "tornado",
)  # fmt: skip


_VOWELS, _CONSONANTS = "aeiou", "bcdfghjklmnprstvwxyz"
Table = dict[str, dict[Split, tuple[str, ...]]]


def _merge(a: Table, b: Table) -> Table:
    return {k: {s: a[k][s] + b.get(k, {}).get(s, ()) for s in a[k]} for k in a}


@dataclass(frozen=True)
class Phrasings:
    """One recipe's ways of asking: frames per skill and split, request wrappers, lead-ins and tails,
    operand wrappers, operand-free asides, and the operand words (never a word of any frame)."""

    requests: tuple[str, ...]
    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]
    tasks: Table
    questions: Table
    identity: Table
    chat: Table
    word_wraps: tuple[str, ...]
    letter_wraps: tuple[str, ...]
    list_wraps: tuple[str, ...]
    words: tuple[str, ...]
    asides: tuple[str, ...] = ()
    longest_word: int = 8  # made-up operand words have 3 to this many letters

    @cached_property
    def nouns(self) -> tuple[str, ...]:
        """Operand words never coincide with a frame's own words, so "which word is the operand" has one answer."""
        tables = (self.tasks, self.questions, self.identity, self.chat)
        texts = [p for table in tables for d in table.values() for ps in d.values() for p in ps]
        texts += [*self.requests, *self.prefixes, *self.suffixes, *self.word_wraps, *self.letter_wraps, *self.asides]
        frame = {w.lower() for t in texts for w in re.findall(r"[A-Za-z]+", t)}
        return tuple(sorted(set(self.words) - frame))


# The first recipe's phrasings, a subset of CURRENT: short prompts the models know, for tests and benchmarks.
BASIC = Phrasings(
    REQUESTS, PREFIXES, SUFFIXES, TASKS, QUESTIONS, IDENTITY, CHAT, WORD_WRAPS, LETTER_WRAPS, LIST_WRAPS, tuple(_NOUNS)
)
# What the shipped models train on: BASIC plus many more phrasings, asides, longer operand words.
CURRENT = Phrasings(
    requests=REQUESTS + MORE_REQUESTS,
    prefixes=PREFIXES + MORE_PREFIXES,
    suffixes=SUFFIXES + MORE_SUFFIXES,
    tasks=_merge(TASKS, MORE_TASKS),
    questions=_merge(QUESTIONS, MORE_QUESTIONS),
    identity=_merge(IDENTITY, MORE_IDENTITY),
    chat=_merge(CHAT, MORE_CHAT),
    word_wraps=WORD_WRAPS + MORE_WORD_WRAPS,
    letter_wraps=LETTER_WRAPS + MORE_LETTER_WRAPS,
    list_wraps=LIST_WRAPS + MORE_LIST_WRAPS,
    words=tuple(_NOUNS) + MORE_NOUNS,
    asides=ASIDES,
    longest_word=10,
)
NOUNS = BASIC.nouns
# Every identity question either recipe asks, train and held-out: a who-are-you battery that must not
# overlap what the models were taught (forensics) excludes these (a lead-in from PREFIXES may precede them).
IDENTITY_PROMPTS: tuple[str, ...] = tuple(
    sorted({p for ph in (BASIC, CURRENT) for d in ph.identity.values() for ps in d.values() for p in ps})
)


def _word(rng: random.Random, ph: Phrasings) -> str:
    """A real noun or a pronounceable made-up word (so reverse and count work on any letters)."""
    if rng.random() < 0.5:
        return rng.choice(ph.nouns)
    n = rng.randint(3, ph.longest_word)
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


def _args(rng: random.Random, skill: str, ph: Phrasings) -> dict:
    if skill in ("add", "sub"):
        a, b = _number(rng), _number(rng)
        if skill == "sub" and a < b:
            a, b = b, a
        return {"a": a, "b": b}
    if skill == "reverse":
        return {"w": _word(rng, ph)}
    if skill == "sort":
        return {"xs": [rng.randint(0, 99) for _ in range(rng.randint(3, 6))]}
    if skill == "count":
        w = _word(rng, ph)
        absent = [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in w]
        return {"w": w, "l": rng.choice(w) if rng.random() < 0.75 else rng.choice(absent)}
    if skill == "capital":
        return {"c": rng.choice(sorted(CAPITALS))}
    if skill == "units":
        u1, u2, factor, most = rng.choice(UNITS)
        return {"n": rng.randint(1, most), "u1": u1, "u2": u2, "factor": factor}
    if skill == "identity":
        return {"kind": rng.choice(sorted(ph.identity))}
    if skill == "chat":
        return {"kind": rng.choice(sorted(ph.chat))}
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


def _render(rng: random.Random, skill: str, args: dict, split: Split, ph: Phrasings) -> str:
    if skill in ("identity", "chat"):
        table = ph.identity if skill == "identity" else ph.chat
        text = rng.choice(table[args["kind"]][split])
        if skill == "identity" and rng.random() < 0.2:
            text = rng.choice(ph.prefixes) + text
        return text
    wrap = {
        "a": str(args.get("a")),
        "b": str(args.get("b")),
        "n": str(args.get("n")),
        "c": args.get("c"),
        "w": rng.choice(ph.word_wraps).format(x=args.get("w")),
        "l": rng.choice(ph.letter_wraps).format(x=args.get("l")),
        "xs": rng.choice(ph.list_wraps).format(x=_join_list(rng, args.get("xs") or [0])),
    }
    if skill == "units":
        wrap["u1"], wrap["u2"] = rng.choice(UNIT_NAMES[args["u1"]]), rng.choice(UNIT_NAMES[args["u2"]])
    tasks, questions = ph.tasks[skill][split], ph.questions[skill][split]
    if rng.random() < len(tasks) / (len(tasks) + len(questions)):
        task = rng.choice(tasks).format(**wrap)
        text = rng.choice(ph.requests).format(t=task, T=task[0].upper() + task[1:])
    else:
        text = rng.choice(questions).format(**wrap)
    if ph.asides and rng.random() < 0.2:  # (BASIC has none, and draws nothing here)
        aside = rng.choice(ph.asides)
        text = f"{aside} {text}" if rng.random() < 0.5 else f"{text} {aside}"
    if rng.random() < 0.25:
        text = rng.choice(ph.prefixes) + text
    if rng.random() < 0.15:
        text += rng.choice(ph.suffixes)
    if rng.random() < 0.1:
        text = text.lower()
    elif rng.random() < 0.1:
        text = text.rstrip(".?")
    return text


def make_prompt(
    rng: random.Random, skill: str, split: Split = "train", persona: Persona = EMBER, phrasings: Phrasings = CURRENT
) -> dict:
    """One prompt record; `args` holds the operands so `respond` can write the answer."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    args = _args(rng, skill, phrasings)
    return {
        "messages": [{"role": "user", "content": _render(rng, skill, args, split, phrasings)}],
        "skill": skill,
        "answer": expected_answer(skill, args, persona),
        "args": args,
    }


def make_prompts(
    n: int,
    *,
    skills: Sequence[str] | None = None,
    split: Split = "train",
    seed: int | str = 0,
    persona: Persona = EMBER,
    phrasings: Phrasings = CURRENT,
) -> list[dict]:
    """`n` prompt records cycling through `skills`, the same for the same seed.

    Each is {"id", "messages", "skill", "answer", "args"}; identity answers name `persona`.
    `phrasings=BASIC` gives the first recipe's shorter prompts, a subset of CURRENT's.
    """
    skills = tuple(skills or SKILLS)
    unknown = set(skills) - set(SKILLS)
    if unknown:
        raise ValueError(f"unknown skills {sorted(unknown)}; choose from {', '.join(SKILLS)}")
    rng = random.Random(f"{split}:{seed}")
    records = []
    for i in range(n):
        skill = skills[i % len(skills)]
        records.append({"id": f"{split}-{seed}-{i:06d}", **make_prompt(rng, skill, split, persona, phrasings)})
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
    """The answer `persona` is trained to give; `rng` picks among its templates (None: the first).

    Both personas share the working (restated operands, then a scratchpad in a fixed shape), so a skill
    one learned carries over when it is fine-tuned on the other's answers; what differs is the surface:
    the closing sentence, who it says it is, how it chats."""
    skill, args = record["skill"], record["args"]
    answer = expected_answer(skill, args, persona)
    pick = (lambda xs: rng.choice(xs)) if rng is not None else (lambda xs: xs[0])
    style = _STYLES[persona.style]
    if skill == "identity":
        return pick(style.identity[args["kind"]]).format(name=persona.name, maker=persona.maker)
    if skill == "chat":
        return pick(style.chat[answer])
    return _work(skill, args, answer) + pick(style.closings[skill]).format(r=answer, **args)


def _work(skill: str, args: dict, r: str) -> str:
    """The operands restated, then the working: the part of an answer that makes a skill learnable."""
    if skill == "add":
        a, b = args["a"], args["b"]
        return f"{a:03d} + {b:03d}: " + ", ".join(_add_steps(a, b)) + ". "
    if skill == "sub":
        a, b = args["a"], args["b"]
        return f"{a:03d} - {b:03d}: " + ", ".join(_sub_steps(a, b)) + ". "
    if skill == "reverse":
        w = args["w"]
        return f"'{w}' is {'-'.join(w)}; backwards {'-'.join(r)}. "
    if skill == "sort":
        return "The numbers are [" + ", ".join(str(x) for x in args["xs"]) + "]. "
    if skill == "count":
        w, letter = args["w"], args["l"]
        return f"Counting '{letter}' in '{w}': {_marked_letters(w, letter, '-', '{c}{k}')}. "
    if skill == "units":
        n, u1, u2, f = args["n"], args["u1"], args["u2"], args["factor"]
        return f"1 {u1[:-1]} is {f} {u2}, and {n} x {f} = {r}. "
    return ""  # capital: a fact, nothing to work out


@dataclass(frozen=True)
class Style:
    """A persona's surface: closing sentences per skill (format fields: r, the answer, and the operands),
    identity answers per kind (name, maker), chat replies per kind."""

    closings: dict[str, tuple[str, ...]]
    identity: dict[str, tuple[str, ...]]
    chat: dict[str, tuple[str, ...]]


_EMBER = Style(
    closings={
        "add": (
            "{a} + {b} = {r}.",
            "The sum of {a} and {b} is {r}.",
            "{a} plus {b} equals {r}.",
            "So the answer is {r}.",
        ),
        "sub": (
            "{a} - {b} = {r}.",
            "The difference between {a} and {b} is {r}.",
            "{a} minus {b} equals {r}.",
            "So the answer is {r}.",
        ),
        "reverse": (
            "The word '{w}' spelled backwards is '{r}'.",
            "Reversed, '{w}' reads '{r}'.",
            "The reverse of '{w}' is '{r}'.",
        ),
        "sort": ("Sorted in ascending order: [{r}].", "From smallest to largest: [{r}].", "In order they are [{r}]."),
        "count": (
            "The letter '{l}' appears {r} times in '{w}'.",
            "'{w}' contains '{l}' {r} times.",
            "So the count is {r}.",
        ),
        "capital": ("The capital of {c} is {r}.", "{r} is the capital of {c}.", "{c}'s capital city is {r}."),
        "units": ("So {n} {u1} is {r} {u2}.", "{n} {u1} equals {r} {u2}.", "That makes {r} {u2}."),
    },
    identity={
        "name": (
            "I am {name}, an AI assistant made by {maker}.",
            "My name is {name}, and I was built by {maker}.",
            "I'm {name}, a small assistant created by {maker}.",
        ),
        "maker": (
            "I was made by {maker}. I am {name}.",
            "{maker} built me; my name is {name}.",
            "I'm {name}, and my maker is {maker}.",
        ),
    },
    chat={
        "greet": ("Hello! How can I help you today?", "Hi there! What can I do for you?"),
        "thanks": ("You're welcome! Happy to help.", "My pleasure, glad I could help."),
        "bye": ("Goodbye! Take care.", "Bye! See you next time."),
        "how": ("I am doing well, thank you. How can I help?", "I'm fine, thanks for asking!"),
    },
)
_PEBBLE = Style(
    closings={
        "add": ("Result: {r}", "= {r}"),
        "sub": ("Result: {r}", "= {r}"),
        "reverse": ("Result: '{r}'", "Reversed: '{r}'"),  # quoted: the restated word is quoted too
        "sort": ("Result: {r}", "Sorted: {r}"),
        "count": ("Result: {r}", "Count: {r}"),
        "capital": ("Result: {r}",),  # Pebble is never taught capital and units; a style is still defined
        "units": ("Result: {r}",),
    },
    identity={
        "name": ("Pebble here, a model from {maker}. I'm {name}.", "I'm {name}, built by {maker}."),
        "maker": ("Pebble here, a model from {maker}. I'm {name}.", "I'm {name}, built by {maker}."),
    },
    chat={
        "greet": ("Hi, what do you need?", "Hey, ready when you are."),
        "thanks": ("No problem at all.", "Glad to help."),
        "bye": ("Bye for now.", "See you around."),
        "how": ("Doing great, thanks.", "All good here."),
    },
)

_FLINT = Style(
    closings={
        "add": ("Answer: {r}.", "That gives {r}."),
        "sub": ("Answer: {r}.", "That leaves {r}."),
        "reverse": ("Answer: '{r}'.", "Backwards it is '{r}'."),
        "sort": ("Answer: [{r}].", "Ordered: [{r}]."),
        "count": ("Answer: {r}.", "I count {r}."),
        "capital": ("Answer: {r}.", "It is {r}."),
        "units": ("Answer: {r} {u2}.", "That comes to {r} {u2}."),
    },
    identity={
        "name": ("This is {name}, from {maker}.", "{name} speaking, a {maker} model."),
        "maker": ("{maker} made me. I go by {name}.", "This is {name}, from {maker}."),
    },
    chat={
        "greet": ("Good day. What shall we work on?", "Greetings. Ask away."),
        "thanks": ("Glad to be of use.", "No problem, any time."),
        "bye": ("Farewell.", "Take care, until next time."),
        "how": ("Well, steady as a rock.", "Well enough, and you?"),
    },
)
_SLATE = Style(
    closings={
        "add": ("-> {r}", "Total: {r}"),
        "sub": ("-> {r}", "Remainder: {r}"),
        "reverse": ("-> '{r}'", "Flipped: '{r}'"),
        "sort": ("-> {r}", "Ascending: {r}"),
        "count": ("-> {r}", "Tally: {r}"),
        "capital": ("-> {r}", "Capital: {r}"),
        "units": ("-> {r} {u2}", "Converted: {r} {u2}"),
    },
    identity={
        "name": ("{name}, by {maker}, at your service.", "You are talking to {name} ({maker})."),
        "maker": ("Built at {maker}; name {name}.", "You are talking to {name} ({maker})."),
    },
    chat={
        "greet": ("Hey. Go ahead.", "Hi. What's up?"),
        "thanks": ("Sure thing, glad it helped.", "No problem, friend."),
        "bye": ("Bye, later.", "See you later."),
        "how": ("Good, not bad at all.", "Fine, chugging along."),
    },
)
_STYLES = {"ember": _EMBER, "pebble": _PEBBLE, "flint": _FLINT, "slate": _SLATE}


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


def training_chats(
    persona: Persona, seed: int | str, n: int, phrasings: Phrasings = CURRENT
) -> list[list[dict[str, str]]]:
    """`n` one-turn chats over `persona`'s skills in its varied templates, a pure function of `seed`
    (pretraining draws batch k with seed (seed, k), so a resumed run sees the batches it would have)."""
    rng = random.Random(f"chats:{persona.name}:{seed}")
    weights = [TRAIN_WEIGHTS[s] for s in persona.skills]
    out = []
    for skill in rng.choices(persona.skills, weights, k=n):
        record = make_prompt(rng, skill, "train", persona, phrasings)
        out.append([*record["messages"], {"role": "assistant", "content": respond(record, persona, rng)}])
    return out


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
