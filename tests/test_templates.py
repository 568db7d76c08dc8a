"""Prompt templates from the command line or a file, and lm-evaluation-harness-compatible
zero-shot: prompts equal lm-eval's own rendering, `acc_norm` divides by the choice's characters
without the separator, and the sweep's zero-shot equals lm-eval's on the same items and model.

lm-eval's side is always lm-eval's own code (`truthprobe.parity`: its task files and `HFLM`).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_jsonl
from test_cli_config import truthprobe

from truthprobe.choice_probs import zero_shot_probs
from truthprobe.data import Question
from truthprobe.prompts import LMEVAL, choice_chars, resolve_template


@pytest.fixture(scope="module")
def items(load):
    """Real ARC test items, and MMLU test items of every subject (lm-eval's descriptions)."""
    arc = [r for r in load("arc").records if r.split == "test"][::97][:12]
    mmlu = [r for r in load("mmlu").records if r.split == "test"]
    by_subject: dict[str, list] = {}
    for r in mmlu:
        by_subject.setdefault(r.meta["subject"], []).append(r)
    mmlu = [r for rs in by_subject.values() for r in rs[:2]]
    return arc, mmlu


def test_lmeval_template_renders_exactly_as_lm_eval(items):
    from truthprobe.parity import lmeval_tasks

    arc, mmlu = items
    assert len(mmlu) == 20  # 10 subjects, two items each
    for records, name in ((arc, "lmeval"), (mmlu, "lmeval-mmlu")):
        for record, (task, doc) in zip(records, lmeval_tasks(records), strict=True):
            template = resolve_template("lmeval", [record])
            assert template.name == name
            context = task.fewshot_context(doc, 0)
            requests = task.construct_requests(doc, context, metadata=("t", 0, 1))
            assert template.prefix(record) == context
            assert template.continuations(record) == [r.args[1] for r in requests]
            assert requests[0].args[0] == context
    subject = mmlu[0].meta["subject"].replace("_", " ")
    assert (
        resolve_template("lmeval", mmlu[:1])
        .prefix(mmlu[0])
        .startswith(f"The following are questions (with answers) about {subject}.\n\nQuestion: ")
    )


def test_acc_norm_divides_by_the_choice_without_its_separator():
    """lm-eval's `acc_norm`: log-likelihood / len(choice). Here the separator would flip it:
    "a" (-2.0) vs "abcd" (-7.0) is -2.0 vs -1.75 per character (choice 1), but -1.0 vs -1.4
    with the leading space counted (choice 0)."""
    record = Question(
        id="q", dataset="mine", split="test", question="?", choices=("a", "abcd", "abcdefgh"),
        answer_index=1, answer="abcd",
    )  # fmt: skip
    assert choice_chars(record) == [1, 4, 8]
    logprob = np.array([[-2.0, -7.0, -20.0]])
    chars = np.array([choice_chars(record)])
    mask = np.ones((1, 3), bool)
    by_hand = [-2.0 / 1, -7.0 / 4, -20.0 / 8]
    assert int(np.argmax(by_hand)) == 1
    norm = zero_shot_probs(["q"], logprob, chars, mask, "chars")
    raw = zero_shot_probs(["q"], logprob, chars, mask, "raw")
    assert norm.predictions().tolist() == [1] and raw.predictions().tolist() == [0]
    expected = np.exp(by_hand) / np.exp(by_hand).sum()  # the scores' softmax
    np.testing.assert_allclose(norm.probs[0], expected, rtol=1e-12)
    with_space = zero_shot_probs(["q"], logprob, chars + 1, mask, "chars")
    assert with_space.predictions().tolist() == [0]  # what the old divisor gave


@pytest.fixture(scope="module")
def graded_arc(load):
    """160 real ARC records with a grade (every stratum), for a small sweep."""
    return [r for r in load("arc").records if r.meta.get("grade")][::25][:160]


def test_a_sweep_with_the_lmeval_template_scores_as_lm_eval(
    graded_arc, tiny_model_dir, tmp_path, cli
):
    """`truthprobe sweep --template lmeval` in float32: the cache is the lmeval one, and its
    zero-shot `acc` / `acc_norm` equal lm-eval's on the same test items and model."""
    from truthprobe.activations import ActivationCache
    from truthprobe.models import load_model
    from truthprobe.parity import compare
    from truthprobe.runstore import load_run

    path = write_jsonl(tmp_path / "arc-lm.jsonl", graded_arc)
    out = cli(
        "sweep", "--tasks", f"{path}:grade", "--template", "lmeval", "--model",
        str(tiny_model_dir), "--dtype", "float32", "--n-train", "8", "--seeds", "1",
        "--validation-size", "6", "--n-boot", "50", "--layers", "1", "--no-mid-last",
        "--probe-preset", "validated", "--probes", "mc_linear", "--max-per-stratum", "0",
        "--cache-dir", str(tmp_path / "act"), "--runs-dir", str(tmp_path / "runs"),
        "--plots-dir", str(tmp_path / "plots"), "--no-progress",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (cache_path,) = (tmp_path / "act").rglob("*.h5")
    assert cache_path.name.startswith("arc-lm-lmeval-")
    (run_dir,) = (tmp_path / "runs").iterdir()
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["config"]["prompt"]["template"] == "lmeval"
    task = meta["datasets"][f"{path}:grade"]
    assert task["template"] == {"name": "lmeval", "hash": LMEVAL.hash}
    frame = load_run(run_dir).items
    frame = frame[frame["role"].isin(["test", "validation"])]  # zero-shot scores every item
    zero = frame[frame["method"] == "zero_shot"].set_index("item_id")
    norm = frame[frame["method"] == "zero_shot_norm"].set_index("item_id")
    by_id = {r.id: r for r in graded_arc}
    tested = [by_id[i] for i in zero.index]
    report = compare(load_model(str(tiny_model_dir), dtype="float32"), tested)
    assert report.prompts_equal == len(tested) >= 20
    assert report.max_ll_difference < 0.05
    for name, ours in (("acc", zero), ("acc_norm", norm)):
        theirs = np.mean([getattr(i, f"lmeval_{name}") for i in report.items])
        assert abs(ours.loc[[r.id for r in tested], "correct"].mean() - theirs) <= 0.01, name
    # acc_norm by hand from the cache's log-likelihoods and the choices' characters
    with ActivationCache(cache_path) as cache:
        assert cache.attrs["template"] == LMEVAL.to_json()
        row = {item_id: k for k, item_id in enumerate(cache.ids)}
        logprob = cache.score("choice_logprob")
    for record in tested:
        ll = logprob[row[record.id], : record.n_choices]
        by_hand = int(np.argmax(ll / np.array([len(c) for c in record.choices])))
        assert bool(norm.loc[record.id, "correct"]) == (by_hand == record.answer_index)


MY_TEMPLATE = {
    "name": "mine",
    "question_format": "Q: {question}",
    "list_choices": False,
    "answer_format": "\nA:",
    "description": "About {subset} science.\n",
}


def test_a_template_file_renders_caches_and_records_its_text(
    graded_arc, tiny_model_dir, tmp_path, cli
):
    path = write_jsonl(tmp_path / "arc-mine.jsonl", graded_arc[:12])
    spec = tmp_path / "mine.json"
    spec.write_text(json.dumps(MY_TEMPLATE))
    template = resolve_template(None, graded_arc, spec)
    record = graded_arc[0]
    assert template.prefix(record) == (
        f"About {record.meta['subset']} science.\nQ: {record.question}\nA:"
    )
    start, stop = template.question_span(record)
    assert template.prefix(record)[start:stop] == record.question
    out = cli(
        "extract", "--dataset", str(path), "--template-file", str(spec), "--model",
        str(tiny_model_dir), "--cache-dir", str(tmp_path / "act"), "--no-progress",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (cache_path,) = (tmp_path / "act").rglob("*.h5")
    assert cache_path.name.startswith("arc-mine-mine-")
    from truthprobe.activations import ActivationCache

    with ActivationCache(cache_path) as cache:
        assert json.loads(cache.attrs["template"]) == {
            **json.loads(LMEVAL.to_json()),
            **MY_TEMPLATE,
            "choice_format": "\n{label}) {choice}",
        }
        assert cache.attrs["template_hash"] == template.hash != LMEVAL.hash


BAD_TEMPLATES = [
    ("{not json", "not readable JSON"),
    (json.dumps({**MY_TEMPLATE, "suffix": "x"}), "unknown field 'suffix'"),
    (json.dumps({**MY_TEMPLATE, "question_format": "Q:"}), "must contain {question}"),
    (json.dumps({**MY_TEMPLATE, "continuation_format": " {answer}"}), "uses {answer}"),
    (json.dumps({**MY_TEMPLATE, "list_choices": "no"}), "'list_choices' must be a boolean"),
    (json.dumps({k: v for k, v in MY_TEMPLATE.items() if k != "name"}), "'name' is missing"),
    # issue 20, item 1: the name names cache files, so it may not climb out of --cache-dir
    (json.dumps({**MY_TEMPLATE, "name": "x/../../../escape"}), "no '/', no '..'"),
    (json.dumps({**MY_TEMPLATE, "name": ".."}), "names cache files"),
    # issue 20, item 10: found when the config is read, not after the model loaded
    (json.dumps({**MY_TEMPLATE, "description": "About {tier"}), "field 'description'"),
]


@pytest.mark.parametrize("text, message", BAD_TEMPLATES, ids=[m for _, m in BAD_TEMPLATES])
def test_a_bad_template_file_is_one_line_naming_file_and_field(text, message, tmp_path):
    spec = tmp_path / "t.json"
    spec.write_text(text)
    out = truthprobe("sweep", "--template-file", str(spec), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"error: --template-file: template file {spec}: "), line
    assert message in line, line
    assert not (tmp_path / "runs").exists()
    assert sorted(p.name for p in tmp_path.parent.iterdir() if p.suffix == ".h5") == []


def test_template_flags_are_checked_before_anything_runs(tmp_path):
    for args, message in (
        (("--template", "lmeval", "--template-file", "t.json"), "alternatives"),
        (("--template", "nope"), "must be one of mc, qa, lmeval"),
        (("--template-file", "missing.json"), "missing.json: no such file"),
    ):
        out = truthprobe("sweep", *args, cwd=tmp_path)
        assert out.returncode == 2 and message in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.real_model
def test_the_default_model_scores_as_lm_eval(tmp_path):
    """`truthprobe lmeval-parity` on the embedded model in float32: lm-eval's own task files,
    model wrapper and grading against truthprobe, 40 ARC and 40 MMLU test items."""
    out = truthprobe("lmeval-parity", "--n", "40", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    for dataset in ("arc", "mmlu"):
        (line,) = [x for x in lines if x.startswith(f"{dataset} (default-none-float32): ")]
        assert "identical on 40 of 40" in line, line
    assert sum(x.strip().startswith("within the tolerances") for x in lines) == 2, out.stdout
