"""`truthprobe extract`: its config, and the extraction of the rows its flags select.

Kept apart from the extraction machinery (`truthprobe.activations.extraction`, which imports
torch) so that reading the command's flags stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from truthprobe.activations.cache import ExtractError
from truthprobe.configs import (
    Backend,
    CacheConfig,
    ConfigError,
    DataConfig,
    ModelConfig,
    PromptConfig,
    check_task,
    require,
    require_layers,
    require_non_negative,
)
from truthprobe.data import DATASET_NAMES, Question
from truthprobe.hardness import stratify

if TYPE_CHECKING:
    from truthprobe.activations.planning import CacheEstimate, CacheRequest
    from truthprobe.models import LoadedModel


@dataclass(frozen=True)
class ExtractConfig:
    """Cache per-layer hidden states of a model to HDF5 (the rows these flags select)."""

    dataset: str = "arc"
    """Dataset name (arc, mmlu, strategyqa) or a .jsonl path in the truthprobe schema."""
    model: ModelConfig = ModelConfig()
    cache: CacheConfig = CacheConfig()
    prompt: PromptConfig = PromptConfig()
    layers: tuple[int, ...] | None = None
    """Hidden-state indices to keep (0 = embeddings); default: every layer."""
    measure: str | None = None
    """Only items this hardness measure rates (with --max-per-stratum: a balanced subset)."""
    data: DataConfig = DataConfig(max_per_stratum=0)
    limit: int = 0
    """Only the first N selected items (0 = all), for quick looks."""
    cache_path: str | None = None
    """An explicit cache file instead of the one under --cache-dir."""
    backend: Backend = "hf"
    """hf = the fast packed path; nnsight / transformer_lens = per-sequence cross-checks."""
    question_scores: bool = False
    """Also compute each question's Min-K% scores (the min_k and min_k_pp hardness measures;
    a sweep with such a task computes them when it needs them)."""
    progress: bool = True
    """A progress bar while extracting."""

    def __post_init__(self) -> None:
        if self.measure is not None:
            check_task(f"{self.dataset}:{self.measure}")
        elif self.dataset not in DATASET_NAMES and not (
            self.dataset.endswith(".jsonl") and Path(self.dataset).is_file()
        ):
            raise ConfigError(
                f"--dataset {self.dataset!r}: give one of {', '.join(DATASET_NAMES)} or the "
                "path of an existing .jsonl file"
            )
        require(
            self.measure is not None or self.data.max_per_stratum == 0,
            "max_per_stratum",
            "needs --measure (it caps the strata of a hardness measure)",
        )
        require_non_negative(self.limit, "limit", "every item")
        require_layers(self.layers)
        if self.cache.shards > 1:
            require(
                self.measure is None and not self.limit,
                "shards",
                "fills every row of the cache; leave out --measure and --limit",
            )

    def run(self) -> int:
        if self.cache.dry_run:
            from truthprobe.activations.planning import dry_run

            print(dry_run([request(self)], [self.model], self.cache))
            return 0
        if self.cache.shards > 1:
            print(extract_sharded(self))
            return 0
        print(extract(self).describe())
        return 0


@dataclass
class ExtractResult:
    """Where the cache is and what this call did."""

    path: Path
    rows_extracted: int
    """Rows computed by this call (those requested and not cached before)."""
    rows_requested: int
    rows_cached: int
    """Rows of the file written so far (this call's and earlier ones')."""
    rows_total: int
    seconds: float
    tokens: int = 0
    rows_repaired: int = 0
    """Damaged rows found by verification and extracted again."""

    def describe(self) -> str:
        rate = self.rows_extracted / self.seconds if self.seconds > 0 else float("nan")
        now = (
            f"extracted {self.rows_extracted} rows now in {self.seconds:.1f} s ({rate:.2f} items/s)"
            if self.rows_extracted
            else "extracted 0 new rows (every requested row was cached)"
        )
        repaired = (
            f" ({self.rows_repaired} of them damaged, extracted again)"
            if self.rows_repaired
            else ""
        )
        return (
            f"{self.path}: {self.rows_requested} items requested, {self.rows_cached} of "
            f"{self.rows_total} cached; {now}{repaired}"
        )


def selected_records(config: ExtractConfig, records: Sequence[Question]) -> list[int]:
    """Indices into `records` that `truthprobe extract` flags select (dataset order)."""
    if config.measure is None:
        chosen = list(range(len(records)))
    else:
        from truthprobe.tasks import select_items

        measure = config.data.measure(config.measure)
        chosen = select_items(stratify(records, measure), config.data).tolist()
    return chosen[: config.limit] if config.limit else chosen


def extract(config: ExtractConfig, loaded: LoadedModel | None = None) -> ExtractResult:
    """Extract the rows `config` selects into the dataset's cache, reusing what is there.

    Raises:
        CacheError: an explicit cache path holds a cache made for something else.
    """
    from truthprobe.activations.extraction import fill_rows, open_cache, require_choices
    from truthprobe.models import load_configured
    from truthprobe.tasks import choice_records

    dataset = config.data.load(config.dataset)
    records = choice_records(dataset)
    require_choices(dataset.name, records)
    wanted = selected_records(config, records)
    if not wanted:
        raise ExtractError(f"{dataset.name}: the selection holds no items to extract")
    loaded = loaded or load_configured(config.model)
    template = config.prompt.resolve(records)
    with open_cache(
        dataset.name,
        records,
        loaded,
        template,
        config.layers,
        config.cache,
        config.cache_path,
        config.backend,
    ) as cache:
        rows = cache.rows_of([records[i].id for i in wanted])
        filled = fill_rows(
            cache,
            records,
            rows,
            loaded,
            template,
            config.backend,
            config.progress,
            config.cache.max_prompt_tokens,
            batch_size=config.cache.batch_size,
            question_scores=config.question_scores,
        )
        return ExtractResult(
            cache.path,
            filled.rows_extracted,
            len(wanted),
            cache.rows_done,
            cache.n_items,
            filled.seconds,
            filled.tokens,
            sum(len(d.rows) for d in filled.damaged),
        )


def extract_sharded(config: ExtractConfig, planned: CacheEstimate | None = None) -> str:
    """Fill the whole cache in `config.cache.shards` shards through its launcher, merge them,
    and say what happened (the workers' logs go under `<cache_dir>/jobs`). Planned first with
    the model's configuration alone: a cache merged and complete launches nothing, and one
    that would not fit on the disk is refused before any worker starts."""
    import dataclasses

    from truthprobe.activations import ActivationCache
    from truthprobe.activations.cache import require_disk
    from truthprobe.activations.launch import Launch, run_shards
    from truthprobe.activations.shards import refuse_whole

    planned = planned or plan_request(config)
    path, cache = planned.plan.path, config.cache
    refuse_whole(path)
    if path.exists():
        with ActivationCache(path) as merged:
            scores = config.question_scores and len(merged.unscored_rows())
            if merged.is_complete and not scores:
                return f"{path}: {merged.n_items} rows in {merged.shards} shards, all cached"
    require_disk(path.parent, planned.new_bytes, f"{path} in {cache.shards} shards")
    launch = Launch(
        cache.shards, cache.launcher, cache.workers, str(Path(cache.cache_dir) / "jobs"),
        cache.slurm,
    )  # fmt: skip
    quiet = dataclasses.replace(  # one process per worker, and no bars fighting in a log
        config, cache=dataclasses.replace(cache, shards=1), progress=False
    )
    path, filling, merging = run_shards(fill_shards, (quiet,), launch)
    with ActivationCache(path) as merged:
        rate = merged.n_items / filling if filling > 0 else float("nan")
        return (
            f"{path}: {merged.n_items} rows in {cache.shards} shards ({cache.launcher} "
            f"launcher), all extracted; shards {filling:.1f} s ({rate:.2f} items/s), merge "
            f"{merging:.2f} s"
        )


def plan_request(config: ExtractConfig) -> CacheEstimate:
    """The `CacheEstimate` of the cache `config` fills (its weights on the meta device)."""
    from truthprobe.activations.planning import estimate
    from truthprobe.models import load_planning

    return estimate(request(config), load_planning(config.model), config.cache)


def request(config: ExtractConfig) -> CacheRequest:
    """The `CacheRequest` of `config`: its dataset's records with choices, those selected."""
    from truthprobe.activations.extraction import require_choices
    from truthprobe.activations.planning import CacheRequest
    from truthprobe.tasks import choice_records

    dataset = config.data.load(config.dataset)
    records = choice_records(dataset)
    require_choices(dataset.name, records)
    every = config.measure is None and not config.limit
    ids = None if every else tuple(records[i].id for i in selected_records(config, records))
    return CacheRequest(
        dataset.name, records, config.prompt.resolve(records), ids, config.layers,
        config.cache_path, config.question_scores,
    )  # fmt: skip


def fill_shards(config: ExtractConfig, indices: Sequence[int], count: int) -> str:
    """A shard worker's work: load the model once, fill shards `indices` of `count` of the
    cache `config` names (finished ones skipped), return the whole cache's path."""
    from truthprobe.activations.extraction import plan_cache
    from truthprobe.activations.shards import fill_shard
    from truthprobe.models import load_configured

    wanted = request(config)
    loaded = load_configured(config.model)
    plan = plan_cache(
        wanted.dataset, wanted.records, loaded, wanted.template, config.layers, config.cache,
        config.cache_path, config.backend,
    )  # fmt: skip
    for index in indices:
        fill_shard(
            plan, wanted.records, loaded, wanted.template, index, count, config.backend,
            config.progress, config.cache.max_prompt_tokens, config.cache.batch_size,
            config.question_scores,
        )  # fmt: skip
    return str(plan.path)
