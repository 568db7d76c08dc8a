"""Bring your own hardness: any `meta.<field>` of a JSONL file, rated by levels given on the
command line, numeric cut-offs, the percentile rule or a spec file, with every bad spec a
one-line error. Outputs are made in-process (`truthprobe.cli.main`, what the console script
calls) to keep the default test run short; every bad spec and the real-model sweeps go through
the console script in a subprocess, as a user meets them."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from test_cli_config import truthprobe

LEVEL_OF_GRADE = {3: "elementary", 4: "elementary", 5: "elementary", 6: "middle", 7: "middle"}
DIFFICULTY = {"Low": 1, "Medium": 2, "High": 3}


@pytest.fixture(scope="module")
def byo_file(tmp_path_factory, load):
    """Real ARC records saved as `arc-byo.jsonl` with the user's own fields: a categorical
    `meta.level` (from the grade) and a numeric `meta.difficulty` (from the expert difficulty)."""
    records = [r for r in load("arc").records if r.meta.get("grade") and r.meta.get("difficulty")]
    picked = records[::8][:360]
    lines = []
    for r in picked:
        row = r.to_dict()
        row["meta"] = {
            "level": LEVEL_OF_GRADE.get(int(r.meta["grade"]), "high_school"),
            "difficulty": DIFFICULTY[r.meta["difficulty"]],
        }
        lines.append(json.dumps(row))
    path = tmp_path_factory.mktemp("byo") / "arc-byo.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, [json.loads(line)["meta"] for line in lines]


def counts(stdout: str) -> dict[str, int]:
    rows = [line.split() for line in stdout.splitlines()]
    return {r[0]: int(r[1]) for r in rows if r and r[0] in ("easy", "medium", "hard", "unrated")}


def test_a_categorical_field_is_stratified_by_the_levels_given(byo_file, cli):
    path, metas = byo_file
    out = cli(
        "data", "summary", "--dataset", str(path), "--measure", "meta.level",
        "--levels", "elementary,middle,high_school",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    expected = Counter(m["level"] for m in metas)
    assert counts(out.stdout) == {
        "easy": expected["elementary"],
        "medium": expected["middle"],
        "hard": expected["high_school"],
    }


def test_numeric_cutoffs_a_spec_file_and_the_percentile_rule(byo_file, tmp_path, cli):
    path, metas = byo_file
    by_value = Counter(m["difficulty"] for m in metas)
    flags = cli(
        "data", "summary", "--dataset", str(path), "--measure", "meta.difficulty",
        "--easy-max", "1", "--hard-min", "3",
    )  # fmt: skip
    assert flags.returncode == 0, flags.stderr
    assert counts(flags.stdout) == {"easy": by_value[1], "medium": by_value[2], "hard": by_value[3]}
    for suffix, text in (
        (".json", json.dumps({"meta.difficulty": {"easy_max": 1, "hard_min": 3}})),
        (".yaml", "meta.difficulty:\n  easy_max: 1\n  hard_min: 3\n"),
    ):
        spec = tmp_path / f"spec{suffix}"
        spec.write_text(text)
        from_file = cli(
            "data", "summary", "--dataset", str(path), "--measure", "meta.difficulty",
            "--hardness-spec", str(spec),
        )  # fmt: skip
        assert from_file.returncode == 0, from_file.stderr
        assert counts(from_file.stdout) == counts(flags.stdout)
    default = cli("data", "summary", "--dataset", str(path), "--measure", "meta.difficulty")
    assert default.returncode == 0 and "30th / 70th percentile" in default.stdout
    assert sum(counts(default.stdout).values()) == len(metas)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--measure", "meta.grade_level"], "none of the 360 records has meta.grade_level"),
        (["--measure", "meta.level"], "is not a number; for levels give them"),
        (["--measure", "meta.level", "--levels", "elementary,middle"], "'high_school' is not one"),
        (["--measure", "meta.level", "--levels", "elementary"], "at least two different"),
        (["--measure", "meta.difficulty", "--easy-max", "2"], "go together"),
        (["--measure", "meta.difficulty", "--easy-max", "3", "--hard-min", "2"], "must be below"),
        (["--measure", "meta.level", "--levels", "a,b", "--easy-max", "1", "--hard-min", "3"],
         "not both"),
    ],
)  # fmt: skip
def test_every_bad_spec_is_one_line_naming_the_field(byo_file, args, message):
    """Through the console script, as a user meets them."""
    path, _ = byo_file
    out = truthprobe("data", "summary", "--dataset", str(path), *args)
    assert out.returncode == 2, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines


def test_a_bad_spec_file_is_one_line_naming_file_and_key(byo_file, tmp_path):
    path, _ = byo_file
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"meta.level": {"level": ["a", "b"]}}))
    out = truthprobe(
        "sweep", "--tasks", f"{path}:meta.level", "--hardness-spec", str(spec),
        "--runs-dir", str(tmp_path / "runs"),
    )  # fmt: skip
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"error: {spec}: meta.level: unknown key 'level'"), line
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_sweep_on_the_users_field_records_its_spec(byo_file, tiny_model_dir, tmp_path, cli):
    path, _ = byo_file
    out = cli(
        "sweep", "--tasks", f"{path}:meta.level", "--levels", "elementary,middle,high_school",
        "--model", str(tiny_model_dir), "--n-train", "12", "--seeds", "2",
        "--validation-size", "10", "--n-boot", "100", "--layers", "1", "--no-mid-last",
        "--probe-preset", "validated", "--cache-dir", str(tmp_path / "act"),
        "--runs-dir", str(tmp_path / "runs"), "--plots-dir", str(tmp_path / "plots"),
        "--no-progress",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "meta.level" in out.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["hardness_specs"] == {
        "*": {"levels": ["elementary", "middle", "high_school"], "easy_max": None, "hard_min": None}
    }
    assert meta["config"]["data"]["levels"] == "elementary,middle,high_school"


@pytest.mark.real_model
@pytest.mark.parametrize(
    "spec",
    [
        ["meta.level", "--levels", "elementary,middle,high_school"],
        ["meta.difficulty", "--easy-max", "1", "--hard-min", "2"],  # High alone is 43 items
    ],
)
def test_the_default_model_sweeps_a_users_own_hardness_field(
    byo_file, spec, tmp_path, tmp_path_factory
):
    path, _ = byo_file
    cache = tmp_path_factory.getbasetemp() / "byo-activations"  # both measures share it
    out = truthprobe(
        "sweep", "--tasks", f"{path}:{spec[0]}", *spec[1:], "--n-train", "40", "--seeds", "2",
        "--validation-size", "20", "--n-boot", "200", "--layers", "6", "--no-mid-last",
        "--probe-preset", "validated", "--cache-dir", str(cache),
        "--runs-dir", str(tmp_path / "runs"), "--plots-dir", str(tmp_path / "plots"),
        "--no-progress",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    table = next(line for line in out.stdout.splitlines() if line.startswith(f"{path}:"))
    assert "mc_linear" in table and ("no gap" in table or "[" in table)
