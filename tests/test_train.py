"""Training real tiny students for a few steps: SFT, KD, LoRA, exact resume, and bad input."""

from __future__ import annotations

import errno
import json
import shutil
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from accelerate import Accelerator
from chats import add_teacher_logprobs, skill_chats, write_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

import stillhouse.train.data as D
import stillhouse.train.loop as loop
import stillhouse.train.losses as L
from stillhouse import cli
from stillhouse.core.errors import StillhouseError
from stillhouse.core.ids import files_hash
from stillhouse.provenance.ledger import Ledger
from stillhouse.train import TrainConfig, train
from stillhouse.train.data import IGNORE, Vocab, encode_chat
from stillhouse.train.losses import topk_kl

CARD = {"teachers": [{"model": "ember", "host": "127.0.0.1"}], "terms": ["own"], "purposes": ["distillation"]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cfg(student, **kw) -> TrainConfig:
    return TrainConfig(student=str(student), batch_size=8, lr=1e-3, **kw)


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("sft"), skill_chats(48), CARD)


@pytest.fixture(scope="module")
def kd_data(tmp_path_factory, tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    teacher = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = add_teacher_logprobs(skill_chats(32), teacher, tok)
    rows[0]["logprobs"] = rows[0]["logprobs"][1:]  # its tokens no longer line up with the answer's
    return write_dataset(tmp_path_factory.mktemp("kd"), rows, CARD)


def head_tail(losses, n=5):
    return sum(losses[:n]) / n, sum(losses[-n:]) / n


def test_sft_loss_falls_and_saves_a_model_with_card_and_lineage(sft_data, tiny_model_dir, tmp_path):
    out = tmp_path / "student"
    r = train(sft_data, out, cfg(tiny_model_dir, max_steps=40).model_copy(update={"save_every": 15}), progress=False)
    first, last = head_tail(r.losses)
    assert last < 0.6 * first
    assert r.steps == 40 and r.tokens > 0 and r.tokens_per_s > 0
    assert not (out / "checkpoints").exists()

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and model.config.vocab_size == len(tok)
    card = (out / "README.md").read_text()
    for fact in ("ember", "own", "distillation", r.dataset_hash, r.model_hash):
        assert fact in card
    assert r.model_hash == files_hash(out, [out / "model.safetensors"])[0]

    with Ledger(out / "ledger.sqlite") as led:
        assert not led.verify()
        (run,) = led.runs()
    assert run["stage"] == "train" and run["ok"] is True and run["purposes"] == ["distillation"]
    assert run["inputs"]["dataset"]["hash"] == r.dataset_hash
    assert run["outputs"]["model"]["hash"] == r.model_hash


def test_bf16_autocast_follows_the_fp32_curve_and_the_ledger_says_which_ran(sft_data, tiny_model_dir, tmp_path):
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        runs[precision] = train(sft_data, out, cfg(tiny_model_dir, max_steps=20, precision=precision), progress=False)
        with Ledger(out / "ledger.sqlite") as led:
            (run,) = led.runs()
        assert run["precision"] == {"fp32": "fp32", "bf16": "bf16 autocast"}[precision], run
        assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.float32  # master weights stay fp32
    # bf16 rounds each matmul, so the curves part a little; the run still learns what fp32 learns
    assert runs["bf16"].losses == pytest.approx(runs["fp32"].losses, rel=0.05)
    assert runs["bf16"].losses[-1] < 0.8 * runs["bf16"].losses[0]
    on_gpu = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert loop.uses_bf16("auto") == on_gpu and not loop.uses_bf16("fp32")


def test_loss_is_on_assistant_tokens_only(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 plus 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "Reverse stone."},
        {"role": "assistant", "content": "enots"},
    ]
    ids, mask = encode_chat(tok, chat)
    assert tok.decode([t for t, m in zip(ids, mask, strict=True) if m]) == "4<|end|>enots<|end|>"
    # a template without {% generation %} markers gets the same mask from rendering prefixes
    tok.chat_template = tok.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    assert encode_chat(tok, chat) == (ids, mask)
    labels = D.build_examples([{"messages": chat}], tok, None, kd=False)[0][0].labels
    assert [t for t in labels if t != IGNORE] == [t for t, m in zip(ids, mask, strict=True) if m]


def test_packed_batches_lose_exactly_what_single_chats_do(tiny_model_dir):
    """Packing several chats per row, restarting positions and logits only at targets change nothing."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert L.honours_packing(model)
    rows = [{"messages": r["messages"]} for r in skill_chats(6)]
    rows[0]["messages"][0]["content"] *= 4  # one long prompt, so the others share rows
    examples = D.build_examples(rows, tok, None, kd=False)[0]
    cpu = torch.device("cpu")
    batch = D.Collator(tok.pad_token_id, cpu)(examples)
    assert batch["input_ids"].shape[0] < len(examples) and batch["tokens"] == sum(len(e.ids) for e in examples)
    with torch.no_grad():
        together = float(L.batch_loss(model, batch, 0.0))
        one = D.Collator(tok.pad_token_id, cpu, pack=False)
        alone = [(float(L.batch_loss(model, one([e]), 0.0)), sum(t != IGNORE for t in e.labels)) for e in examples]
        padded = float(L.batch_loss(model, one(examples), 0.0))
        full = float(L.batch_loss(model, D.Collator(tok.pad_token_id, cpu, select_logits=False)(examples), 0.0))
    expected = sum(loss * n for loss, n in alone) / sum(n for _, n in alone)
    assert together == pytest.approx(expected, abs=1e-5)
    assert padded == pytest.approx(together, abs=1e-5) and full == pytest.approx(together, abs=1e-6)


def test_pack_rows_fills_rows_first_fit_longest_first():
    assert D.pack_rows([5, 3, 2, 4, 1], 5) == [[0], [3, 4], [1, 2]]
    assert D.pack_rows([2, 2, 2], 6) == [[0, 1, 2]]


def test_resume_after_a_kill_continues_the_same_curve(sft_data, tiny_model_dir, tmp_path, monkeypatch):
    config = cfg(tiny_model_dir, max_steps=12)
    whole = train(sft_data, tmp_path / "whole", config.model_copy(update={"save_every": 4}), progress=False)

    real_loss, calls = loop.batch_loss, 0

    def killed_at_step_7(*args, **kw):  # dies after the step-4 checkpoint, with steps 5 and 6 lost
        nonlocal calls
        calls += 1
        if calls == 7:
            raise KeyboardInterrupt
        return real_loss(*args, **kw)

    out = tmp_path / "resumed"
    monkeypatch.setattr(loop, "batch_loss", killed_at_step_7)  # where the loop looks it up
    with pytest.raises(KeyboardInterrupt):
        train(sft_data, out, config.model_copy(update={"save_every": 4}), progress=False)
    monkeypatch.setattr(loop, "batch_loss", real_loss)
    (out / "checkpoints" / ".step-00000008.tmp").mkdir()  # a checkpoint the kill cut short
    resumed = train(sft_data, out, config.model_copy(update={"save_every": 4}), progress=False)

    assert resumed.resumed_from == 4 and resumed.run_id != whole.run_id
    assert resumed.losses == pytest.approx(whole.losses, abs=1e-6)
    a, b = (AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (whole.model_dir, out))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with Ledger(out / "ledger.sqlite") as led:
        kinds = [(e.kind, e.body.get("ok"), e.body.get("resumed_from_step")) for e in led.entries()]
        (run,) = led.runs()
    assert kinds == [
        ("train.start", None, None),
        ("train.end", False, None),
        ("train.start", None, 4),
        ("train.end", True, None),
    ]
    assert run["ok"] is True


def test_changed_settings_do_not_resume_a_different_run(sft_data, tiny_model_dir, tmp_path):
    out = tmp_path / "m"
    (out / "checkpoints" / "step-00000004").mkdir(parents=True)
    (out / "checkpoints" / "step-00000004" / "state.json").write_text(json.dumps({"fingerprint": "other"}))
    with pytest.raises(StillhouseError, match="other settings"):
        train(sft_data, out, cfg(tiny_model_dir, max_steps=8), progress=False)


def test_topk_kl_is_zero_for_the_teachers_own_distribution_and_positive_otherwise():
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    p = logits.softmax(-1)
    top = p.topk(5)
    own = topk_kl(logits.log_softmax(-1), top.indices, top.values)
    other = topk_kl(torch.randn(6, 50).log_softmax(-1), top.indices, top.values)
    assert abs(float(own)) < 1e-6 and float(other) > 0.1
    # the tail bucket: mass outside the top-k counts, so moving it into the top-k costs
    skewed = logits.clone()
    skewed.scatter_(1, top.indices[:, :1], 10.0)
    assert float(topk_kl(skewed.log_softmax(-1), top.indices, top.values)) > float(own) + 0.1


def test_kd_trains_and_skips_rows_whose_tokens_do_not_line_up(kd_data, tiny_model_dir, tmp_path):
    r = train(kd_data, tmp_path / "kd", cfg(tiny_model_dir, max_steps=12, kd="topk"), progress=False)
    first, last = head_tail(r.losses, 3)
    assert last < first
    assert r.skipped == {"kd_misaligned": 1}
    card = (tmp_path / "kd" / "README.md").read_text()
    assert "top-k logit distillation" in card


def test_teacher_tokens_map_by_bytes(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    vocab = Vocab(tok)
    # GPT-2 byte-level writes byte 0xC3 as 'Ã' and newline as 'Ċ': a partial UTF-8 token has bytes, not text
    assert vocab.id_of({"token": "\ufffd", "bytes": [0xC3]}) == tok.convert_tokens_to_ids("Ã")
    assert vocab.id_of({"token": "\n", "bytes": [10]}) == tok.convert_tokens_to_ids("Ċ")
    assert vocab.id_of({"token": "<|end|>"}) == tok.convert_tokens_to_ids("<|end|>")
    with pytest.raises(StillhouseError, match="teacher's tokenizer"):
        vocab.id_of({"token": "☃☃☃", "bytes": list("☃☃☃".encode())})


def test_lora_trains_adapters_and_saves_a_merged_plain_model(sft_data, tiny_model_dir, tmp_path):
    out = tmp_path / "lora"
    r = train(sft_data, out, cfg(tiny_model_dir, max_steps=10, lora=True, lora_r=4), progress=False)
    assert r.losses[-1] < r.losses[0]
    assert not list(out.glob("adapter_*"))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert set(base) == set(tuned)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base[q], tuned[q])  # adapters merged in
    assert torch.equal(base["model.embed_tokens.weight"], tuned["model.embed_tokens.weight"])  # frozen
    assert "LoRA r=4" in (out / "README.md").read_text()


def test_fresh_preset_student_with_a_given_tokenizer(sft_data, tiny_model_dir, tmp_path):
    config = TrainConfig(student="tiny", tokenizer=str(tiny_model_dir), max_steps=3, batch_size=8)
    r = train(sft_data, tmp_path / "fresh", config, progress=False)
    assert r.steps == 3 and "fresh 'tiny' preset" in (tmp_path / "fresh" / "README.md").read_text()
    with pytest.raises(StillhouseError, match="needs a tokenizer"):  # train knows no default teacher
        train(sft_data, tmp_path / "no-tok", TrainConfig(student="tiny", max_steps=3), progress=False)


def test_a_full_disk_fails_in_one_line_and_keeps_the_last_checkpoint(sft_data, tiny_model_dir, tmp_path, monkeypatch):
    real_save, saves = Accelerator.save_state, 0

    def disk_fills_on_second_save(self, output_dir=None, **kw):
        nonlocal saves
        saves += 1
        if saves == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", disk_fills_on_second_save)
    out = tmp_path / "m"
    config = cfg(tiny_model_dir, max_steps=10)
    with pytest.raises(StillhouseError) as e:
        train(sft_data, out, config.model_copy(update={"save_every": 3}), progress=False)
    assert "disk full" in str(e.value) and "step-00000003" in str(e.value) and "\n" not in str(e.value)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000003"]
    monkeypatch.setattr(Accelerator, "save_state", real_save)
    assert train(sft_data, out, config.model_copy(update={"save_every": 3}), progress=False).resumed_from == 3


def run_cli(monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["stillhouse", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:")
    return err


def test_bad_input_is_one_line(sft_data, tiny_model_dir, tmp_path, monkeypatch, capsys):
    wrong = tmp_path / "wrong"
    (wrong / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"prompt": "hi", "completion": "yo"}]), wrong / "data" / "train-0.parquet")
    assert "has no 'messages'" in run_cli(monkeypatch, capsys, "train", wrong, "-o", tmp_path / "o1")
    assert "not a curated dataset" in run_cli(monkeypatch, capsys, "train", tmp_path, "-o", tmp_path / "o2")

    no_template = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, no_template)
    (no_template / "chat_template.jinja").unlink(missing_ok=True)
    conf = json.loads((no_template / "tokenizer_config.json").read_text())
    conf.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(conf))
    err = run_cli(monkeypatch, capsys, "train", sft_data, "-o", tmp_path / "o3", "--student", no_template)
    assert "no chat template" in err

    err = run_cli(
        monkeypatch, capsys, "train", sft_data, "-o", tmp_path / "o4", "--student", tiny_model_dir, "--kd", "topk"
    )
    assert "no teacher logprobs" in err
    assert "neither a model directory" in run_cli(
        monkeypatch, capsys, "train", sft_data, "-o", tmp_path / "o5", "--student", tmp_path / "nope"
    )


def test_kd_refuses_a_student_with_another_tokenizer(tiny_model_dir, tmp_path, monkeypatch, capsys):
    rows = skill_chats(4)
    for r in rows:
        r["logprobs"] = [{"token": "☃", "logprob": -0.1, "bytes": list("☃".encode()), "top_logprobs": []}]
    data = write_dataset(tmp_path / "foreign", rows)
    err = run_cli(monkeypatch, capsys, "train", data, "-o", tmp_path / "o", "--student", tiny_model_dir, "--kd", "topk")
    assert "teacher's tokenizer" in err


def test_mix_weighs_rows_by_their_meta_and_names_a_value_no_row_has(tiny_model_dir, tmp_path, monkeypatch, capsys):
    rows = skill_chats(40)
    for r in rows:
        r["meta"] = json.dumps({"skill": r.pop("skill"), "answer": r.pop("answer")})
    data = write_dataset(tmp_path / "data", rows, CARD)
    weights = TrainConfig(student="x", mix=("skill=reverse:0", "skill=add:2.5")).mix_weights
    mixed = D.mixed(rows, weights, seed=0)
    assert mixed == D.mixed(rows, weights, seed=0)  # seeded: a resumed run sees the same rows
    skills = [json.loads(r["meta"])["skill"] for r in mixed]
    assert set(skills) == {"add"} and 40 <= len(skills) <= 60  # 20 add rows, each 2 or 3 times

    out = tmp_path / "student"
    r = train(data, out, cfg(tiny_model_dir, max_steps=2, mix=("skill=reverse:0",)), progress=False)
    with Ledger(out / "ledger.sqlite") as led:
        (run,) = led.runs()
    assert run["inputs"]["dataset"]["rows"] == 40 and run["inputs"]["dataset"]["rows_mixed"] == 20
    assert r.steps == 2

    capsys.readouterr()  # what training printed
    err = run_cli(monkeypatch, capsys, "train", data, "-o", tmp_path / "o1", "--mix", "skill=sorty:2")
    assert "no training row has meta skill 'sorty'" in err and "add, reverse" in err
    assert not (tmp_path / "o1").exists()
    assert "FIELD=VALUE:WEIGHT" in run_cli(monkeypatch, capsys, "train", data, "-o", tmp_path / "o2", "--mix", "sort")
