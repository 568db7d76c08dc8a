"""Bad input as a user meets it: the console script in a subprocess, exit 2, one `error:` line
naming file, line and field, never a traceback; and the ordinary files that must be accepted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_cli_config import truthprobe


def record(i: int = 0, **changes) -> dict:
    """A valid ARC-style record; `changes` override fields (`meta` is merged)."""
    base = {
        "id": f"item-{i}",
        "dataset": "arc",
        "split": "test",
        "question": f"Which gas do plants take in? ({i})",
        "choices": ["oxygen", "carbon dioxide", "helium", "neon"],
        "answer_index": 1,
        "answer": "carbon dioxide",
        "meta": {"grade": 3 + i % 6, "bloom": "Remembering"},
    }
    meta = {**base["meta"], **changes.pop("meta", {})}
    return {**base, **changes, "meta": meta}


def write(path: Path, rows: list, raw: bytes = b"", bom: bool = False) -> Path:
    """JSON lines (non-ASCII as \\u escapes, as many tools write them), then `raw` bytes."""
    text = "".join(json.dumps(r) + "\n" for r in rows)
    data = text.encode("ascii") + raw
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def one_error_line(result, *fragments: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    return errors[0]


def test_non_utf8_bytes_name_file_and_line(tmp_path):
    path = write(tmp_path / "d.jsonl", [record(0), record(1)], raw=b'{"id": "caf\xe9"}\n')
    one_error_line(truthprobe("data", "validate", str(path)), f"{path}:3", "not UTF-8", "0xe9")


def test_lone_surrogate_is_refused_before_anything_says_valid(tmp_path):
    bad = record(1, question="Which gas? \ud800")
    path = write(tmp_path / "d.jsonl", [record(0), bad])
    result = truthprobe("data", "validate", str(path))
    one_error_line(result, f"{path}:2", "field 'question'", "surrogate")
    assert "valid records" not in result.stdout


def test_byte_order_mark_is_accepted(tmp_path):
    path = write(tmp_path / "d.jsonl", [record(0), record(1)], bom=True)
    result = truthprobe("data", "validate", str(path))
    assert result.returncode == 0, result.stderr
    assert "2 valid records" in result.stdout


def test_answer_must_be_the_choice_at_answer_index(tmp_path):
    path = write(tmp_path / "d.jsonl", [record(0), record(1, answer="oxygen")])
    one_error_line(
        truthprobe("data", "validate", str(path)),
        f"{path}:2",
        "field 'answer'",
        "'oxygen' is not the choice at answer_index 1 ('carbon dioxide')",
    )


def test_a_repeated_correct_choice_is_reported_or_refused_a_repeated_wrong_one_reported(
    tmp_path,
):
    gold_twice = record(1, choices=["carbon dioxide", "carbon dioxide", "helium", "neon"])
    path = write(tmp_path / "d.jsonl", [record(0), gold_twice])
    reported = truthprobe("data", "validate", str(path))
    assert reported.returncode == 0, reported.stderr
    assert "1 valid records" in reported.stdout
    assert "1 more record(s) repeat their correct choice" in reported.stdout
    assert "'item-1'" in reported.stdout
    one_error_line(
        truthprobe("data", "validate", str(path), "--strict"),
        f"{path}:2", "appears again at index 0", "without --strict",
    )  # fmt: skip
    wrong_twice = record(1, choices=["helium", "carbon dioxide", "helium", "neon"])
    result = truthprobe("data", "validate", str(write(tmp_path / "e.jsonl", [wrong_twice])))
    assert result.returncode == 0, result.stderr
    assert (
        "1 record(s) list a wrong choice twice" in result.stdout
        and "choices 0 and 2" in result.stdout
    )


@pytest.mark.parametrize(
    "grade, problem",
    [("seven", "meta.grade = 'seven' is not a number"), (math.nan, "not a finite number"),
     (math.inf, "not a finite number"), (True, "is not a number")],
    ids=["text", "nan", "inf", "bool"],
)  # fmt: skip
def test_unusable_hardness_values_name_the_record(grade, problem, tmp_path):
    path = write(tmp_path / "d.jsonl", [record(0), record(1, meta={"grade": grade})])
    one_error_line(
        truthprobe("data", "summary", "--dataset", str(path), "--measure", "grade"),
        f"{path}:2",
        "id 'item-1'",
        "'grade'",
        problem,
    )


def test_an_unknown_level_is_an_error_not_unrated(tmp_path):
    path = write(tmp_path / "d.jsonl", [record(0), record(1, meta={"bloom": "Creating"})])
    one_error_line(
        truthprobe("data", "summary", "--dataset", str(path), "--measure", "bloom"),
        f"{path}:2",
        "meta.bloom = 'Creating' is not one of Remembering",
    )


@pytest.mark.slow
def test_a_prompt_longer_than_the_model_is_refused_before_any_forward_pass(
    tiny_model_dir, tmp_path
):
    """200 KB of question (more than the model's 8,192 positions): refused naming file, line and
    length, or truncated from the start when asked; never allocated."""
    long = record(1, question="Why? " + "word " * 40_000)
    path = write(tmp_path / "d.jsonl", [record(0), long, record(2)])
    args = ("extract", "--dataset", str(path), "--model", str(tiny_model_dir), "--no-progress")
    refused = truthprobe(*args, "--cache-dir", str(tmp_path / "a"))
    one_error_line(
        refused, f"{path}:2", "id 'item-1'", "more than the 8192 allowed", "--truncate-prompts"
    )
    assert not (tmp_path / "a").exists()  # refused before a cache file was made

    lower = truthprobe(*args, "--cache-dir", str(tmp_path / "b"), "--max-prompt-tokens", "40")
    one_error_line(lower, f"{path}:1", "more than the 40 allowed")

    cut = truthprobe(
        *args, "--cache-dir", str(tmp_path / "c"), "--truncate-prompts", "--max-prompt-tokens",
        "512",  # (the model's 8,192 would do too; 512 keeps the test fast)
    )  # fmt: skip
    assert cut.returncode == 0, cut.stderr
    assert "3 of 3 cached" in cut.stdout


@pytest.mark.slow
def test_a_prompt_far_longer_than_its_dataset_is_reported_before_extraction(
    tiny_model_dir, tmp_path
):
    """Issue 20, item 11: a 6,000-token question among 40-token ones (within the model's 8,192
    positions) was accepted without a word while its pass took minutes and gigabytes."""
    rows = [record(i) for i in range(30)]
    rows[7] = record(7, question="Why? " + "word " * 1200)
    path = write(tmp_path / "d.jsonl", rows)
    args = ("extract", "--dataset", str(path), "--model", str(tiny_model_dir))
    result = truthprobe(*args, "--cache-dir", str(tmp_path / "a"))
    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("warning:")]
    for fragment in (f"{path}:8", "id 'item-7'", "6", "tokens", "median", "GiB",
                     "--max-prompt-tokens", "--truncate-prompts"):  # fmt: skip
        assert fragment in line, line
    assert result.stderr.index("warning:") < result.stderr.index("extract d"), result.stderr

    bounded = truthprobe(
        *args, "--cache-dir", str(tmp_path / "b"), "--max-prompt-tokens", "300",
        "--truncate-prompts", "--no-progress",
    )  # fmt: skip
    assert bounded.returncode == 0, bounded.stderr
    assert "warning:" not in bounded.stderr


# -- issue 20, item 10: inputs that ended in tracebacks ----------------------------------------


def test_json_too_deep_or_a_number_too_long_names_the_line(tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text(json.dumps(record(0)) + "\n" + "[" * 200_000 + "]" * 200_000 + "\n")
    one_error_line(truthprobe("data", "validate", str(deep)), f"{deep}:2", "nested deeper")
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps(record(0))[:-1] + ', "n": ' + "9" * 5000 + "}\n")
    one_error_line(truthprobe("data", "validate", str(long)), f"{long}:1", "4300 digits")


def test_a_number_too_large_for_a_float_names_the_record(tmp_path):
    text = json.dumps(record(0, meta={"v": 1})).replace('"v": 1', '"v": 1' + "0" * 400)
    path = tmp_path / "huge.jsonl"
    path.write_text(text + "\n")
    for command in (
        ("data", "summary", "--dataset", str(path), "--measure", "meta.v"),
        ("sweep", "--tasks", f"{path}:meta.v", "--no-progress"),
    ):
        line = one_error_line(truthprobe(*command, cwd=tmp_path), f"{path}:1", "too large")
        assert "--levels" not in line  # a number, not a word: no hint about levels


def test_an_id_with_a_control_character_is_refused_before_any_model(tmp_path):
    path = write(tmp_path / "nul.jsonl", [record(0, id="a\u0000b"), record(1)])
    one_error_line(truthprobe("data", "validate", str(path)), f"{path}:1", "control character")
    one_error_line(
        truthprobe("extract", "--dataset", str(path), "--no-progress", cwd=tmp_path),
        "control character",
    )
    assert not any(tmp_path.rglob("*.h5*")), "a cache file was left behind"


@pytest.mark.parametrize(
    "name, text, fragment",
    [
        ("tag.yaml", "meta.grade: !!python/object/apply:os.system ['echo hi']\n", "constructor"),
        ("broken.yaml", "meta.grade: [a, b\n", "cannot read the hardness spec"),
        ("text.json", json.dumps({"meta.grade": {"easy_max": "10", "hard_min": 20}}), "number"),
    ],
)
def test_a_bad_hardness_spec_is_one_line_naming_it(name, text, fragment, tmp_path):
    spec = tmp_path / name
    spec.write_text(text)
    path = write(tmp_path / "d.jsonl", [record(i) for i in range(4)])
    command = ("data", "summary", "--dataset", str(path), "--measure", "meta.grade")
    line = one_error_line(truthprobe(*command, "--hardness-spec", str(spec)), str(spec), fragment)
    assert "hi" not in line.split(":")[0]  # no code ran


def test_a_run_folder_that_cannot_be_made_is_one_line(tiny_model_dir, tmp_path):
    path = write(tmp_path / "d.jsonl", [record(i) for i in range(60)])
    (tmp_path / "afile").write_text("")
    result = truthprobe(
        "sweep", "--tasks", f"{path}:grade", "--n-train", "4", "--validation-size", "2",
        "--model", str(tiny_model_dir), "--runs-dir", str(tmp_path / "afile" / "runs"),
        "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    one_error_line(result, "afile", "Not a directory", "--runs-dir")


@pytest.mark.slow
def test_a_record_repeating_its_correct_choice_is_left_out_of_a_run(
    arc_sample, tiny_model_dir, tmp_path
):
    """Issue 20, item 13: one record whose correct choice text appears twice (as in a real
    MMLU release) refused the whole dataset in every command."""
    from truthprobe.runstore import read_json

    rows = [json.loads(line) for line in arc_sample.read_text().splitlines()]
    k = next(i for i, r in enumerate(rows) if r["meta"].get("grade") and r["choices"])
    flawed = rows[k]
    flawed["choices"][(flawed["answer_index"] + 1) % len(flawed["choices"])] = flawed["answer"]
    path = write(tmp_path / "arc-flawed.jsonl", rows)
    args = ["sweep", "--tasks", f"{path}:grade", "--model", str(tiny_model_dir),
            "--n-train", "12", "--seeds", "1", "--validation-size", "10",
            "--max-per-stratum", "40", "--n-boot", "50", "--no-progress",
            "--cache-dir", str(tmp_path / "act"), "--runs-dir", str(tmp_path / "runs"),
            "--plots-dir", str(tmp_path / "plots")]  # fmt: skip

    refused = truthprobe(*args, "--strict")
    one_error_line(refused, f"{path}:{k + 1}", f"id {flawed['id']!r}", "appears again")
    assert not (tmp_path / "act").exists()  # refused before any model or cache

    result = truthprobe(*args)
    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "record(s) whose correct choice" in x]
    for fragment in ("warning: ", "left out 1 record(s)", f"{path}:{k + 1}", "--strict"):
        assert fragment in line, line
    (config,) = (tmp_path / "runs").glob("*/config.json")
    (task,) = read_json(config)["datasets"].values()
    assert task["excluded"] == [flawed["id"]]


@pytest.mark.slow
def test_a_question_too_long_for_chain_of_thought_names_its_record(load, tiny_model_dir, tmp_path):
    """A GSM8k question short enough to extract (under the model's 8,192 positions) but too long
    to reason about with the 300 new tokens GSM8k allows: `truthprobe baselines` stops with
    one line naming file, line and id, not a traceback from inside generation."""
    from dataclasses import replace

    by_steps = sorted(load("gsm8k").records, key=lambda r: r.meta["num_steps"])
    records = by_steps[:30] + by_steps[-30:]  # easy and hard items
    padding = "apples " * 7_950  # ~7,950 tokens: extractable, not with 300 more
    long = [replace(r, question=padding + r.question) for r in records]
    path = write(tmp_path / "gsm8k-long.jsonl", [r.to_dict() for r in long])
    result = truthprobe(
        "baselines", "--tasks", f"{path}:steps", "--model", str(tiny_model_dir),
        "--methods", "icl", "--k", "2", "--n-train", "4", "--validation-size", "4",
        "--max-test", "2", "--seeds", "1", "--n-boot", "20",
        "--no-progress", "--cache-dir", str(tmp_path / "act"),
        "--runs-dir", str(tmp_path / "runs"), "--plots-dir", str(tmp_path / "plots"),
    )  # fmt: skip
    line = one_error_line(result, str(path), "chain-of-thought prompt", "8192 positions")
    assert any(f"id {r.id!r}" in line for r in long), line
