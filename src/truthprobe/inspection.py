"""The commands that look at what is on disk: datasets (`data summary`, `data validate`,
`data fetch`), activation caches (`cache info`, `cache verify`, `cache merge`) and saved runs
(`report`).

Each is a frozen dataclass whose fields are its flags and whose `run()` prints what it found,
like every other command (`truthprobe.cli` builds the one command line from them).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from truthprobe.configs import FieldRules, require_non_negative

#: Positional arguments, named in usage lines as what they are.
File = tyro.conf.Positional[Annotated[str, tyro.conf.arg(metavar="FILE")]]
RunDir = tyro.conf.Positional[Annotated[str, tyro.conf.arg(metavar="RUN_DIR")]]
DatasetName = Literal["arc", "mmlu", "strategyqa", "gsm8k"]


@dataclass(frozen=True)
class DataSummary:
    """Count records per easy / medium / hard stratum of a hardness measure."""

    dataset: str
    """One of arc, mmlu, strategyqa, gsm8k, or a path to a .jsonl file in the schema."""
    measure: str
    """A hardness measure (`truthprobe.hardness.MEASURES`), or meta.<field>: the records' own
    field."""
    data: FieldRules = FieldRules()
    split: tuple[str, ...] = ()
    """Only these splits (default: every split)."""
    examples: int = 3
    """Example ids per stratum."""
    cache_dir: str = "activations"
    """The runs' activation caches: model-based scores (mdl, probe_mdl) lie beside them, min_k
    and min_k_pp inside them."""

    def __post_init__(self) -> None:
        from truthprobe.hardness import get_measure

        require_non_negative(self.examples, "examples", "no example ids")
        get_measure(self.measure)  # an unknown measure is one line before any data is read

    def run(self) -> int:
        from truthprobe.hardness import STRATA, get_measure, group_by_stratum, stratify

        measure = get_measure(self.measure)
        rated_by = self.data.measure(self.measure)
        dataset = self.data.load(self.dataset)
        if self.split:
            dataset = dataset.select(splits=list(self.split))
        records = dataset.records
        scores, correct = None, None
        if measure.needs_model:  # scores stored beside a cache by a run
            from truthprobe.activations import ActivationCache
            from truthprobe.mdl import rank_correlations, stored_scores, zero_shot_correct

            cache_path, scores = stored_scores(self.dataset, self.measure, self.cache_dir)
            with ActivationCache(cache_path) as cache:
                correct = zero_shot_correct(cache)
            records = [r for r in records if r.id in scores]
            print(f"{self.measure} scores of {cache_path}")
            for row in rank_correlations(records, self.measure, scores):
                print(
                    f"  Spearman with {row['human_measure']}: {row['spearman']:+.3f} "
                    f"({row['n']} records)"
                )
        strata = stratify(records, rated_by, scores)
        groups = group_by_stratum(records, strata)
        print(
            f"{dataset.name}: {len(records)} records from {dataset.source} "
            f"(content sha256 {dataset.content_hash[:12]})"
        )
        described = rated_by if not isinstance(rated_by, str) else measure
        print(f"measure {described.name}: {described.description}")
        zero_shot = "  zero-shot" if correct else ""
        print(f"{'stratum':<8} {'count':>6}{zero_shot}  example ids")
        for stratum in STRATA:
            ids = ", ".join(r.id for r in groups[stratum][: self.examples])
            if correct:  # accuracy of the model's own zero-shot answers in this stratum
                hits = [correct[r.id] for r in groups[stratum]]
                ids = f"{sum(hits) / len(hits) if hits else float('nan'):>9.3f}  {ids}"
            print(f"{stratum:<8} {len(groups[stratum]):>6}  {ids}")
        unrated = sum(1 for s in strata if s is None)
        if unrated:
            print(f"{'unrated':<8} {unrated:>6}  (no value for this measure)")
        return 0


@dataclass(frozen=True)
class DataValidate:
    """Check a JSONL file in the schema: every record, ids unique."""

    file: File
    """Path to a .jsonl file."""
    max_choices: int = 26
    """Most answer choices a record may have."""
    strict: bool = False
    """Refuse a record whose correct choice appears twice among its choices (default: report
    it; runs leave such records out)."""

    def run(self) -> int:
        from truthprobe.data import load_dataset
        from truthprobe.data.records import repeated_choices

        dataset = load_dataset(self.file, max_choices=self.max_choices, strict=self.strict)
        records = dataset.records
        print(f"{self.file}: {len(records)} valid records, ids unique")
        if dataset.excluded:
            print(
                f"  note: {len(dataset.excluded)} more record(s) repeat their correct choice "
                "(ambiguous): runs leave them out, --strict refuses them: "
                + ", ".join(repr(i) for i in dataset.excluded[:5])
            )
        print(f"  datasets: {dict(Counter(r.dataset for r in records))}")
        print(f"  splits: {dict(Counter(r.split for r in records))}")
        print(
            f"  choices per record: {dict(sorted(Counter(r.n_choices for r in records).items()))}"
        )
        print(f"  content sha256 {dataset.content_hash}")
        repeated = repeated_choices(records)
        if repeated:
            print(
                f"  note: {len(repeated)} record(s) list a wrong choice twice (harmless to "
                "scoring): " + "; ".join(repeated[:3])
            )
        return 0


@dataclass(frozen=True)
class DataFetch:
    """Build the local data layout from the Hugging Face hub (online, once)."""

    to: str | None = None
    """Folder to write (default: ~/.cache/truthprobe/data, found without flags)."""
    datasets: tuple[DatasetName, ...] = ("arc", "mmlu", "strategyqa", "gsm8k")
    """Which datasets (default: all four)."""
    annotations: str | None = None
    """ARC hardness annotations: a local copy of arc-challenge-easy-annotations.json or a URL
    (default: the easy-to-hard-generalization repository on GitHub)."""

    def run(self) -> int:
        from truthprobe.data.fetch import fetch_datasets
        from truthprobe.data.local import DATA_DIR_ENV, default_data_dir

        to = Path(self.to).expanduser().resolve() if self.to else default_data_dir()
        for fetched in fetch_datasets(to, list(self.datasets), self.annotations):
            print(f"{fetched.dataset}: {fetched.records} records -> {', '.join(fetched.files)}")
        if to == default_data_dir():
            print(f"data in {to}: found there by default (no --data-dir or {DATA_DIR_ENV} needed)")
        else:
            print(f"data in {to}: use it with --data-dir {to} or `export {DATA_DIR_ENV}={to}`")
        return 0


@dataclass(frozen=True)
class DataCommands:
    """Inspect, validate and fetch datasets."""

    command: (
        Annotated[DataSummary, tyro.conf.subcommand("summary", description=DataSummary.__doc__)]
        | Annotated[
            DataValidate, tyro.conf.subcommand("validate", description=DataValidate.__doc__)
        ]
        | Annotated[DataFetch, tyro.conf.subcommand("fetch", description=DataFetch.__doc__)]
    )

    def run(self) -> int:
        return self.command.run()


@dataclass(frozen=True)
class CacheInfo:
    """Shape, fingerprint and completeness of an activation cache."""

    file: File
    """The cache's .h5 file."""

    def run(self) -> int:
        from truthprobe.activations import ActivationCache

        with ActivationCache(self.file) as cache:
            print(cache.describe())
        return 0


@dataclass(frozen=True)
class CacheVerify:
    """Check every written row's checksums and digests; name what is damaged. Exit status 0
    when every row is sound (or repaired), 1 when damage is left."""

    file: File
    """The cache's .h5 file."""
    repair: bool = False
    """Mark damaged rows to be extracted again by the next run that needs them."""

    def run(self) -> int:
        from truthprobe.activations import ActivationCache

        with ActivationCache(self.file) as cache:
            damaged = cache.verify()
            tables = cache.damaged_items()
            checked = int((cache.done_rows() | cache.scored_rows()).sum())
            if not damaged and not tables:
                good = "every checksum and value good"
                print(f"{cache.path}: {checked} written rows and the item tables checked, {good}")
                return 0
            rows = sum(len(d.rows) for d in damaged)
            if tables:
                names = ", ".join(f"items/{name}" for name in tables)
                print(f"{cache.path}: {names} damaged (checksum, or disagrees with the records)")
            if damaged:
                print(f"{cache.path}: {rows} of {checked} written rows damaged")
            for damage in damaged[:10]:
                print(f"  {damage.describe()}")
            if not self.repair:
                print("  run again with --repair to repair them")
                return 1
            if tables:
                cache.repair_items(tables)  # raises for items/row: only the dataset rebuilds it
                print(f"  rewritten from the stored records: {names}")
            if damaged:
                cache.mark_missing(damaged)
                print(
                    f"  marked for extraction again: the next run that needs these {rows} rows does"
                )
        return 0


@dataclass(frozen=True)
class CacheMerge:
    """Present a cache's finished shards (`<cache>.shards/<i>-of-<n>.h5`) as the one cache FILE:
    an HDF5 virtual-dataset file of views into them, nothing copied but the item tables."""

    file: File
    """The cache's .h5 file to make (its shards lie beside it)."""

    def run(self) -> int:
        import time

        from truthprobe.activations import ActivationCache
        from truthprobe.activations.shards import merge_shards

        started = time.perf_counter()
        path = merge_shards(self.file)
        with ActivationCache(path) as cache:
            print(
                f"{path}: {cache.n_items} rows from {len(cache.shards)} shards, merged in "
                f"{time.perf_counter() - started:.2f} s"
            )
        return 0


@dataclass(frozen=True)
class CacheCommands:
    """Inspect, verify and merge activation caches."""

    command: (
        Annotated[CacheInfo, tyro.conf.subcommand("info")]
        | Annotated[CacheVerify, tyro.conf.subcommand("verify")]
        | Annotated[CacheMerge, tyro.conf.subcommand("merge")]
    )

    def run(self) -> int:
        return self.command.run()


@dataclass(frozen=True)
class ReportCommand:
    """Redraw the tables and figures of a saved run or study folder, from its files alone."""

    run_dir: RunDir
    """A run directory (runs/<kind>-<hash>), a study folder in one, or a comparison of
    several models' runs (runs/models-<hash>)."""
    plots_dir: str | None = None
    """Where figures go (default: the run's own plots_dir)."""

    def run(self) -> int:
        from truthprobe.model_sizes import is_comparison_dir, render_comparison
        from truthprobe.report import write_report
        from truthprobe.studies.planned import is_study_dir, render

        if is_study_dir(self.run_dir):  # a study folder: its table, from the run store alone
            print(render(self.run_dir, self.plots_dir))
        elif is_comparison_dir(self.run_dir):  # several models' runs, compared
            print(render_comparison(self.run_dir, self.plots_dir))
        else:
            print(write_report(self.run_dir, self.plots_dir))
        return 0
