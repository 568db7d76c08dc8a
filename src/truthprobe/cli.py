"""The `truthprobe` command line. Each subcommand is a thin layer over a library function."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from truthprobe.data import DATASET_NAMES, load_dataset
from truthprobe.errors import TruthprobeError
from truthprobe.hardness import MEASURES, STRATA, group_by_stratum, stratify

if TYPE_CHECKING:
    from truthprobe.baselines.compare import BaselinesConfig

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
        help="local = $TRUTHPROBE_DATA_DIR; hub = Hugging Face hub; auto = local if configured",
    )


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="default",
        help="`default` (embedded Gemma 3 270M), a Hugging Face id, or a local path",
    )
    parser.add_argument(
        "--quantization",
        choices=("none", "4bit", "8bit"),
        default="none",
        help="bitsandbytes NF4 (4bit) or LLM.int8 (8bit) weights",
    )
    parser.add_argument(
        "--dtype",
        choices=("auto", "bfloat16", "float32", "float16"),
        default="auto",
        help="compute dtype; auto = bf16 where native",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")


def _add_run_output_args(parser: argparse.ArgumentParser) -> None:
    """Bootstrap size and output folders shared by `sweep` and `baselines`."""
    parser.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples")
    parser.add_argument("--cache-dir", default="activations", help="activation caches")
    parser.add_argument("--runs-dir", default="runs", help="run directories (results, config)")
    parser.add_argument("--plots-dir", default="plots", help="figures")


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


def cmd_extract(args: argparse.Namespace) -> int:
    from truthprobe.activations import ExtractConfig, extract

    config = ExtractConfig(
        dataset=args.dataset,
        model=args.model,
        quantization=args.quantization,
        dtype=args.dtype,
        device=args.device,
        template=args.template,
        layers=args.layers,
        limit=args.limit,
        annotated_only=args.annotated_only,
        batch_size=args.batch_size,
        storage=args.storage,
        cache_dir=args.cache_dir,
        cache_path=args.cache,
        backend=args.backend,
        source=args.source,
    )
    result = extract(config)
    rate = result.rows_written / result.seconds if result.seconds > 0 else float("nan")
    print(
        f"{result.path}: {result.rows_total} items cached ({result.rows_written} extracted now "
        f"in {result.seconds:.1f} s, {rate:.2f} items/s)"
    )
    return 0


def cmd_cache_info(args: argparse.Namespace) -> int:
    from truthprobe.activations import ActivationCache

    with ActivationCache(args.file) as cache:
        print(cache.describe())
    return 0


def _sweep_config(args: argparse.Namespace):
    from truthprobe.transfer import SweepConfig

    return SweepConfig(
        tasks=tuple(args.task),
        model=args.model,
        quantization=args.quantization,
        dtype=args.dtype,
        device=args.device,
        layers=tuple(args.layers) if args.layers else None,
        probes=tuple(args.probe),
        n_train=args.n_train,
        seeds=tuple(range(args.seeds)),
        test_fraction=args.test_fraction,
        validation_size=args.validation_size,
        max_per_stratum=args.max_per_stratum or None,
        batch_size=args.batch_size,
        n_boot=args.n_boot,
        cache_dir=args.cache_dir,
        runs_dir=args.runs_dir,
        plots_dir=args.plots_dir,
        source=args.source,
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    from truthprobe.report import write_report
    from truthprobe.transfer import layer_sweep

    run = layer_sweep(_sweep_config(args))
    print(write_report(run.run_dir))
    print(
        f"extraction {run.extract_seconds:.1f} s (cache reused if 0), probes "
        f"{run.probe_seconds:.1f} s; run directory {run.run_dir}"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from truthprobe.report import write_report

    print(write_report(args.run_dir, args.plots_dir))
    return 0


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `truthprobe sweep` and `experiments/layer_sweep.py` (one definition)."""
    from truthprobe.probes import PROBE_KINDS

    parser.add_argument(
        "--task",
        action="append",
        default=None,
        help="dataset:measure to sweep, repeatable (default: arc:grade and mmlu:level)",
    )
    _add_model_args(parser)
    parser.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=None,
        help="hidden-state indices (0 = embeddings); default all",
    )
    parser.add_argument(
        "--probe",
        action="append",
        choices=PROBE_KINDS,
        default=None,
        help="probe type, repeatable (default mc_linear)",
    )
    parser.add_argument("--n-train", type=int, default=160, help="training items per draw")
    parser.add_argument("--seeds", type=int, default=5, help="training draws (seeds 0..N-1)")
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.5,
        help="share of the hard stratum held out as the hard test set",
    )
    parser.add_argument(
        "--validation-size",
        type=int,
        default=100,
        help="easy items held out to choose the best layer",
    )
    parser.add_argument(
        "--max-per-stratum",
        type=int,
        default=500,
        help="items extracted per easy/medium/hard stratum (0 = all)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    _add_run_output_args(parser)
    parser.add_argument("--source", choices=("auto", "local", "hub"), default="auto")
    parser.set_defaults(func=cmd_sweep)


def baselines_config(args: argparse.Namespace) -> BaselinesConfig:
    """The `BaselinesConfig` that `truthprobe baselines` flags describe."""
    from truthprobe.baselines.compare import BaselinesConfig

    defaults = BaselinesConfig()
    return BaselinesConfig(
        tasks=tuple(args.task or defaults.tasks),
        methods=tuple(args.method or defaults.methods),
        model=args.model,
        dtype=args.dtype,
        device=args.device,
        seeds=tuple(range(args.seeds)),
        max_per_stratum=args.max_per_stratum or None,
        max_test=args.max_test or None,
        icl_k=args.k,
        cot_datasets=defaults.cot_datasets if args.cot is None else tuple(args.cot),
        max_new_tokens=args.max_new_tokens,
        qlora_n_train=args.qlora_n_train,
        qlora_quantization=args.qlora_quantization,
        qlora_max_updates=args.qlora_max_updates or None,
        n_boot=args.n_boot,
        cache_dir=args.cache_dir,
        runs_dir=args.runs_dir,
        plots_dir=args.plots_dir,
    )


def cmd_baselines(args: argparse.Namespace) -> int:
    from truthprobe.baselines.compare import baselines_table, run_baselines

    run_dir = run_baselines(baselines_config(args))
    print(baselines_table(run_dir))
    print(f"run directory {run_dir}")
    return 0


def add_baselines_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `truthprobe baselines` and `experiments/baselines.py` (one definition)."""
    parser.add_argument(
        "--task",
        action="append",
        default=None,
        help="dataset:measure, repeatable (default: arc:grade, mmlu:level, strategyqa:steps, "
        "gsm8k:steps)",
    )
    parser.add_argument(
        "--method",
        action="append",
        choices=("icl", "probe", "qlora"),
        default=None,
        help="repeatable (default: all three; GSM8k has no probe)",
    )
    _add_model_args(parser)
    parser.add_argument("--seeds", type=int, default=1, help="training draws (seeds 0..N-1)")
    parser.add_argument("--max-per-stratum", type=int, default=500, help="0 = all items")
    parser.add_argument(
        "--max-test",
        type=int,
        default=60,
        help="hard test items per task (0 = half the hard stratum)",
    )
    parser.add_argument(
        "--k",
        type=int,
        default=None,
        help="ICL demonstrations (default: 10 ARC/MMLU, 8 StrategyQA/GSM8k)",
    )
    parser.add_argument(
        "--cot",
        nargs="*",
        default=None,
        metavar="DATASET",
        help="datasets whose ICL and QLoRA reason first (default: gsm8k strategyqa; "
        "give none for multiple-choice StrategyQA; GSM8k always reasons)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="CoT generation budget (default: 300 GSM8k, 100 StrategyQA, as the paper)",
    )
    parser.add_argument("--qlora-n-train", type=int, default=32)
    parser.add_argument(
        "--qlora-quantization",
        choices=("8bit", "4bit", "none"),
        default="8bit",
        help="4bit trains on a GPU only",
    )
    parser.add_argument(
        "--qlora-max-updates",
        type=int,
        default=4,
        help="cap on optimiser updates (0 = the paper's full schedule)",
    )
    _add_run_output_args(parser)
    parser.set_defaults(func=cmd_baselines)


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

    ext = commands.add_parser("extract", help="cache per-layer hidden states of a model to HDF5")
    _add_dataset_args(ext)
    _add_model_args(ext)
    ext.add_argument("--template", default=None, help="prompt template (default: per dataset)")
    ext.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=None,
        help="hidden-state indices to keep (0 = embeddings); default all",
    )
    ext.add_argument("--limit", type=int, default=None, help="only the first N records")
    ext.add_argument(
        "--annotated-only",
        action="store_true",
        help="ARC: only the 5,120 records with hardness annotations",
    )
    ext.add_argument("--batch-size", type=int, default=8, help="questions per forward pass")
    ext.add_argument("--storage", choices=("bfloat16", "float32"), default="bfloat16")
    ext.add_argument("--cache-dir", default="activations")
    ext.add_argument("--cache", default=None, help="explicit output .h5 path")
    ext.add_argument(
        "--backend",
        choices=("hf", "nnsight", "transformer_lens"),
        default="hf",
        help="hf = fast KV-cached path; the others are per-sequence cross-checks",
    )
    ext.set_defaults(func=cmd_extract)

    cache = commands.add_parser("cache", help="inspect activation caches")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    info = cache_commands.add_parser("info", help="shape, fingerprint and completeness")
    info.add_argument("file")
    info.set_defaults(func=cmd_cache_info)

    sweep = commands.add_parser(
        "sweep", help="train probes on easy/hard/all items at every layer; report SGR"
    )
    add_sweep_arguments(sweep)

    baselines = commands.add_parser(
        "baselines", help="zero-shot, ICL, best-layer probe and QLoRA on the same splits"
    )
    add_baselines_arguments(baselines)

    report = commands.add_parser("report", help="redraw tables and plots of a saved sweep run")
    report.add_argument("run_dir")
    report.add_argument("--plots-dir", default=None, help="default: the run's plots_dir")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "command", None) == "sweep":
        args.task = args.task or ["arc:grade", "mmlu:level"]
        args.probe = args.probe or ["mc_linear"]
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
