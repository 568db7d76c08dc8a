"""The `truthprobe` command line. Each subcommand is a thin layer over a library function.

`extract`, `sweep` and `baselines` take their flags from their config dataclasses (through
tyro), so flags, defaults and help text are the dataclasses' fields and docstrings. Every error
a user can fix (a bad flag or value, bad data, a mismatched cache) is printed as one `error:`
line with exit status 2, and settings are checked before any model is loaded.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from truthprobe.data import DATASET_NAMES, load_dataset
from truthprobe.data.records import repeated_choices
from truthprobe.errors import TruthprobeError
from truthprobe.hardness import MEASURES, STRATA, group_by_stratum, stratify

#: Exceptions whose message is the whole story: printed as one line, no traceback.
USER_ERRORS: tuple[type[Exception], ...] = (TruthprobeError,)


def _add_dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        required=True,
        help=f"one of {', '.join(DATASET_NAMES)}, or a path to a .jsonl file in the schema",
    )
    parser.add_argument(
        "--source",
        choices=("auto", "local", "hub"),
        default="auto",
        help="local = --data-dir / $TRUTHPROBE_DATA_DIR; hub = Hugging Face hub; auto = local "
        "if configured",
    )
    parser.add_argument(
        "--data-dir", help="folder holding arc/, mmlu/, strategyqa/, gsm8k/ (default: "
        "$TRUTHPROBE_DATA_DIR, else what `truthprobe data fetch` wrote)",
    )  # fmt: skip


def cmd_data_summary(args: argparse.Namespace) -> int:
    from truthprobe.configs import DataConfig
    from truthprobe.hardness import get_measure

    DataConfig(
        levels=args.levels,
        easy_max=args.easy_max,
        hard_min=args.hard_min,
        hardness_spec=args.hardness_spec,
    ).field_specs()  # registers the meta.<field> spec, or a one-line error
    measure = get_measure(args.measure)
    dataset = load_dataset(args.dataset, source=args.source, data_dir=args.data_dir)
    records = dataset.records
    if args.split:
        dataset = dataset.select(splits=args.split)
        records = dataset.records
    scores, correct = None, None
    if measure.needs_model:  # scores stored beside a cache by a run
        from truthprobe.activations import ActivationCache
        from truthprobe.mdl import rank_correlations, stored_scores, zero_shot_correct

        cache_path, scores = stored_scores(args.dataset, args.measure, args.cache_dir)
        with ActivationCache(cache_path) as cache:
            correct = zero_shot_correct(cache)
        records = [r for r in records if r.id in scores]
        print(f"{args.measure} scores of {cache_path}")
        for row in rank_correlations(records, args.measure, scores):
            print(
                f"  Spearman with {row['human_measure']}: {row['spearman']:+.3f} "
                f"({row['n']} records)"
            )
    strata = stratify(records, args.measure, scores)
    groups = group_by_stratum(records, strata)
    print(
        f"{dataset.name}: {len(records)} records from {dataset.source} "
        f"(content sha256 {dataset.content_hash[:12]})"
    )
    print(f"measure {measure.name}: {measure.description}")
    zero_shot = "  zero-shot" if correct else ""
    print(f"{'stratum':<8} {'count':>6}{zero_shot}  example ids")
    for stratum in STRATA:
        ids = ", ".join(r.id for r in groups[stratum][: args.examples])
        if correct:  # accuracy of the model's own zero-shot answers in this stratum
            hits = [correct[r.id] for r in groups[stratum]]
            ids = f"{sum(hits) / len(hits) if hits else float('nan'):>9.3f}  {ids}"
        print(f"{stratum:<8} {len(groups[stratum]):>6}  {ids}")
    unrated = sum(1 for s in strata if s is None)
    if unrated:
        print(f"{'unrated':<8} {unrated:>6}  (no value for this measure)")
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    dataset = load_dataset(args.file, max_choices=args.max_choices)
    records = dataset.records
    n_choices = Counter(r.n_choices for r in records)
    splits = Counter(r.split for r in records)
    names = Counter(r.dataset for r in records)
    print(f"{args.file}: {len(records)} valid records, ids unique")
    print(f"  datasets: {dict(names)}")
    print(f"  splits: {dict(splits)}")
    print(f"  choices per record: {dict(sorted(n_choices.items()))}")
    print(f"  content sha256 {dataset.content_hash}")
    repeated = repeated_choices(records)
    if repeated:
        print(
            f"  note: {len(repeated)} record(s) list a wrong choice twice (harmless to scoring): "
            + "; ".join(repeated[:3])
        )
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from truthprobe.data.fetch import fetch_datasets
    from truthprobe.data.local import DATA_DIR_ENV, default_data_dir

    to = Path(args.to).expanduser().resolve() if args.to else default_data_dir()
    for fetched in fetch_datasets(to, args.datasets, args.annotations):
        print(f"{fetched.dataset}: {fetched.records} records -> {', '.join(fetched.files)}")
    if to == default_data_dir():
        print(f"data in {to}: found there by default (no --data-dir or {DATA_DIR_ENV} needed)")
    else:
        print(f"data in {to}: use it with --data-dir {to} or `export {DATA_DIR_ENV}={to}`")
    return 0


def cmd_cache_info(args: argparse.Namespace) -> int:
    from truthprobe.activations import ActivationCache

    with ActivationCache(args.file) as cache:
        print(cache.describe())
    return 0


def cmd_cache_verify(args: argparse.Namespace) -> int:
    """Exit 0 when every written batch is sound (or repaired), 1 when damage is left."""
    from truthprobe.activations import ActivationCache

    with ActivationCache(args.file) as cache:
        damaged = cache.verify()
        checked = int(cache.done_batches().sum())
        if not damaged:
            print(f"{cache.path}: {checked} written batches checked, every checksum and value good")
            return 0
        rows = sum(len(d.rows) for d in damaged)
        print(f"{cache.path}: {len(damaged)} of {checked} written batches damaged ({rows} rows)")
        for damage in damaged[:10]:
            print(f"  batch {damage.batch}: {damage.describe()}")
        if not args.repair:
            print("  run again with --repair to have them extracted again by the next run")
            return 1
        cache.mark_missing([d.batch for d in damaged])
    print(f"  marked for extraction again: the next run that needs these {rows} rows extracts them")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from truthprobe.report import write_report
    from truthprobe.studies.planned import is_study_dir, render

    if is_study_dir(args.run_dir):  # a study folder: its table, from the run store alone
        print(render(args.run_dir, args.plots_dir))
    else:
        print(write_report(args.run_dir, args.plots_dir))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: ...` and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from truthprobe import __version__

    parser = _Parser(
        prog="truthprobe",
        description="Probe whether what a model learns from easy examples transfers to hard ones.",
    )
    parser.add_argument("--version", action="version", version=f"truthprobe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    data = commands.add_parser("data", help="inspect and validate datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)

    summary = data_commands.add_parser(
        "summary", help="count records per easy / medium / hard stratum of a hardness measure"
    )
    _add_dataset_args(summary)
    summary.add_argument(
        "--measure",
        required=True,
        help=f"one of {', '.join(sorted(MEASURES))}, or meta.<field>: the records' own field",
    )
    summary.add_argument("--levels", help="meta.<field> levels, easiest first: a,b,c")
    summary.add_argument("--easy-max", type=float, help="numeric meta.<field>: easy at most")
    summary.add_argument("--hard-min", type=float, help="numeric meta.<field>: hard at least")
    summary.add_argument("--hardness-spec", help="JSON or YAML file of meta.<field> specs")
    summary.add_argument("--split", action="append", help="restrict to split(s); repeatable")
    summary.add_argument("--examples", type=int, default=3, help="example ids per stratum")
    summary.add_argument(
        "--cache-dir",
        default="activations",
        help="the runs' activation caches: model-based scores (mdl, probe_mdl) lie beside "
        "them, min_k and min_k_pp inside them",
    )
    summary.set_defaults(func=cmd_data_summary)

    validate = data_commands.add_parser("validate", help="check a JSONL file in the schema")
    validate.add_argument("file", help="path to a .jsonl file")
    validate.add_argument(
        "--max-choices", type=int, default=26, help="most answer choices a record may have"
    )
    validate.set_defaults(func=cmd_data_validate)

    fetch = data_commands.add_parser(
        "fetch", help="build the local data layout from the Hugging Face hub (online, once)"
    )
    fetch.add_argument(
        "--to", help="folder to write (default: ~/.cache/truthprobe/data, found without flags)"
    )
    fetch.add_argument(
        "--datasets", nargs="+", default=list(DATASET_NAMES), choices=DATASET_NAMES,
        help="which datasets (default: all four)",
    )  # fmt: skip
    fetch.add_argument(
        "--annotations",
        help="ARC hardness annotations: a local copy of arc-challenge-easy-annotations.json or "
        "a URL (default: the easy-to-hard-generalization repository on GitHub)",
    )
    fetch.set_defaults(func=cmd_data_fetch)

    for name, command in CONFIG_COMMANDS.items():
        text = f"{command.help} (flags: truthprobe {name} --help)"
        commands.add_parser(name, help=text, add_help=False)

    cache = commands.add_parser("cache", help="inspect activation caches")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True, parser_class=_Parser)
    info = cache_commands.add_parser("info", help="shape, fingerprint and completeness")
    info.add_argument("file")
    info.set_defaults(func=cmd_cache_info)
    verify = cache_commands.add_parser(
        "verify", help="check every written batch's checksums and values; name what is damaged"
    )
    verify.add_argument("file")
    verify.add_argument(
        "--repair", action="store_true", help="mark damaged batches to be extracted again"
    )
    verify.set_defaults(func=cmd_cache_verify)

    report = commands.add_parser("report", help="redraw tables and plots of a saved run")
    report.add_argument("run_dir")
    report.add_argument("--plots-dir", default=None, help="default: the run's plots_dir")
    report.set_defaults(func=cmd_report)
    return parser


def parse_config(cls: type, args: Sequence[str], prog: str):
    """Build the config dataclass `cls` from command-line `args` (flags generated by tyro).

    `--help` prints every flag with its default and docstring and exits 0. A flag tyro cannot
    parse, and any `ConfigError` the config's validation raises, becomes one `ConfigError` line.
    """
    import contextlib
    import io

    import tyro

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(cls, args=list(args), prog=prog, config=(tyro.conf.OmitArgPrefixes,))
    except SystemExit as exit:
        if exit.code in (0, None):
            raise
        from truthprobe.configs import ConfigError

        raise ConfigError(f"{_condense(captured.getvalue())} (see {prog} --help)") from None


def _condense(text: str) -> str:
    """The message of one of tyro's error boxes, on one line."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines, title = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("╭"):
            title = stripped.strip("╭╮─ ")
            continue
        inner = stripped.strip("│ ")
        if inner and set(inner) <= set("─ "):
            break  # the separator before tyro's per-argument help
        if inner and not stripped.startswith("╰"):
            lines.append(inner)
    message = " ".join(lines) or title or "invalid arguments"
    # tyro prefixes a config's own validation error with the dataclass that raised it.
    return re.sub(r"^Error parsing [A-Za-z_]\w*: ", "", message)


def run_extract(config) -> int:
    from truthprobe.activations import extract

    print(extract(config).describe())
    return 0


def run_harness(config) -> int:
    """`sweep` and `baselines`: both configs build a harness run, and one report renders it."""
    from truthprobe.harness import run
    from truthprobe.report import write_report

    summary = run(config.harness())
    print(write_report(summary.run_dir))
    print(summary.describe())
    return 0


def run_directions(config) -> int:
    """`directions`: the sweep (resumed: stored parts are reused) with the disjoint-draw
    reference's parts, then its probes' directions."""
    from truthprobe.directions import plan_disjoint, write_directions
    from truthprobe.harness import Harness
    from truthprobe.report import write_report

    with Harness(config.harness()) as harness:
        harness.run_all()
        plan_disjoint(harness)
    print(write_report(harness.run_dir))
    print(harness.summary.describe())
    versus = None
    if config.versus_quantization is not None:
        twin = config.twin()
        run_harness(twin)
        versus = twin.harness().run_dir()
    plots = config.output.plots_dir
    print(
        write_directions(harness.run_dir, plots, versus=versus, cache_dir=config.cache.cache_dir)
    )
    return 0


def run_study(config) -> int:
    """A transfer study: the plan run over the harness, then its table and where files went."""
    from truthprobe.studies.planned import registered, run_planned

    print(run_planned(registered(config.kind), config))
    return 0


def run_lmeval_parity(config) -> int:
    """`lmeval-parity`: exit status 1 when lm-eval and truthprobe differ beyond the tolerances."""
    from truthprobe.parity import run_parity

    return run_parity(config)


@dataclass(frozen=True)
class ConfigCommand:
    """A command whose flags come from a config dataclass (imported only when it runs)."""

    module: str
    config: str
    run: Callable[[Any], int]
    help: str

    def config_class(self) -> type:
        import importlib

        return getattr(importlib.import_module(self.module), self.config)


CONFIG_COMMANDS: dict[str, ConfigCommand] = {
    "extract": ConfigCommand(
        "truthprobe.configs",
        "ExtractConfig",
        run_extract,
        "cache per-layer hidden states of a model to HDF5",
    ),
    "sweep": ConfigCommand(
        "truthprobe.sweep",
        "SweepConfig",
        run_harness,
        "train probes on easy/hard/all items at every layer; report SGR",
    ),
    "directions": ConfigCommand(
        "truthprobe.sweep",
        "DirectionsConfig",
        run_directions,
        "the sweep, then cosines of its probe directions across strata, seeds, tasks and "
        "quantizations",
    ),
    "transfer-matrix": ConfigCommand(
        "truthprobe.studies.transfer_matrix",
        "TransferMatrixConfig",
        run_study,
        "probes trained on each dataset's easy / hard / all items, tested on every dataset",
    ),
    "hardness-gap": ConfigCommand(
        "truthprobe.studies.hardness_gap",
        "HardnessGapConfig",
        run_study,
        "probes trained on one level of a hardness measure, tested on every level",
    ),
    "third-grade-to-college": ConfigCommand(
        "truthprobe.studies.third_grade_to_college",
        "ThirdGradeToCollegeConfig",
        run_study,
        "probes trained on ARC grade 3, ARC grade 8, MMLU high school and college, tested on "
        "MMLU college",
    ),
    "learning-curves": ConfigCommand(
        "truthprobe.studies.learning_curves",
        "LearningCurvesConfig",
        run_study,
        "hard-test accuracy against the number (and cost) of easy / hard / all training items",
    ),
    "noisy-labels": ConfigCommand(
        "truthprobe.studies.noisy_labels",
        "NoisyLabelsConfig",
        run_study,
        "hard training labels with noise p against clean easy training",
    ),
    "lmeval-parity": ConfigCommand(
        "truthprobe.parity",
        "ParityConfig",
        run_lmeval_parity,
        "zero-shot acc / acc_norm through lm-evaluation-harness and through truthprobe on the "
        "same items (needs truthprobe[lmeval])",
    ),
    "baselines": ConfigCommand(
        "truthprobe.comparison",
        "BaselinesConfig",
        run_harness,
        "zero-shot, ICL, probes and QLoRA on the same splits; report SGR",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in CONFIG_COMMANDS:
            command = CONFIG_COMMANDS[argv[0]]
            config = parse_config(command.config_class(), argv[1:], f"truthprobe {argv[0]}")
            return command.run(config)
        args = build_parser().parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
