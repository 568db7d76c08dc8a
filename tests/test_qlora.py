"""QLoRA on the real default model: a few steps lower the loss, change predictions, reload.

On this CPU the base model is 8-bit (the paper's own setting for Llama-2): bitsandbytes' CPU
4-bit kernels cannot be trained through (see `train_adapter`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from truthprobe.baselines.qlora import QLoRAConfig, qlora_choice_probs, train_adapter
from truthprobe.models import load_model
from truthprobe.prompts import MULTIPLE_CHOICE
from truthprobe.scoring import choice_log_likelihoods, encode

pytestmark = pytest.mark.real_model  # every test here but the schedule loads the 270M model

CONFIG = QLoRAConfig(lr=2e-3, effective_batch=4, micro_batch=2, max_updates=6, dropout=0.0)


def _mc_loss(loaded, records) -> float:
    items = [encode(loaded.tokenizer, MULTIPLE_CHOICE, r) for r in records]
    with torch.no_grad():
        scores = choice_log_likelihoods(loaded, items)
    return float(
        np.mean(
            [
                torch.nn.functional.cross_entropy(s[None], torch.tensor([r.answer_index])).item()
                for s, r in zip(scores, records, strict=True)
            ]
        )
    )


@pytest.fixture(scope="module")
def trained(load, tmp_path_factory):
    records = [r for r in load("arc").records if r.n_choices == 4]
    train, test = records[:8], records[100:110]
    loaded = load_model("default", quantization="8bit", dtype="float32")
    before_loss = _mc_loss(loaded, train)
    before = qlora_choice_probs(loaded, MULTIPLE_CHOICE, test)
    adapters = tmp_path_factory.mktemp("adapters")
    result = train_adapter(loaded, train, MULTIPLE_CHOICE, adapters, CONFIG, seed=0, progress=False)
    after = qlora_choice_probs(loaded, MULTIPLE_CHOICE, test)
    return dict(
        train=train,
        test=test,
        loaded=loaded,
        before_loss=before_loss,
        before=before,
        after=after,
        result=result,
        adapters=adapters,
    )


def test_training_lowers_the_loss_and_changes_predictions(trained):
    assert len(trained["result"].losses) == 6 and not trained["result"].reused
    assert _mc_loss(trained["loaded"], trained["train"]) < trained["before_loss"]
    assert not np.allclose(trained["before"].probs, trained["after"].probs, atol=1e-3)


def test_adapter_reload_gives_identical_predictions(trained):
    fresh = load_model("default", quantization="8bit", dtype="float32")
    again = train_adapter(
        fresh,
        trained["train"],
        MULTIPLE_CHOICE,
        trained["adapters"],
        CONFIG,
        seed=0,
        progress=False,
    )
    assert again.reused and again.adapter_dir == trained["result"].adapter_dir
    reloaded = qlora_choice_probs(fresh, MULTIPLE_CHOICE, trained["test"])
    np.testing.assert_array_equal(reloaded.probs, trained["after"].probs)


def test_schedule_follows_the_paper():
    per_update, total = QLoRAConfig().schedule(160)
    assert (per_update, total) == (50, 12)  # 4 updates per epoch x 3 epochs
    assert QLoRAConfig().schedule(20) == (20, 10)  # raised to the 10-update minimum
    cot = QLoRAConfig(objective="cot")  # 150 updates at least: 38 epochs of 4 at n = 160
    assert cot.schedule(160) == (50, 152) and cot.schedule(20) == (20, 150)
    assert QLoRAConfig(objective="cot", max_updates=4).schedule(160) == (50, 4)


def test_four_bit_training_on_cpu_is_refused(load, tmp_path):
    from truthprobe.errors import TruthprobeError

    loaded = load_model("default", quantization="4bit", dtype="float32")
    with pytest.raises(TruthprobeError, match="needs a GPU.*8bit"):
        train_adapter(loaded, load("arc").records[:2], MULTIPLE_CHOICE, tmp_path, CONFIG)


def test_cot_objective_lowers_reasoning_loss_and_removal_restores_the_base(load, tmp_path):
    """QLoRA+CoT: the LM loss of gold reasoning falls, completions change, and
    `remove_adapter` gives back the untouched base model (one model serves many runs)."""
    from truthprobe.baselines import cot
    from truthprobe.baselines.qlora import _training_items, remove_adapter

    records = load("strategyqa").records
    train, tests = records[:4], records[10:13]
    loaded = load_model("default", dtype="float32")  # own instance: adapters mutate it

    def reasoning_nll() -> float:
        items = _training_items(loaded, train, None, "cot")
        with torch.no_grad():
            return float(-sum(s[0] for s in choice_log_likelihoods(loaded, items)))

    before_loss = reasoning_nll()
    before = cot.cot_generations(loaded, [], tests, 16, progress=False)
    config = QLoRAConfig(
        objective="cot", lr=2e-3, effective_batch=4, micro_batch=2, max_updates=4, dropout=0.0
    )
    result = train_adapter(loaded, train, None, tmp_path, config, progress=False)
    assert len(result.losses) == 4
    assert reasoning_nll() < before_loss
    after = cot.cot_generations(loaded, [], tests, 16, progress=False)
    assert after.completions != before.completions
    remove_adapter(loaded)
    restored = cot.cot_generations(loaded, [], tests, 16, progress=False)
    assert restored.completions == before.completions


def test_training_scores_equal_the_per_sequence_reference(gemma_fp32, load):
    """QLoRA's differentiable scores (one packed pass: each prompt once, every choice after
    it) equal the reference path's (one full forward per choice, `forward_per_sequence`) in
    float32, and gradients reach the states that made them."""
    from truthprobe.scoring import forward_per_sequence

    records = [r for r in load("arc").records if r.n_choices == 4][:4]
    items = [encode(gemma_fp32.tokenizer, MULTIPLE_CHOICE, r) for r in records]
    scores = choice_log_likelihoods(gemma_fp32, items)
    reference = forward_per_sequence(gemma_fp32, items, [0], 4).logprob
    np.testing.assert_allclose(
        torch.stack(scores).detach().numpy(), reference, atol=5e-4, rtol=0
    )  # the bound of tests/test_activations.py: the same sums in products of other shapes
    embeddings = gemma_fp32.model.get_input_embeddings()
    embeddings.weight.requires_grad_(True)
    try:
        with torch.enable_grad():
            choice_log_likelihoods(gemma_fp32, items[:1])[0].sum().backward()
        assert embeddings.weight.grad is not None and embeddings.weight.grad.abs().sum() > 0
    finally:
        embeddings.weight.requires_grad_(False)
        embeddings.weight.grad = None
