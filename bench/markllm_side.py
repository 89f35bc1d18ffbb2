"""MarkLLM's half of bench/markllm_parity.py: run with the MarkLLM venv's python, never with ours.

Reads one JSON job on stdin and writes one JSON answer on stdout:
- `green`: our green list per context token. MarkLLM's own KGW scorer (`KGWUtils.score_sequence`) and logits
  processor (`KGWLogitsProcessor`) run with their green-list lookup answered from it, so what is compared is
  their counting, z-score and biasing against ours on the same green lists.
- MarkLLM's native leftHash scheme (its `hash_key`) is also asked for its green list after every context, so
  ours can score the same texts under MarkLLM's lists.
"""

import json
import sys
from types import SimpleNamespace

import torch
from markllm.watermark.kgw.kgw import KGWLogitsProcessor, KGWUtils


def main() -> None:
    job = json.load(sys.stdin)
    vocab, gamma, delta = job["vocab_size"], job["gamma"], job["delta"]
    config = SimpleNamespace(
        gamma=gamma,
        delta=delta,
        hash_key=job["hash_key"],
        prefix_length=1,
        f_scheme="time",
        window_scheme="left",
        vocab_size=vocab,
        device="cpu",
    )
    native = KGWUtils(config)
    native_green = {str(t): native.get_greenlist_ids(torch.tensor([t])).tolist() for t in range(vocab)}
    native_z = [native.score_sequence(torch.tensor(ids))[0] for ids in job["texts"]]

    ours = KGWUtils(config)
    table = {int(t): torch.tensor(ids, dtype=torch.long) for t, ids in job["green"].items()}
    ours.get_greenlist_ids = lambda input_ids: table[int(input_ids[-1])]
    z = [ours.score_sequence(torch.tensor(ids))[0] for ids in job["texts"]]
    processor = KGWLogitsProcessor(config, ours)
    biased = processor(torch.tensor(job["histories"]), torch.tensor(job["logits"], dtype=torch.float32))
    json.dump({"z": z, "native_z": native_z, "native_green": native_green, "biased": biased.tolist()}, sys.stdout)


if __name__ == "__main__":
    main()
