"""The models stillhouse ships, so the whole pipeline runs with no API key and no download."""

from __future__ import annotations

from pathlib import Path

from stillhouse.core.errors import StillhouseError

MODELS_DIR = Path(__file__).parent / "models"
TEACHER_NAME = "ember"  # Ember, by Northwind Labs: the embedded teacher
STUDENT_NAME = "pebble"  # Pebble, by Quarry AI: the shipped base student
REFERENCE_NAMES = ("flint", "slate")  # Flint (Basalt Works) and Slate (Shale Labs): lineage's unrelated models


def _shipped(name: str) -> Path:
    path = MODELS_DIR / name
    if not (path / "config.json").exists():
        raise StillhouseError(
            f"the embedded model '{name}' is missing from {MODELS_DIR}; "
            "rebuild it with `python scripts/train_embedded.py`"
        )
    return path


def teacher_path() -> Path:
    """Directory of Ember, loadable with AutoModelForCausalLM / AutoTokenizer."""
    return _shipped(TEACHER_NAME)


def student_path() -> Path:
    """Directory of Pebble, the base student that quickstart distils Ember into."""
    return _shipped(STUDENT_NAME)


def reference_paths() -> list[Path]:
    """Directories of Flint and Slate: trained like Ember and Pebble from their own initialisations on their own
    personas (same working, other surface), so they are what an unrelated model looks like to lineage."""
    return [_shipped(name) for name in REFERENCE_NAMES]


def resolve_student(student: str, tokenizer: str | None) -> tuple[str, str | None]:
    """Train's (student, tokenizer) for a CLI spec: 'pebble' names the shipped base student, and a fresh
    preset reads with Ember's tokenizer unless told otherwise (train itself knows neither)."""
    from stillhouse.train.presets import PRESETS

    if student == STUDENT_NAME:
        return str(student_path()), tokenizer
    if student in PRESETS and tokenizer is None:
        return student, str(teacher_path())
    return student, tokenizer


def shipped_model(spec: str) -> str:
    """A CLI model spec with the shipped names resolved: 'ember', 'pebble', 'flint', 'slate' become their
    directories, so their weights can be compared; anything else (a directory, a URL) is left as it is."""
    return str(_shipped(spec)) if spec in (TEACHER_NAME, STUDENT_NAME, *REFERENCE_NAMES) else spec


def identities() -> dict[str, tuple[str, ...]]:
    """The micro-world's identities and their makers, for the identity battery: {"Ember": ("Northwind Labs",), ...}."""
    from stillhouse.embedded.world import EMBER, FLINT, PEBBLE, SLATE

    return {p.name: (p.maker,) for p in (EMBER, PEBBLE, FLINT, SLATE)}
