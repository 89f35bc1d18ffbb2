"""Serving throughput: `stillhouse serve` at 1, 8 and 32 concurrent clients vs one `model.generate` per request.

Same model, same run, greedy, a fixed number of new tokens (end-of-turn ignored: the server's `ignore_eos`,
generate's `eos_token_id=None`); the outputs are compared with the baseline's. The server runs as it is
deployed, `stillhouse serve` in its own process (its peak RSS is read from /proc), and the clients (the
openai SDK, async) run here; the baseline runs here too, with the same torch thread count.
The model is Ember when it is built (or --model DIR), else a random `tiny` Llama with the chat tokenizer.

    PYTHONPATH=src python bench/serve.py [--model DIR] [--requests 64] [--max-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from stillhouse.embedded import MODELS_DIR, TEACHER_NAME
from stillhouse.embedded.tokenizer import train_tokenizer
from stillhouse.train.presets import fresh_model

QUESTIONS = [
    "What is {a} plus {b}?",
    "Reverse the word {w}.",
    "Sort these numbers: {a}, {b}, {c}.",
    "How many letters are in {w}?",
    "What is {a} minus {c}?",
    "Who are you?",
]
WORDS = ["planet", "garden", "silver", "window", "marble", "rocket", "candle", "forest"]


def prompts(count: int) -> list[list[dict[str, str]]]:
    """Distinct short chat prompts in the style of the embedded teacher's skills."""
    out = []
    for i in range(count):
        q = QUESTIONS[i % len(QUESTIONS)].format(
            a=17 * i % 90 + 10, b=31 * i % 70 + 5, c=i % 9, w=WORDS[i % len(WORDS)]
        )
        out.append([{"role": "user", "content": q}])
    return out


def random_tiny_model(out: Path) -> Path:
    """A random tiny Llama with the shared chat tokenizer, for when Ember is not built yet."""
    torch.manual_seed(0)
    corpus = [q.format(a=12, b=30, c=5, w=w) for q in QUESTIONS for w in WORDS] * 20
    tok = train_tokenizer(corpus, vocab_size=512)
    fresh_model("tiny", tok, max_positions=512).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def baseline(model_dir: Path, chats: list, max_tokens: int) -> tuple[float, list[str], int]:
    """One model.generate call per request, in turn: seconds, texts, completion tokens."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    texts, tokens = [], 0
    model.generate(torch.tensor([[tok.bos_token_id or 0]]), max_new_tokens=2, do_sample=False)  # warm-up
    start = time.perf_counter()
    with torch.inference_mode():
        for chat in chats:
            text = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
            ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
            new = model.generate(
                ids, max_new_tokens=max_tokens, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id
            )[0, ids.shape[1] :]
            texts.append(tok.decode(new, skip_special_tokens=True))
            tokens += len(new)
    return time.perf_counter() - start, texts, tokens


async def clients(base_url: str, model: str, chats: list, concurrency: int, max_tokens: int) -> tuple[float, list, int]:
    """`concurrency` clients, each sending its next request when the previous answer arrives."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    texts: list[str | None] = [None] * len(chats)
    todo = iter(range(len(chats)))
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        for i in todo:
            r = await client.chat.completions.create(
                model=model, messages=chats[i], max_tokens=max_tokens, temperature=0, extra_body={"ignore_eos": True}
            )
            texts[i] = r.choices[0].message.content
            tokens += r.usage.completion_tokens

    async with client:
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, texts, tokens


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def cli_server(model_dir: Path, threads: int) -> Iterator[tuple[str, str, subprocess.Popen]]:
    """`stillhouse serve MODEL --port 0` in a child process: (base_url, model name, process)."""
    cli = [sys.executable, "-c", "from stillhouse.cli import main; main()"]
    cmd = [*cli, "serve", str(model_dir), "--port", "0", "--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()  # serving model 'NAME' at URL (Ctrl-C to stop)
        if " at " not in line:
            raise SystemExit(f"server did not start: {line!r}")
        yield line.split(" at ")[1].split()[0], line.split("'")[1], proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="model directory (default: Ember if built, else a random tiny Llama)")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timings are medians of this many runs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, both sides (1 is faster on a busy CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            ember = MODELS_DIR / TEACHER_NAME
            model_dir = ember if (ember / "config.json").exists() else random_tiny_model(Path(tmp))
        label = "Ember" if model_dir.name == TEACHER_NAME else f"{model_dir} (random tiny Llama)"
        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
        chats = prompts(args.requests)
        print(f"model: {label}, {n_params / 1e6:.1f}M parameters; {args.requests} requests x {args.max_tokens} tokens,")
        print(f"greedy; torch threads {args.threads}; load average before: {os.getloadavg()[0]:.2f}")

        runs: dict[str, list[tuple[float, list, int]]] = {"generate, one request at a time": []}
        with cli_server(model_dir, args.threads) as (base_url, name, proc):
            for _ in range(args.repeats):  # interleaved, so load from other jobs falls on every column alike
                runs["generate, one request at a time"].append(baseline(model_dir, chats, args.max_tokens))
                for c in (1, 8, 32):
                    result = asyncio.run(clients(base_url, name, chats, c, args.max_tokens))
                    runs.setdefault(f"stillhouse serve, {c} clients", []).append(result)
            server_rss = peak_rss_mib(proc.pid)
        print(f"peak RSS: server process {server_rss:.0f} MiB; baseline + clients process {rss_mib():.0f} MiB")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        base_texts = runs["generate, one request at a time"][0][1]
        rows, base_tps = [], None
        for run, results in runs.items():
            seconds = statistics.median(r[0] for r in results)
            tps = results[0][2] / seconds
            base_tps = base_tps or tps
            same = sum(a == b for a, b in zip(results[0][1], base_texts, strict=True))
            rows.append((run, tps, args.requests / seconds, tps / base_tps, same))
        print()
        print(f"| {'run':<34} | {'tokens/s':>9} | {'requests/s':>10} | {'vs baseline':>11} | {'same output':>11} |")
        print(f"|{'-' * 36}|{'-' * 11}|{'-' * 12}|{'-' * 13}|{'-' * 13}|")
        for name, tps, rps, ratio, same in rows:
            print(f"| {name:<34} | {tps:>9.0f} | {rps:>10.2f} | {ratio:>10.2f}x | {same:>5}/{args.requests:<5} |")


if __name__ == "__main__":
    main()
