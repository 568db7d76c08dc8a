"""The `truthprobe` command line: one subcommand union, generated from the commands' configs.

Every command is a frozen dataclass with a `run()` method (`SweepConfig`, `BaselinesConfig`,
each study's config, `ExtractConfig`, the inspection commands of `truthprobe.inspection`, ...):
its fields are the flags, their docstrings the help, and `run()` what the command does. tyro
turns the union of them into the parser, so `--help` of every command comes from its config.

Every error a user can fix is one `error:` line with exit status 2, before any model is loaded:
a setting the configs' own validation refuses (`ConfigError`, raised as it is), bad data or a
mismatched cache (`TruthprobeError`), and a command line the parser cannot read (an unknown
flag, a value of the wrong type, a choice not offered), which tyro reports to `_one_line` as a
structured event. (That hook is young and marked private in tyro; where a tyro lacks it,
tyro's own error box stands, still with exit status 2.)
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Annotated, Any, NoReturn, Union

from truthprobe.activations.extract_command import ExtractConfig
from truthprobe.comparison import BaselinesConfig
from truthprobe.configs import ConfigError
from truthprobe.directions import DirectionsConfig
from truthprobe.errors import TruthprobeError, WriteRefusedError, remedy
from truthprobe.inspection import CacheCommands, DataCommands, ReportCommand
from truthprobe.parity import ParityConfig
from truthprobe.studies.hardness_gap import HardnessGapConfig
from truthprobe.studies.learning_curves import LearningCurvesConfig
from truthprobe.studies.noisy_labels import NoisyLabelsConfig
from truthprobe.studies.third_grade_to_college import ThirdGradeToCollegeConfig
from truthprobe.studies.transfer_matrix import TransferMatrixConfig
from truthprobe.sweep import SweepConfig

#: Exceptions whose message is the whole story: printed as one line, no traceback.
USER_ERRORS: tuple[type[Exception], ...] = (TruthprobeError,)

#: Each command's config class; its docstring's first paragraph is the command's description.
COMMANDS: dict[str, type] = {
    "data": DataCommands,
    "extract": ExtractConfig,
    "sweep": SweepConfig,
    "directions": DirectionsConfig,
    "transfer-matrix": TransferMatrixConfig,
    "hardness-gap": HardnessGapConfig,
    "third-grade-to-college": ThirdGradeToCollegeConfig,
    "learning-curves": LearningCurvesConfig,
    "noisy-labels": NoisyLabelsConfig,
    "lmeval-parity": ParityConfig,
    "baselines": BaselinesConfig,
    "cache": CacheCommands,
    "report": ReportCommand,
}

DESCRIPTION = "Probe whether what a model learns from easy examples transfers to hard ones."


def command_union() -> Any:
    """The union of every command's config, each named as its subcommand."""
    import tyro

    return Union[  # noqa: UP007 - a union of Annotated types built at run time
        tuple(
            Annotated[cls, tyro.conf.subcommand(name, description=description(cls))]
            for name, cls in COMMANDS.items()
        )
    ]


def description(config_type: type) -> str:
    """A command's one-paragraph description: the first paragraph of its config's docstring."""
    first = inspect.cleandoc(config_type.__doc__ or "").split("\n\n")[0]
    return " ".join(first.split())


def parse(argv: Sequence[str], prog: str = "truthprobe") -> Any:
    """The config of the command `argv` names (`--help` prints and exits 0).

    Raises:
        ConfigError: the command line cannot be read, or the config's validation refuses it.
    """
    import tyro

    hook = getattr(getattr(tyro, "_errors", None), "on_parse_error", None)
    on_error = functools.partial(_one_line, prog=_command_prog(argv, prog))
    with hook(on_error) if hook is not None else contextlib.nullcontext():
        return tyro.cli(
            command_union(),
            args=list(argv),
            prog=prog,
            description=DESCRIPTION,
            config=(tyro.conf.OmitArgPrefixes, tyro.conf.OmitSubcommandPrefixes),
        )


def _command_prog(argv: Sequence[str], prog: str) -> str:
    """`truthprobe <command> [<subcommand>]` as far as `argv` names them (for "see --help")."""
    words = [prog]
    if argv and argv[0] in COMMANDS:
        words.append(argv[0])
        group = COMMANDS[argv[0]]
        if (
            len(argv) > 1
            and not argv[1].startswith("-")
            and "command" in group.__dataclass_fields__
        ):
            words.append(argv[1])
    return " ".join(words)


def _one_line(event: Any, prog: str) -> NoReturn:
    """A parse error tyro reports (a structured event: which argument, which value, which
    choices) as one `ConfigError` line that names the flag and says what would do."""
    kind = type(event).__name__
    argument = getattr(event, "argument", None)
    flag = _flag(argument) if argument is not None else ""
    if kind == "InvalidChoice":
        message = f"{flag} must be one of {', '.join(event.choices)}, got {event.value!r}"
    elif kind == "BadValue":
        message = f"{flag}: {event.reason}"
    elif kind == "InstantiationFailure":
        message = f"{flag} {_plain(str(event.message))}" if flag else str(event.message)
    elif kind == "UnrecognizedArgs":
        message = f"unrecognized arguments: {' '.join(event.tokens)}"
    elif kind == "MissingArgs":
        missing = [_flag(a.arg) for a in event.missing_arguments]
        message = f"missing {', '.join(missing)}"
    elif kind == "MissingSubcommand":
        names = ", ".join(event.subcommand_spec.parser_from_name)
        message = f"name a command: {names}"
    else:
        message = f"cannot read the command line ({kind})"
    message = " ".join(str(message).split())  # tyro's messages may span lines
    raise ConfigError(f"{message} (see {prog} --help)")


#: Python's and tyro's conversion messages, said as a user would.
_PLAIN = (
    (re.compile(r"invalid literal for int\(\) with base 10: (.*)"), r"expects an integer, got \1"),
    (re.compile(r"could not convert string to float: (.*)"), r"expects a number, got \1"),
    (
        re.compile(r"no type matching (.+?) could be instantiated from \[(.*?)\].*", re.S),
        r"expects \1, got \2",
    ),
)


class _CurrentStderr(logging.StreamHandler):
    """Writes to the `sys.stderr` of the moment (one swapped after setup, as tests do)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _warnings_to_stderr() -> None:
    """The package's warnings (a damaged part recomputed, a long prompt) as `warning:` lines."""
    logger = logging.getLogger("truthprobe")
    if not logger.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        handler.setLevel(logging.WARNING)
        logger.addHandler(handler)


def _plain(message: str) -> str:
    for pattern, plain in _PLAIN:
        if pattern.match(message):
            return pattern.sub(plain, message)
    return f": {message}"


def _flag(argument: Any) -> str:
    """The flag (or positional name) of one of tyro's argument definitions."""
    lowered = getattr(argument, "lowered", None)
    names = [n for n in getattr(lowered, "name_or_flags", None) or () if n.startswith("-")]
    if names:
        return "/".join(names)
    field = getattr(argument, "field", None)  # a positional: its field's name
    return str(getattr(field, "intern_name", None) or "an argument").upper()


def main(argv: Sequence[str] | None = None) -> int:
    from truthprobe import __version__

    argv = list(sys.argv[1:] if argv is None else argv)
    _warnings_to_stderr()
    if argv in (["--version"], ["-V"]):
        print(f"truthprobe {__version__}")
        return 0
    try:
        return parse(argv).run()
    except WriteRefusedError as err:  # HDF5 holds a file it cannot close: end without closing
        print(f"error: {err}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine's refusal (a read-only folder, a full disk, ...)
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err} ({remedy(err.errno)})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
