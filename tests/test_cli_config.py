"""The command line as a user meets it: the console script in a subprocess.

Flags come from the config dataclasses; every invalid setting is one `error:` line with exit
status 2 before any model is loaded (the model cache folder is left untouched).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from truthprobe.sweep import SweepConfig

#: The installed console script, as a user runs it.
SCRIPT = Path(sys.executable).parent / "truthprobe"


def truthprobe(*args: str, env: dict | None = None, cwd: Path | None = None):
    command = [str(SCRIPT), *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600, check=False
    )


@pytest.fixture()
def no_model_env(tmp_path):
    """An environment whose model cache is an empty folder: loading a model would fill it."""
    models = tmp_path / "model-cache"
    models.mkdir()
    env = {**os.environ, "TRUTHPROBE_MODEL_CACHE": str(models), "HF_HUB_OFFLINE": "1"}
    return env, models


INVALID = [
    ("sweep", "--tasks", "arc"),
    ("sweep", "--tasks", "arc:grade", "arc:grade"),
    ("sweep", "--tasks", "nope:grade"),
    ("sweep", "--tasks", "arc:nope"),
    ("sweep", "--tasks", "arc:level"),
    ("sweep", "--tasks", "gsm8k:mdl"),
    ("sweep", "--batch-size", "-1"),
    ("sweep", "--probe-preset", "tuned"),
    ("directions", "--n-train", "0"),
    ("directions", "--versus-quantization", "none"),
    ("sweep", "--batch-size", "x"),
    ("sweep", "--n-train", "0"),
    ("sweep", "--seeds", "0"),
    ("sweep", "--test-fraction", "1.5"),
    ("sweep", "--validation-size", "0"),
    ("sweep", "--max-per-stratum", "-1"),
    ("sweep", "--layers", "-1"),
    ("sweep", "--n-boot", "0"),
    ("sweep", "--n-boot", "-5"),
    ("sweep", "--probes", "nope"),
    ("sweep", "--quantization", "3bit"),
    ("sweep", "--device", "tpu"),
    ("sweep", "--model", "a", "b", "c", "--quantization", "none", "8bit"),
    ("sweep", "--model", "default", "default"),
    ("directions", "--model", "default", "default", "--quantization", "none", "8bit"),
    ("sweep", "--shards", "0"),
    ("sweep", "--tasks", "arc:grade+arc:grade"),
    ("sweep", "--tasks", "arc:grade+arc:mdl"),
    ("sweep", "--tasks", "arc:grade+nope:grade"),
    ("sweep", "--tasks", "arc:grade+gsm8k:steps"),
    ("baselines", "--tasks", "arc:grade+mmlu:level"),
    ("transfer-matrix", "--tasks", "arc:grade+mmlu:level"),
    ("directions", "--tasks", "arc:grade+mmlu:level"),
    ("sweep", "--gpus-per-task", "0"),
    ("extract", "--dataset", "arc", "--measure", "grade", "--shards", "2"),
    ("sweep", "--no-such-flag"),
    ("baselines", "--methods", "lora"),
    ("baselines", "--k", "-1"),
    ("baselines", "--qlora-quantization", "2bit"),
    ("baselines", "--max-test", "-3"),
    ("extract", "--dataset", "nope"),
    ("extract", "--limit", "-5"),
    ("extract", "--dataset", "arc", "--max-per-stratum", "10"),
    ("extract", "--dataset", "arc", "--template", "nope"),
    ("extract", "--dataset", "mmlu", "--measure", "grade"),
    ("lmeval-parity", "--datasets", "strategyqa"),
    ("lmeval-parity", "--n", "-1"),
]


@pytest.mark.parametrize("args", INVALID, ids=" ".join)
def test_invalid_settings_are_one_line_before_any_model_loads(args, no_model_env, tmp_path):
    env, models = no_model_env
    result = truthprobe(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert not any(models.iterdir())  # no model was loaded (or converted)
    assert not any(p.name in ("runs", "activations", "plots") for p in tmp_path.iterdir())


def test_errors_name_the_flag_and_the_valid_values(no_model_env):
    env, _ = no_model_env
    err = truthprobe("sweep", "--tasks", "arc", env=env).stderr
    assert "needs a hardness measure" in err and "arc:grade" in err
    err = truthprobe("sweep", "--tasks", "arc:level", env=env).stderr
    assert "does not apply to arc" in err and "grade, bloom" in err and "probe_mdl" in err
    assert (
        "--test-fraction must be between 0 and 1"
        in truthprobe("sweep", "--test-fraction", "1.5", env=env).stderr
    )
    assert "--batch-size" in truthprobe("sweep", "--batch-size", "x", env=env).stderr
    err = truthprobe("sweep", "--model", "a", "b", "c", "--quantization", "none", "8bit",
                     env=env).stderr  # fmt: skip
    assert "--quantization takes one value, or one per --model (3), got 2" in err
    err = truthprobe("directions", "--model", "a", "b", env=env).stderr
    assert "--model names several models; this needs one" in err


def test_help_shows_every_field_with_its_default():
    wide = {**os.environ, "COLUMNS": "200"}  # no wrapping inside "(default: ...)"
    out = truthprobe("sweep", "--help", env=wide).stdout
    for field in ("tasks", "n_train", "max_per_stratum", "batch_size", "probes", "model", "n_boot"):
        assert "--" + field.replace("_", "-") in out, field
    assert "(default: 160)" in out and "(default: arc:grade mmlu:level strategyqa:steps)" in out
    out = truthprobe("baselines", "--help", env=wide).stdout
    assert "--qlora-n-train" in out and "--quantization" in out and "--k" in out
    assert "(default: 60)" in out  # --max-test
    assert "--layers" in truthprobe("extract", "--help").stdout


def test_version():
    from truthprobe import __version__

    result = truthprobe("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"truthprobe {__version__}"


def test_flags_build_the_dataclasses():
    from truthprobe.cli import parse

    assert parse(["sweep"]) == SweepConfig()
    custom = parse(
        [
            "sweep",
            "--tasks",
            "arc:bloom",
            "mmlu:level",
            "--probes",
            "mc_linear",
            "ccs",
            "--seeds",
            "2",
        ]
    )
    assert custom == dataclasses.replace(
        SweepConfig(),
        tasks=("arc:bloom", "mmlu:level"),
        probe=dataclasses.replace(SweepConfig().probe, probes=("mc_linear", "ccs")),
        split=dataclasses.replace(SweepConfig().split, seeds=2),
    )
    quantized = parse(["baselines", "--quantization", "8bit"])
    assert quantized.model.single.quantization == "8bit"  # the baselines' model, used by all
    two = parse(["sweep", "--model", "default", "default", "--quantization", "none", "8bit"])
    assert [(m.name, m.quantization) for m in two.model.each()] == [
        ("default", "none"), ("default", "8bit")]  # fmt: skip
    both = parse(["sweep", "--model", "default", "x/y", "--quantization", "4bit"])
    assert [m.quantization for m in both.model.each()] == ["4bit", "4bit"]


@pytest.mark.slow
def test_extract_command_extracts_then_reuses(tiny_model_dir, arc_sample, tmp_path):
    args = (
        "extract", "--dataset", str(arc_sample), "--model", str(tiny_model_dir),
        "--measure", "grade", "--max-per-stratum", "5", "--cache-dir", str(tmp_path / "act"),
        "--no-progress",
    )  # fmt: skip
    first = truthprobe(*args)
    assert first.returncode == 0, first.stderr
    assert "15 items requested" in first.stdout and "extracted 0 new rows" not in first.stdout
    again = truthprobe(*args)
    assert again.returncode == 0 and "extracted 0 new rows" in again.stdout


def _flags(config_type: type) -> list[str]:
    """The flag of every leaf field of a config (nested configs' fields are flattened; a field
    renamed with `tyro.conf.arg(name=...)` under that name; positionals have none)."""
    hints = typing.get_type_hints(config_type, include_extras=True)
    flags = []
    for field in dataclasses.fields(config_type):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            flags += _flags(kind)
        elif field.name != "command" and "Positional" not in repr(kind):
            renamed = [m.name for m in getattr(kind, "__metadata__", ()) if getattr(m, "name", "")]
            flags.append("--" + (renamed or [field.name])[0].replace("_", "-"))
    return flags


def _subcommands(group: type) -> list[tuple[str, type]]:
    """(name, config class) of each member of a command group's union (`data`, `cache`)."""
    union = typing.get_type_hints(group, include_extras=True)["command"]
    return [(marker.name, cls) for cls, marker in map(typing.get_args, typing.get_args(union))]


def test_every_commands_help_is_its_configs_fields(capsys):
    """`--help` of every command, the inspection commands included, lists each field of its
    config (the flags are generated from the dataclasses, none written by hand)."""
    from truthprobe.cli import COMMANDS, parse
    from truthprobe.inspection import CacheCommands, DataCommands

    commands = [([name], cls) for name, cls in COMMANDS.items()]
    for group, name in ((DataCommands, "data"), (CacheCommands, "cache")):
        commands += [([name, sub], cls) for sub, cls in _subcommands(group)]
    assert len(commands) == len(COMMANDS) + 6  # data: 3, cache: info, verify, merge
    for words, config_type in commands:
        with pytest.raises(SystemExit) as exit:
            parse([*words, "--help"])
        assert exit.value.code == 0
        text = capsys.readouterr().out
        missing = [f for f in _flags(config_type) if f not in text]
        assert not missing, (words, missing)
