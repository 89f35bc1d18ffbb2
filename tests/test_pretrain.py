"""Pre-training from scratch (the embedded models' recipe) for a few real steps: loss, resume, refusal."""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from stillhouse.core.errors import StillhouseError
from stillhouse.embedded.pretrain import PretrainConfig, lr_scale, pretrain
from stillhouse.embedded.world import PEBBLE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(model_dir, root, config, **kw):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return model, pretrain(model, tok, PEBBLE, config, root, log_every=1000, **kw)


def test_schedule_warms_up_then_decays_to_a_tenth():
    c = PretrainConfig(steps=1000, warmup=100)
    scales = [lr_scale(s, c) for s in range(1001)]
    assert scales[0] == pytest.approx(0.01) and max(scales) == scales[99] > 0.97  # the cosine runs from step 0
    assert scales[500] == pytest.approx(0.55) and scales[1000] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(scales[99:]))


def test_loss_falls_and_a_killed_run_resumes_on_the_same_curve(tiny_model_dir, tmp_path):
    config = PretrainConfig(steps=16, batch_size=8, lr=3e-3, warmup=4)
    whole_model, whole = run(tiny_model_dir, tmp_path / "whole", config)
    assert whole["step"] == 16 and whole["tokens"] > 16 * 8 * 20
    assert sum(whole["losses"][-4:]) < 0.8 * sum(whole["losses"][:4])

    def killed_after_step_6(step: int) -> None:
        if step == 6:
            raise KeyboardInterrupt

    root = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):  # checkpoints every step (0 minutes), dies after the sixth
        run(tiny_model_dir, root, config, checkpoint_minutes=0, on_checkpoint=killed_after_step_6)
    assert [p.name for p in root.iterdir()] == ["step-00000006"]  # one kept: small enough to commit
    model, resumed = run(tiny_model_dir, root, config)
    assert resumed["losses"] == pytest.approx(whole["losses"], abs=1e-4) and resumed["tokens"] == whole["tokens"]
    a, b = whole_model.state_dict(), model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)

    with pytest.raises(StillhouseError, match="other settings"):
        run(tiny_model_dir, root, PretrainConfig(steps=16, batch_size=4))
