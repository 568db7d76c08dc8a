"""Chain-of-thought prompts, answer matching and greedy generation on real data and the model."""

from __future__ import annotations

import re

import pytest

from truthprobe.baselines import cot
from truthprobe.evaluate import SplitConfig, make_split
from truthprobe.hardness import stratify


@pytest.fixture(scope="module")
def gsm8k_split(load):
    records = list(load("gsm8k").records)
    strata = stratify(records, "steps")
    return records, strata, make_split(strata, SplitConfig(max_test=60))


def test_gold_reasoning_round_trips_to_the_gold_answer(load):
    """Every real GSM8k solution and StrategyQA fact list, rendered as a demonstration's
    answer, is scored correct by the paper's trigger rule (commas, negatives and decimals in
    gold answers included), and the calculator annotations are gone."""
    gsm = load("gsm8k").records
    assert any("," in r.answer for r in gsm) and any(r.answer.startswith("-") for r in gsm)
    assert sum(bool(re.search(r"\d\.\d", cot.reasoning(r))) for r in gsm) > 100  # decimals
    for r in gsm:
        text = cot.target(r)
        assert "<<" not in text and "####" not in text and "\n" not in text, r.id
        assert cot.extract_answer(text, free_form=True) == cot.gold_answer(r), r.id
    for r in load("strategyqa").records:
        assert cot.extract_answer(cot.target(r), free_form=False) == r.answer, r.id


@pytest.mark.parametrize(
    ("completion", "free_form", "expected"),
    [
        ("She has 1,200 - 200 = 1,000 left. So the answer is 1,000.", True, "1000"),
        ("It falls 3.5 - 5 = -1.5 so the answer is -1.5\nQ: next", True, "-1.5"),
        ("Each costs $0.50, the answer is $2.50.", True, "2.5"),
        ("She has 7 apples left.", True, None),  # no trigger: wrong, as in the paper
        ("So the answer is unknown.", True, None),
        ("Therefore, the answer is <number>.\nNow you try! 1. 2.", True, None),  # next line
        ("Whales are mammals. So the answer is Yes.", False, "yes"),
        ("So the answer is no\nQ: Is", False, "no"),
        ("Whales are mammals.", False, None),
    ],
)
def test_answer_extraction(completion, free_form, expected):
    assert cot.extract_answer(completion, free_form) == expected


@pytest.mark.parametrize("train_on", ["easy", "hard", "all"])
def test_cot_demonstrations_come_from_the_stratum_never_the_test_set(gsm8k_split, train_on):
    records, strata, split = gsm8k_split
    tests = [records[i] for i in split.test]
    test_questions = {t.question for t in tests}
    for seed in range(3):
        rows = split.train_rows(train_on, seed, n=8)
        demos = [records[i] for i in rows]
        if train_on != "all":
            assert {strata[i] for i in rows} == {train_on}
        prompt = cot.build_prompt(demos, tests[seed])
        assert prompt.demonstration_ids == tuple(d.id for d in demos)
        shown = prompt.prefix.rsplit("\n\n", 1)[0]
        assert not any(q in shown for q in test_questions)
        assert prompt.prefix.endswith(f"\n\nQ: {tests[seed].question}\nA:")
        assert prompt.prefix.count("So the answer is") == 8
        with pytest.raises(Exception, match="test items"):
            cot.cot_generations(None, demos + tests[:1], tests, 1)


def test_truncation_leaves_room_for_the_completion(gsm8k_split):
    records, _, split = gsm8k_split
    demos = [records[i] for i in split.train_rows("easy", 0, n=8)]
    test = records[split.test[0]]

    def words(text: str) -> int:
        return len(text.split())

    full = words(cot.build_prompt(demos, test).prefix)
    prompt = cot.build_prompt(demos, test, words, max_tokens=full, max_new_tokens=50)
    assert prompt.dropped > 0 and words(prompt.prefix) + 50 <= full
    assert prompt.prefix.endswith(cot.query(test))
    zero = cot.build_prompt([], test, instruction=cot.WORKSHEET)
    assert zero.prefix == cot.WORKSHEET + "\n" + cot.query(test)


def _greedy_alone(loaded, prompt: str, max_new_tokens: int) -> str:
    """transformers' own greedy `generate` on one whole prompt (no padding, no shared
    prefix), cut at CoT's stop string: the reference for `generate_greedy`."""
    ids = loaded.tokenizer(prompt, return_tensors="pt").input_ids
    tokens = loaded.model.generate(
        input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False, top_p=None, top_k=None
    )[0, ids.shape[1] :]
    return loaded.tokenizer.decode(tokens, skip_special_tokens=True).split(cot.STOP[0])[0]


@pytest.mark.parametrize("dataset", ["gsm8k", "strategyqa"])
def test_shared_prefix_batched_generation_equals_greedy_alone(gemma_fp32, load, dataset):
    """With the k = 8 demonstrations run once and the prompts decoded three at a time (a
    waiting prompt joins when another stops), every completion equals transformers' greedy
    `generate` on that whole prompt alone (float32). GSM8k's prompts are longer than Gemma 3's
    512-token sliding window, so its windowed layers' masks are exercised too."""
    from truthprobe.scoring import common_prefix, encode_texts, generate_greedy

    records = list(load(dataset).records)
    demos, tests = records[:8], records[8:13]
    prompts = [cot.build_prompt(demos, t).prefix for t in tests]
    tokenizer = gemma_fp32.tokenizer
    lengths = [len(tokenizer(p).input_ids) for p in prompts]
    shared = common_prefix([encode_texts(tokenizer, p, [], "") for p in prompts])
    assert shared > 0.8 * min(lengths)  # the demonstrations run once
    assert dataset != "gsm8k" or min(lengths) > 512  # past the sliding window
    batched = generate_greedy(gemma_fp32, prompts, 40, cot.STOP, batch_size=3, progress=False)
    alone = [_greedy_alone(gemma_fp32, p, 40) for p in prompts]
    assert batched == alone
    assert all(text.strip() for text in batched)


def test_stopping_once_the_answer_is_decided_keeps_every_answer(gemma_fp32, load):
    """Zero-shot GSM8k (the worksheet prompt, which the model answers and then goes on past):
    a completion ended as soon as its answer line is complete is the start of the full one,
    gives the same extracted answer, and some do end earlier (so the rule saves tokens)."""
    tests = list(load("gsm8k").records)[:6]
    kwargs = dict(max_new_tokens=120, instruction=cot.WORKSHEET, progress=False)
    early = cot.cot_generations(gemma_fp32, [], tests, **kwargs)
    full = cot.cot_generations(gemma_fp32, [], tests, stop_when_decided=False, **kwargs)
    assert early.predicted == full.predicted
    assert any(cot.answer_decided(c) for c in full.completions)  # answer lines to decide on
    for short, long in zip(early.completions, full.completions, strict=True):
        assert long.startswith(short)
        assert cot.answer_decided(short) or short == long
    assert sum(map(len, early.completions)) < sum(map(len, full.completions))


def test_a_question_too_long_for_the_model_is_refused_naming_its_record(tiny, load):
    """A question that, with the 300 new tokens GSM8k allows, passes the model's 8,192 positions
    is refused before any pass, naming the record, not deep inside generation."""
    from dataclasses import replace

    from truthprobe.errors import TruthprobeError

    record = load("gsm8k").records[0]
    long = replace(record, question="How many? " + "apples " * 8000)
    with pytest.raises(TruthprobeError, match=rf"id '{re.escape(long.id)}'.*8192 positions"):
        cot.cot_generations(tiny, [], [long], progress=False)


def test_generation_stops_at_the_demonstration_separator(gemma_fp32, gsm8k_split):
    """With the stop string a completion is what the unstopped one says before its first blank
    line; without it the model does go on to a blank line (so the stop does something)."""
    from truthprobe.scoring import generate_greedy

    records, _, split = gsm8k_split
    demos = [records[i] for i in split.train_rows("easy", 0, n=2)]
    prompts = [cot.build_prompt(demos, records[i]).prefix for i in split.test[:3]]
    stopped = generate_greedy(gemma_fp32, prompts, 100, cot.STOP, progress=False)
    free = generate_greedy(gemma_fp32, prompts, 100, (), progress=False)
    assert any("\n\n" in text for text in free)
    assert stopped == [text.split("\n\n")[0] for text in free]
