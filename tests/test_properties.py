"""Property tests: whatever settings or JSON lines a user gives, the command line exits 0 or 2,
with at most one `error:` line, and never a traceback.

Run in-process through `truthprobe.cli.main` (the console script's entry point); valid
settings are parsed and validated but their run is replaced by a no-op.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from truthprobe.cli import COMMANDS, main

EXAMPLES = 250


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of one command; any exception escaping `main` fails the test."""
    try:
        status = main(argv)
    except SystemExit as exit:  # --help and argparse's own errors exit this way
        status = exit.code if isinstance(exit.code, int) else 2
    err = capsys.readouterr().err
    return status, err


def assert_clean(status: int, err: str) -> None:
    assert status in (0, 2), (status, err)
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == (1 if status == 2 else 0), err


# -- random JSON lines ---------------------------------------------------------------------

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cc"]) | st.sampled_from(["\ud800", "\n"]),
    max_size=30,
)
ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20)
    | st.floats(allow_nan=True, allow_infinity=True) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
FIELDS = ("id", "dataset", "split", "question", "choices", "answer_index", "answer", "meta")


@st.composite
def json_lines(draw) -> bytes:
    """Valid ARC-style records, some with a field replaced, dropped or made odd; raw bytes."""
    lines = []
    for i in range(draw(st.integers(1, 5))):
        choices = draw(st.lists(st.text(min_size=1, max_size=8), min_size=2, max_size=5))
        gold = draw(st.integers(0, len(choices) - 1))
        record = {
            "id": f"r{i}", "dataset": draw(st.sampled_from(["arc", "mmlu", "mine"])),
            "split": "test", "question": draw(st.text(min_size=1, max_size=40)),
            "choices": choices, "answer_index": gold, "answer": choices[gold],
            "meta": {"grade": draw(st.one_of(st.integers(1, 12), ANY_VALUE)),
                     "bloom": draw(st.sampled_from(["Remembering", "Analyzing", None, "Odd"]))},
        }  # fmt: skip
        action = draw(st.sampled_from(["keep", "keep", "replace", "drop"]))
        if action == "replace":
            record[draw(st.sampled_from(FIELDS))] = draw(ANY_VALUE)
        elif action == "drop":
            record.pop(draw(st.sampled_from(FIELDS)))
        text = json.dumps(record, ensure_ascii=draw(st.booleans()), allow_nan=True)
        lines.append(text.encode("utf-8", errors="surrogatepass"))
    data = b"\n".join(lines) + b"\n"
    noise = draw(st.sampled_from([b"", b"", b"\xff\xfe", b"{not json", b"\xef\xbb\xbf", b"[]"]))
    where = draw(st.integers(0, len(data)))
    return data[:where] + noise + data[where:]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=json_lines(), measure=st.sampled_from(["grade", "bloom", "question_words"]))
def test_random_json_lines(data, measure, tmp_path, capsys):
    path = tmp_path / "random.jsonl"
    path.write_bytes(data)
    assert_clean(*run_cli(["data", "validate", str(path)], capsys))
    assert_clean(
        *run_cli(["data", "summary", "--dataset", str(path), "--measure", measure], capsys)
    )


# -- random settings -----------------------------------------------------------------------

NUMBER = st.one_of(
    st.integers(-5, 400).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda x: repr(x)),
    st.sampled_from(["0", "-1", "1e9", "x", "", "nan", "1.5", "0.5"]),
)
FLAGS = {
    "--tasks": st.lists(
        st.sampled_from(["arc:grade", "arc", "mmlu:level", "arc:level", "gsm8k:steps", "x:y",
                         "strategyqa:steps", "arc:mdl", "a.jsonl:grade", ":", "arc:"]),
        min_size=0, max_size=3,
    ),  # fmt: skip
    "--n-train": NUMBER, "--seeds": NUMBER, "--test-fraction": NUMBER,
    "--validation-size": NUMBER, "--max-per-stratum": NUMBER, "--batch-size": NUMBER,
    "--n-boot": NUMBER, "--max-test": NUMBER, "--k": NUMBER, "--max-prompt-tokens": NUMBER,
    "--layers": st.lists(NUMBER, max_size=3),
    "--probes": st.lists(st.sampled_from(["mc_linear", "ccs", "nope", ""]), max_size=3),
    "--quantization": st.sampled_from(["none", "4bit", "8bit", "2bit"]),
    "--device": st.sampled_from(["cpu", "cuda:0", "auto", "tpu", ""]),
    "--methods": st.lists(st.sampled_from(["icl", "probe", "qlora", "lora"]), max_size=3),
    "--dataset": st.sampled_from(["arc", "mmlu", "nope", "x.jsonl"]),
    "--limit": NUMBER, "--template": st.sampled_from(["mc", "qa", "zz"]),
    "--measure": st.sampled_from(["grade", "level", "nope"]),
    "--no-such-flag": st.just("1"),
}  # fmt: skip


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(COMMANDS)))
    argv = [command]
    for flag in draw(st.lists(st.sampled_from(sorted(FLAGS)), max_size=5, unique=True)):
        value = draw(FLAGS[flag])
        argv += [flag, *value] if isinstance(value, list) else [flag, value]
    return argv


@pytest.fixture()
def no_runs(monkeypatch):
    """Valid settings are parsed and validated; their run does nothing."""
    for config_type in COMMANDS.values():
        if config_type.__module__ != "truthprobe.inspection":  # those read files, and fast
            monkeypatch.setattr(config_type, "run", lambda self: 0)


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(argv=command_lines())
def test_random_settings(argv, no_runs, capsys):
    assert_clean(*run_cli(argv, capsys))


def test_the_generators_reach_both_outcomes(capsys, no_runs, tmp_path):
    """The properties are not vacuous: each kind of input can succeed and can fail."""
    good = tmp_path / "good.jsonl"
    choices = ["a", "b"]
    record = {"id": "1", "dataset": "arc", "split": "t", "question": "q", "choices": choices,
              "answer_index": 0, "answer": "a", "meta": {"grade": 4}}  # fmt: skip
    good.write_text(json.dumps(record) + "\n")
    assert run_cli(["data", "validate", str(good)], capsys)[0] == 0
    bad = Path(tmp_path / "bad.jsonl")
    bad.write_text(json.dumps({**record, "answer": "b"}) + "\n")
    assert run_cli(["data", "validate", str(bad)], capsys)[0] == 2
    assert run_cli(["sweep", "--n-train", "3"], capsys)[0] == 0
    assert run_cli(["sweep", "--n-train", "0"], capsys)[0] == 2


@settings(max_examples=EXAMPLES, deadline=None)
@given(name=st.text(max_size=40))
def test_a_safe_name_never_leaves_its_folder(name, tmp_path_factory):
    """Whatever a user names a template, dataset or model, its file lies in its folder."""
    from truthprobe.names import is_safe_name, safe_name

    folder = Path("/cache/model")
    made = safe_name(name)
    assert is_safe_name(made) and "/" not in made and made not in (".", "..")
    assert (folder / made).resolve().parent == folder
