"""The `truthprobe` command line. Each subcommand is a thin layer over a library function."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Sequence

from truthprobe.data import DATASET_NAMES, DataError, load_dataset
from truthprobe.hardness import MEASURES, STRATA, HardnessError, group_by_stratum, stratify

#: Exceptions whose message is the whole story: printed as one line, no traceback.
USER_ERRORS: tuple[type[Exception], ...] = (DataError, HardnessError, FileNotFoundError)


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
        help="local = $TRUTHPROBE_DATA_DIR; hub = Hugging Face hub; auto = local if configured",
    )


def cmd_data_summary(args: argparse.Namespace) -> int:
    dataset = load_dataset(args.dataset, source=args.source)
    records = dataset.records
    if args.split:
        dataset = dataset.select(splits=args.split)
        records = dataset.records
    strata = stratify(records, args.measure)
    groups = group_by_stratum(records, strata)
    measure = MEASURES[args.measure]
    print(
        f"{dataset.name}: {len(records)} records from {dataset.source} "
        f"(content sha256 {dataset.content_hash[:12]})"
    )
    print(f"measure {measure.name}: {measure.description}")
    print(f"{'stratum':<8} {'count':>6}  example ids")
    for stratum in STRATA:
        ids = ", ".join(r.id for r in groups[stratum][: args.examples])
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
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="truthprobe",
        description="Probe whether what a model learns from easy examples transfers to hard ones.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="inspect and validate datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    summary = data_commands.add_parser(
        "summary", help="count records per easy / medium / hard stratum of a hardness measure"
    )
    _add_dataset_args(summary)
    summary.add_argument("--measure", required=True, choices=sorted(MEASURES))
    summary.add_argument("--split", action="append", help="restrict to split(s); repeatable")
    summary.add_argument("--examples", type=int, default=3, help="example ids per stratum")
    summary.set_defaults(func=cmd_data_summary)

    validate = data_commands.add_parser("validate", help="check a JSONL file in the schema")
    validate.add_argument("file", help="path to a .jsonl file")
    validate.add_argument(
        "--max-choices", type=int, default=26, help="most answer choices a record may have"
    )
    validate.set_defaults(func=cmd_data_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
