"""Known-answer tests for each hardness measure's cut-offs."""

from __future__ import annotations

import pytest

from truthprobe.data import Question
from truthprobe.hardness import HardnessError, measures_for, stratify


def q(dataset="arc", qid=None, question="What is it?", answer="x", **meta):
    q.n = getattr(q, "n", 0) + 1
    choices = None if dataset == "gsm8k" else (answer, "other")
    return Question(
        id=qid or f"item{q.n}",
        dataset=dataset,
        split="test",
        question=question,
        choices=choices,
        answer_index=None if choices is None else 0,
        answer=answer,
        meta=meta,
    )


@pytest.mark.parametrize(
    ("grade", "stratum"),
    [(3, "easy"), (5, "easy"), (6, "medium"), (7, "medium"), (8, "hard"), (None, None)],
)
def test_grade_cutoffs(grade, stratum):
    assert stratify([q(grade=grade)], "grade") == (stratum,)


@pytest.mark.parametrize(
    ("bloom", "stratum"),
    [
        ("Remembering", "easy"),
        ("Understanding", "easy"),
        ("Applying", "medium"),
        ("Analyzing", "hard"),
        ("Evaluating", "hard"),
    ],
)
def test_bloom_cutoffs(bloom, stratum):
    assert stratify([q(bloom=bloom)], "bloom") == (stratum,)


@pytest.mark.parametrize(
    ("level", "stratum"), [("Low", "easy"), ("Medium", "medium"), ("High", "hard")]
)
def test_difficulty_cutoffs(level, stratum):
    assert stratify([q(difficulty=level)], "difficulty") == (stratum,)


@pytest.mark.parametrize(("level", "stratum"), [("I", "easy"), ("II", "medium"), ("III", "hard")])
def test_depth_of_knowledge_cutoffs(level, stratum):
    assert stratify([q(depth_of_knowledge=level)], "depth_of_knowledge") == (stratum,)


def test_mmlu_level():
    records = [q("mmlu", level="high_school"), q("mmlu", level="college")]
    assert stratify(records, "level") == ("easy", "hard")


@pytest.mark.parametrize(
    ("n", "stratum"), [(1, "easy"), (2, "easy"), (3, "medium"), (4, "hard"), (5, "hard")]
)
def test_strategyqa_steps(n, stratum):
    record = q("strategyqa", decomposition=[f"step {i}" for i in range(n)], num_steps=n)
    assert stratify([record], "steps") == (stratum,)


@pytest.mark.parametrize(
    ("lines", "stratum"),
    [(2, "easy"), (4, "easy"), (5, "medium"), (6, "medium"), (7, "hard"), (12, "hard")],
)
def test_gsm8k_steps_count_solution_lines_capped_at_10(lines, stratum):
    solution = "\n".join(f"line {i} = <<1+1=2>>2" for i in range(lines)) + "\n\n#### 2"
    record = q("gsm8k", answer="2", solution=solution)
    assert stratify([record], "steps") == (stratum,)


def test_question_words_percentiles():
    """Ten questions of 1..10 words: q30 = 3.7, q70 = 7.3, so 3 easy, 4 medium, 3 hard."""
    records = [q(question=" ".join(["w"] * n)) for n in range(1, 11)]
    assert stratify(records, "question_words") == ("easy",) * 3 + ("medium",) * 4 + ("hard",) * 3


def test_answer_chars_percentiles():
    records = [q("mmlu", answer="a" * n) for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)]
    assert stratify(records, "answer_chars").count("easy") == 3


def test_model_based_measure_needs_scores():
    records = [q(qid=f"m{i}") for i in range(10)]
    with pytest.raises(HardnessError, match="model-based"):
        stratify(records, "mdl")
    scores = {f"m{i}": i / 10 for i in range(10)}
    assert stratify(records, "mdl", scores=scores)[-1] == "hard"


def test_unknown_measure_lists_valid_ones():
    with pytest.raises(HardnessError) as err:
        stratify([q()], "vibes")
    assert "unknown hardness measure 'vibes'" in str(err.value)
    assert "grade" in str(err.value) and "bloom" in str(err.value)


def test_measure_for_other_dataset_is_refused_with_valid_list():
    with pytest.raises(HardnessError) as err:
        stratify([q("mmlu", level="college")], "grade")
    message = str(err.value)
    assert "does not apply to dataset 'mmlu'" in message
    assert "level" in message and "question_words" in message


def test_answer_length_does_not_apply_to_yes_no_answers():
    assert "answer_chars" not in measures_for("strategyqa")
    assert {"steps", "question_words", "reasoning_words"} <= set(measures_for("strategyqa"))
