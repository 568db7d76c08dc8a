"""A transfer study's settings, its sources and chosen layers, and what it writes.

Every study is a frozen config (`StudyConfig` plus its own fields; the command line is built
from it) and a function that turns a `Study` into tidy rows. `Study` loads the sources (filling
each dataset's cache once), chooses one layer per training task on its easy validation items
(or takes `--layer`), and `Study.write` stores `runs/<study>-<hash>/`: `config.json` (settings,
model fingerprint, dataset hashes, caches, chosen layers, provenance), the tidy CSV, every
cell's per-item correctness (`items.npz`), and the figure in `plots/<study>-<hash>/`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from truthprobe.configs import (
    CacheConfig,
    DataConfig,
    ModelConfig,
    OutputConfig,
    PromptConfig,
    check_tasks,
    settings_hash,
)
from truthprobe.evaluate import SplitConfig
from truthprobe.results import accuracy_cells, sgr_cells
from truthprobe.studies.fits import choose_layer, draw, fit_draws
from truthprobe.studies.sources import Source, load_sources

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyConfig:
    """Settings every study shares (`--help` of each lists them with its own)."""

    model: ModelConfig = ModelConfig()
    split: SplitConfig = SplitConfig()
    """n_train and seeds of every training draw; the sweep's split of each task."""
    layer: int | None = None
    """Hidden-state layer of every probe; default: per training task, the layer whose
    easy-trained probes do best on its easy validation items (the sweep's rule)."""
    data: DataConfig = DataConfig(max_per_stratum=0)
    """Every rated item by default (the split is then the sweep's with --max-per-stratum 0)."""
    prompt: PromptConfig = PromptConfig()
    cache: CacheConfig = CacheConfig(batch_size=8)
    """Datasets are filled whole; batches of 8 extract faster."""
    output: OutputConfig = OutputConfig()

    def study_tasks(self) -> tuple[str, ...]:
        """The tasks whose sources the study reads (each study names its own)."""
        raise NotImplementedError

    def __post_init__(self) -> None:
        check_tasks(self.study_tasks())

    def run_hash(self) -> str:
        values = asdict(self)
        values.pop("output")
        return settings_hash(values)


@dataclass(frozen=True)
class TasksStudyConfig(StudyConfig):
    """A study over a list of tasks given on the command line."""

    tasks: tuple[str, ...] = ("arc:grade", "mmlu:level", "strategyqa:steps")
    """dataset:measure tasks (a .jsonl file in the schema works as dataset)."""

    def study_tasks(self) -> tuple[str, ...]:
        return self.tasks


@dataclass
class Study:
    """A study's sources, models and chosen layers; `write` stores its results."""

    kind: str
    config: StudyConfig
    sources: dict[str, Source] = field(default_factory=dict)
    layers: dict[str, dict] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    model_fingerprint: dict = field(default_factory=dict)
    extract_seconds: float = 0.0

    @classmethod
    def open(cls, kind: str, config: StudyConfig) -> Study:
        from truthprobe.methods import Models

        models = Models(config.model)  # loaded on first use: after the data checks
        study = cls(kind, config)
        began = time.perf_counter()
        study.sources = load_sources(
            config.study_tasks(),
            models,
            config.data,
            config.split,
            config.cache,
            config.output.progress,
            config.prompt,
        )
        study.extract_seconds = time.perf_counter() - began
        study.model_fingerprint = models.base.fingerprint.to_dict()
        return study

    @property
    def seeds(self) -> range:
        return self.config.split.seed_values

    @property
    def n_train(self) -> int:
        return self.config.split.n_train

    @property
    def n_boot(self) -> int:
        return self.config.output.n_boot

    def layer(self, task: str) -> int:
        """The probe layer of a training task: `--layer`, or chosen on its easy validation."""
        if task not in self.layers:
            source = self.sources[task]
            if self.config.layer is not None:
                self.layers[task] = {"layer": self.config.layer, "chosen_on": "--layer"}
            else:
                best, scores = choose_layer(source, self.seeds, self.n_train)
                self.layers[task] = {
                    "layer": best,
                    "chosen_on": "easy validation accuracy of easy-trained probes",
                    "validation_accuracy": dict(zip(source.layers, scores, strict=True)),
                }
        return int(self.layers[task]["layer"])

    def fit(self, task: str, pool: np.ndarray, name: str, layer: int | None = None) -> list:
        """The validated probe on `n_train` items of `pool` (rows of the task's source) for
        every seed, at `layer` (default: the task's). `name` keys the draws: one name, one
        draw per seed, whichever study asks."""
        layer = self.layer(task) if layer is None else layer
        split_seed = self.config.split.split_seed
        draws = [
            draw(pool, self.n_train, seed, f"{task}:{name}", split_seed) for seed in self.seeds
        ]
        return fit_draws(self.sources[task], layer, draws, list(self.seeds))

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output.runs_dir) / f"{self.kind}-{self.config.run_hash()}"

    @property
    def plots_dir(self) -> Path:
        return Path(self.config.output.plots_dir) / f"{self.kind}-{self.config.run_hash()}"

    def write(
        self,
        rows: list[dict],
        items: dict[str, np.ndarray],
        draw: Callable[[list[dict], Path, str], Path],
    ) -> tuple[Path, Path]:
        """Store the tidy rows, per-cell items and config; draw the figure. Returns the CSV
        and figure paths. Each file is written whole (a staging file renamed into place)."""
        import pandas as pd

        from truthprobe import __version__
        from truthprobe.provenance import provenance

        run_dir = self.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        csv_path = run_dir / f"{self.kind}.csv"
        staging = csv_path.with_suffix(".csv.tmp")
        pd.DataFrame(rows).to_csv(staging, index=False)
        staging.replace(csv_path)
        staging = run_dir / "items.tmp.npz"
        np.savez_compressed(staging, **items)
        staging.replace(run_dir / "items.npz")
        meta = {
            "kind": self.kind,
            "run_hash": self.config.run_hash(),
            "config": asdict(self.config),
            "package_version": __version__,
            "model_fingerprint": self.model_fingerprint,
            "datasets": {
                task: {
                    "content_sha256": s.content_hash,
                    "cache": s.cache,
                    "template": self.config.prompt.resolve(s.records).reference(),
                    "records": len(s.records),
                    "n_test": len(s.test),
                }
                for task, s in self.sources.items()
            },
            "layers": self.layers,
            "seconds": {
                "extraction": round(self.extract_seconds, 1),
                "total": round(time.perf_counter() - self.started, 1),
            },
            "provenance": provenance(),
        }
        staging = run_dir / "config.json.tmp"
        staging.write_text(json.dumps(meta, indent=2, default=str))
        staging.replace(run_dir / "config.json")
        figure = draw(rows, self.plots_dir / f"{self.kind}.png", self.model_fingerprint["name"])
        return csv_path, figure

    def finish(
        self,
        rows: list[dict],
        items: dict[str, np.ndarray],
        draw: Callable[[list[dict], Path, str], Path],
        table: str,
    ) -> str:
        """Write everything (`write`) and return the printed report: the table, the chosen
        layers, where the files are and how long it took."""
        csv_path, figure = self.write(rows, items, draw)
        layers = ", ".join(f"{t} {v['layer']}" for t, v in self.layers.items())
        how = "--layer" if self.config.layer is not None else "chosen on easy validation"
        return (
            f"{self.kind} {self.config.run_hash()}  model {self.model_fingerprint['name']}; "
            f"n_train {self.n_train}, seeds {len(self.seeds)}; layers ({how}): {layers}\n\n"
            f"{table}\n\ntable: {csv_path}; figure: {figure} (and .pdf); time: model and caches "
            f"{self.extract_seconds:.1f} s, total {time.perf_counter() - self.started:.1f} s"
        )


def scored(
    study: Study,
    source: Source,
    test_rows: np.ndarray,
    correct: np.ndarray,
    ceiling: np.ndarray | None = None,
) -> dict:
    """One cell of a study: accuracy [CI] of `correct` ((test items, seeds)) on `test_rows`
    of `source`, chance and zero-shot there, and, given the ceiling's correctness (the
    supervised probe SGR divides by), its accuracy (`own`) and SGR with the no-gap rule."""
    unsup, chance = source.zero_shot[test_rows], source.chance(test_rows)
    row = dict(
        **accuracy_cells(correct, study.n_boot),
        chance=float(chance.mean()),
        zero_shot=float(unsup.mean()),
        n_train=study.n_train,
    )
    if ceiling is not None:
        row["own"] = float(ceiling.mean())
        row.update(sgr_cells(unsup, correct, ceiling, study.n_boot, chance))
    return row


def run_with(
    kind: str,
    config: StudyConfig,
    rows_of: Callable[[Study], tuple[list[dict], dict[str, np.ndarray]]],
    summary_of: Callable[[list[dict]], str],
    plot: Callable[[list[dict], Path, str], Path],
) -> str:
    """Open the study, compute its rows, store them and the figure; the printed report."""
    study = Study.open(kind, config)
    rows, items = rows_of(study)
    return study.finish(rows, items, plot, summary_of(rows))
