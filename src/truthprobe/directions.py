"""What the probes learned: their directions compared across strata, seeds and datasets.

A fitted linear probe scores a choice by w . (x - mu) / sigma, so its direction in the model's
activation space is v = w / sigma (mu only shifts every choice of an item alike). Directions of
probes trained on different data are compared as the cosine of their v's; the cosine of two
draws of the *same* condition (seed to seed) is the reference line: two easy draws disagree too,
and a cross-condition cosine means something only against it.

`direction_rows(run_dir)` reads a run's saved probe weights (no model, no cache) and returns
tidy rows; `rescaled_rows(run_dir)` adds the accuracy on hard test items of the easy direction
with its standardisation refitted on hard training items (reads the cache's hidden states);
`quantization_rows(run_dir, other_dir)` compares the probes of the same sweep run under two
quantizations of the model; `write_directions(run_dir)` writes all of it as one tidy CSV and
one figure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import combinations, product
from pathlib import Path
from typing import Any

import numpy as np

from truthprobe.configs import Quantization, is_pooled, require
from truthprobe.evaluate import TRAIN_ON
from truthprobe.harness import Draw, Harness
from truthprobe.runstore import PartKey, RunStore, read_json
from truthprobe.sweep import SweepConfig


@dataclass(frozen=True)
class DirectionsConfig(SweepConfig):
    """The sweep, then cosines of its probe directions across strata, seeds, tasks and
    quantizations."""

    versus_quantization: Quantization | None = None
    """Also run the sweep with the model under this quantization (same items and seeds) and
    compare: cosine of the two runs' directions, accuracy of each run's probes on the other's
    states. bitsandbytes 8bit / 4bit run on CPU too, several times slower than bfloat16."""

    def __post_init__(self) -> None:
        super().__post_init__()
        pooled = [t for t in self.tasks if is_pooled(t)]
        require(not pooled, "tasks", f"{pooled[0] if pooled else ''}: directions compare "
                "single tasks (each on its dataset's cache), not pooled ones")  # fmt: skip
        require(
            self.versus_quantization != self.model.single.quantization,
            "versus_quantization",
            f"{self.versus_quantization} is the model's own quantization; pick another "
            "(none, 4bit, 8bit)",
        )

    def twin(self) -> SweepConfig:
        """The same sweep with the model under `versus_quantization`."""
        model = replace(self.model, quantization=(self.versus_quantization or "none",))
        return SweepConfig(probe=self.probe, **{**self.ingredients(), "model": model})

    def run(self) -> int:
        """The sweep (resumed: stored parts are reused) with the disjoint-draw reference's
        parts, then its probes' directions (and the twin run's, with --versus-quantization)."""
        from truthprobe.report import write_report

        if self.cache.dry_run:
            print(Harness(self.harness()).dry_run())
            return 0
        with Harness(self.harness()) as harness:
            harness.run_all()
            plan_disjoint(harness)
        print(write_report(harness.run_dir))
        print(harness.summary.describe())
        versus = None
        if self.versus_quantization is not None:
            twin = self.twin()
            twin.run()
            versus = twin.harness().run_dir()
        plots = self.output.plots_dir
        text = write_directions(
            harness.run_dir, plots, versus=versus, cache_dir=self.cache.cache_dir
        )
        print(text)
        return 0


def raw_direction(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """A saved probe's unit direction in activation space (`w / sigma`, normalised)."""
    v = np.asarray(arrays["probe_weight"], np.float64) / np.asarray(arrays["probe_std"])
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def mean_cosine(a: Sequence[np.ndarray], b: Sequence[np.ndarray] | None = None) -> tuple:
    """Mean, standard deviation and count of cosines between unit vectors.

    With `b`, every pair (a_i, b_j); without, every pair a_i, a_j with i < j (seed to seed).
    """
    pairs = product(a, b) if b is not None else combinations(a, 2)
    values = np.array([float(x @ y) for x, y in pairs])
    if not len(values):
        return float("nan"), float("nan"), 0
    return float(values.mean()), float(values.std()), len(values)


@dataclass
class Directions:
    """Unit directions by (task, family, layer, train_on), one per seed (seed order)."""

    vectors: dict[tuple[str, str, int, str], list[np.ndarray]]

    @classmethod
    def read(cls, run_dir: str | Path) -> Directions:
        store = RunStore(run_dir)
        found: dict[tuple[str, str, int, str], dict[int, np.ndarray]] = defaultdict(dict)
        for slug in store.task_slugs():
            task = store.task(slug)["task"]
            for key in store.keys(slug, default_only=True):
                part = store.read(key)
                arrays = part.probe_arrays
                if arrays is None or part.meta["family"].startswith("ccs"):
                    continue  # CCS's sign is arbitrary: not comparable as a direction
                slot = (task, part.meta["family"], int(part.meta["layer"]), key.train_on)
                found[slot][key.seed] = raw_direction(arrays)
        return cls({k: [v[s] for s in sorted(v)] for k, v in found.items()})

    def keys(self) -> list[tuple[str, str, int]]:
        return sorted({k[:3] for k in self.vectors})


def direction_rows(run_dir: str | Path) -> list[dict]:
    """Tidy cosine rows of a run: per task, probe family and layer, every pair of training
    strata (`easy~hard`), every stratum against itself across seeds (`easy~easy`, the reference),
    and every pair of tasks on the same stratum (`arc:grade~mmlu:level`, comparison `tasks`)."""
    directions = Directions.read(run_dir)
    rows = []
    for task, family, layer in directions.keys():
        got = {t: directions.vectors.get((task, family, layer, t)) for t in TRAIN_ON}
        for a, b in combinations([t for t in TRAIN_ON if got[t]], 2):
            rows.append(_row(task, family, layer, "strata", f"{a}~{b}", got[a], got[b]))
        for a in [t for t in TRAIN_ON if got[t]]:
            rows.append(_row(task, family, layer, "seeds", f"{a}~{a}", got[a], None))
    tasks = sorted({k[0] for k in directions.vectors})
    for (first, second), (family, layer) in product(
        combinations(tasks, 2), sorted({k[1:3] for k in directions.vectors})
    ):
        for train_on in TRAIN_ON:
            a = directions.vectors.get((first, family, layer, train_on))
            b = directions.vectors.get((second, family, layer, train_on))
            if a and b:
                name = f"{first}~{second}"
                rows.append(_row(name, family, layer, "tasks", train_on, a, b))
    return rows


def _row(task, family, layer, comparison, pair, a, b) -> dict:
    mean, sd, n = mean_cosine(a, b)
    return dict(
        task=task, family=family, layer=layer, comparison=comparison, pair=pair,
        cosine=mean, cosine_sd=sd, n_pairs=n,
    )  # fmt: skip


def rescaled_rows(
    run_dir: str | Path, family: str = "mc_linear", cache_dir: str | Path | None = None
) -> list[dict]:
    """Hard-test accuracy, per task and layer, of easy-trained directions as trained, and with
    their standardisation (mu, sigma) refitted on the same seed's hard training items; beside
    the hard-trained probe. The easy direction is kept; only its per-feature scale and centre
    move to the hard items', so a gap that closes says the direction transfers and the scale
    does not. (A multiple-choice softmax ignores a bias and a single scale leaves the argmax
    unchanged, so per-feature statistics are what can be refitted.)"""
    from truthprobe.methods.base import answer_end_features
    from truthprobe.probes import Standardizer

    rows = []
    for view in _cached_tasks(run_dir, cache_dir):
        store, slug, cache = view.store, view.slug, view.cache
        states_of, mask, answers = view.cache_rows, view.mask, view.answers
        test = np.flatnonzero(view.roles == "test")
        keys = [k for k in store.keys(slug, default_only=True) if k.method.startswith(f"{family}@")]
        for method in sorted({k.method for k in keys}):
            layer = int(store.read(next(k for k in keys if k.method == method)).meta["layer"])
            states = answer_end_features(cache, layer, states_of)
            for seed in sorted({k.seed for k in keys if k.method == method}):
                easy = store.read(PartKey(slug, method, "easy", seed))
                hard = store.read(PartKey(slug, method, "hard", seed))
                refit = Standardizer.fit(_data(states, mask, answers, hard.arrays["train"]))
                rescaled = {
                    "probe_mean": refit.mean, "probe_std": refit.std,
                    "probe_weight": easy.arrays["probe_weight"], "probe_bias": np.float64(0),
                }  # fmt: skip
                rows.append(
                    dict(
                        task=view.task, family=family, layer=layer, seed=seed,
                        easy=_accuracy(states, mask, answers, test, easy.arrays),
                        easy_rescaled_on_hard=_accuracy(states, mask, answers, test, rescaled),
                        hard=_accuracy(states, mask, answers, test, hard.arrays),
                    )
                )  # fmt: skip
    return rows


#: The pools of the disjoint reference: draw k's two halves (`easy-disjoint-0a`, `...-0b`).
DISJOINT = "easy-disjoint"


def plan_disjoint(harness: Harness, draws: int = 3) -> None:
    """Ask the harness for the disjoint reference's parts: per task, `draws` pairs of disjoint
    halves of the easy pool (n_train items each, a fixed shuffle per pair), each half a pool of
    its own, fitted by the run's validated probe at every layer (its setting chosen on the
    easy validation items, as every part's)."""
    for name, task in harness.tasks.items():
        if task.free_form:
            continue
        pool, n_train = task.split.pools["easy"], task.split.config.n_train
        if len(pool) < 2 * n_train:
            continue
        plan = []
        for k in range(draws):
            order = np.random.default_rng([k, 2024]).permutation(pool)
            harness.add_pool(name, f"{DISJOINT}-{k}a", order[:n_train])
            harness.add_pool(name, f"{DISJOINT}-{k}b", order[n_train : 2 * n_train])
            plan += [Draw(f"{DISJOINT}-{k}a", 2 * k), Draw(f"{DISJOINT}-{k}b", 2 * k + 1)]
        for label, method in harness.methods[name].items():
            if method.family == "mc_linear":
                harness.run_parts(name, label, plan)


def disjoint_rows(run_dir: str | Path) -> list[dict]:
    """The seed-to-seed reference without shared items: per task and layer, the cosine of
    validated probes fitted on two *disjoint* draws of `n_train` easy pool items (the parts
    `plan_disjoint` stored). Seeded draws of one pool share about n_train / pool of their items,
    and their cosine tracks that share; this is what two draws that share nothing agree on, the
    fair reference for easy~hard (disjoint pools)."""
    store = RunStore(run_dir)
    rows = []
    for slug in store.task_slugs():
        task = store.task(slug)["task"]
        halves: dict[int, dict[str, np.ndarray]] = defaultdict(dict)
        for key in store.keys(slug):
            if key.test or not key.train_on.startswith(f"{DISJOINT}-"):
                continue
            part = store.read(key)
            if part.meta["family"] == "mc_linear" and part.probe_arrays is not None:
                halves[int(part.meta["layer"])][key.train_on] = raw_direction(part.probe_arrays)
        for layer, found in sorted(halves.items()):
            pairs = sorted({name[:-1] for name in found})
            cosines = [float(found[f"{p}a"] @ found[f"{p}b"]) for p in pairs
                       if f"{p}a" in found and f"{p}b" in found]  # fmt: skip
            if not cosines:
                continue
            rows.append(
                dict(task=task, family="mc_linear", layer=layer, comparison="seeds",
                     pair="easy~easy disjoint", cosine=float(np.mean(cosines)),
                     cosine_sd=float(np.std(cosines)), n_pairs=len(cosines))
            )  # fmt: skip
    return rows


def quantization_rows(
    run_dir: str | Path,
    other_dir: str | Path,
    family: str = "mc_linear",
    cache_dir: str | Path | None = None,
) -> list[dict]:
    """The same model under two quantizations: two runs of the same tasks, items and seeds whose
    caches differ only in the model's precision (`truthprobe directions --versus-quantization`).

    Per task and layer: the cosine of the directions each run fitted on the same training items
    (same stratum and seed; comparison `quantization`, pair `easy: bfloat16~8bit`), and the
    hard-test accuracy of easy-trained probes on their own run's states and applied to the other
    run's states of the same items (comparison `quantization_accuracy`, pair `8bit on bfloat16`).
    """
    from truthprobe.errors import TruthprobeError

    rows: list[dict] = []
    for mine in _cached_tasks(run_dir, cache_dir):
        for theirs in _cached_tasks(other_dir, cache_dir):
            if theirs.task == mine.task:
                rows += _twin_rows(mine, theirs, family, (run_dir, other_dir))
    if not rows:
        raise TruthprobeError(f"{run_dir} and {other_dir} share no {family} probes to compare")
    return rows


def _twin_rows(mine: _TaskView, theirs: _TaskView, family: str, where: tuple) -> list[dict]:
    """`quantization_rows` of one task stored in two runs."""
    from truthprobe.errors import TruthprobeError
    from truthprobe.methods.base import answer_end_features

    ids = [view.store.task(view.slug)["items"]["id"] for view in (mine, theirs)]
    if ids[0] != ids[1] or not np.array_equal(mine.roles, theirs.roles):
        raise TruthprobeError(
            f"{mine.task}: {where[0]} and {where[1]} split different items; compare runs made "
            "with the same data, split and seeds"
        )
    names = (_precision(mine.cache), _precision(theirs.cache))
    test = np.flatnonzero(mine.roles == "test")
    stored = set(theirs.store.keys(theirs.slug, default_only=True))
    keys = [
        k
        for k in mine.store.keys(mine.slug, default_only=True)
        if k.method.startswith(f"{family}@")
    ]
    rows = []
    for method in sorted({k.method for k in keys}):
        layer = int(mine.store.read(next(k for k in keys if k.method == method)).meta["layer"])
        states = [answer_end_features(v.cache, layer, v.cache_rows) for v in (mine, theirs)]
        for train_on in TRAIN_ON:
            cosines, accuracy = [], defaultdict(list)
            for key in (k for k in keys if k.method == method and k.train_on == train_on):
                twin = PartKey(theirs.slug, method, train_on, key.seed)
                if twin not in stored:
                    continue
                fits = (mine.store.read(key).arrays, theirs.store.read(twin).arrays)
                cosines.append(float(raw_direction(fits[0]) @ raw_direction(fits[1])))
                if train_on != "easy":
                    continue  # accuracies of easy-trained probes only: easy-to-hard transfer
                for (a, fit), (b, on) in product(
                    zip(names, fits, strict=True), zip(names, states, strict=True)
                ):
                    accuracy[f"{a} on {b}"].append(
                        _accuracy(on, mine.mask, mine.answers, test, fit)
                    )
            pair = f"{train_on}: {names[0]}~{names[1]}"
            if cosines:
                rows.append(_summary(mine.task, family, layer, "quantization", pair, cosines))
            for pair, values in accuracy.items():
                rows.append(
                    _summary(mine.task, family, layer, "quantization_accuracy", pair, values)
                )
    return rows


def _precision(cache) -> str:
    """A cache's model precision: its quantization, or its dtype when not quantized."""
    import json

    model = json.loads(cache.attrs["model"])
    return model["dtype"] if model["quantization"] == "none" else model["quantization"]


def _summary(task, family, layer, comparison, pair, values) -> dict:
    values = np.asarray(values, dtype=float)
    return dict(task=task, family=family, layer=layer, comparison=comparison, pair=pair,
                value=float(values.mean()), sd=float(values.std()), n=len(values))  # fmt: skip


@dataclass
class _TaskView:
    """A stored task of a run, with its open cache and its items' cache rows."""

    store: RunStore
    slug: str
    task: str
    roles: np.ndarray
    strata: np.ndarray
    answers: np.ndarray
    cache: Any
    cache_rows: np.ndarray
    mask: np.ndarray


def _cached_tasks(run_dir: str | Path, cache_dir: str | Path | None) -> Iterator[_TaskView]:
    """Each multiple-choice task of a run, its cache (found by identity under `cache_dir`,
    default: the one the run recorded) open while the caller works on it."""

    from truthprobe.activations import ActivationCache
    from truthprobe.activations.cache import locate_cache

    store = RunStore(run_dir)
    if cache_dir is None:
        recorded = read_json(store.run_dir / "config.json")
        cache_dir = recorded["config"]["cache"]["cache_dir"]
    for slug in store.task_slugs():
        task = store.task(slug)
        if not task.get("cache") or task.get("components"):  # a pooled task: its parts' caches
            continue
        items = task["items"]
        path = locate_cache(task["cache"], cache_dir, task["task"])
        with ActivationCache(path) as cache:
            rows = cache.rows_of(items["id"])
            yield _TaskView(
                store, slug, task["task"], np.array(items["role"]), np.array(items["stratum"]),
                np.array(items["answer_index"]), cache, rows, cache.item("choice_mask")[rows],
            )  # fmt: skip


def _data(states, mask, answers, rows):
    from truthprobe.probes import ProbeData

    return ProbeData(
        tuple(str(r) for r in rows), states[rows], mask[rows], np.asarray(answers)[rows]
    )


def _accuracy(states, mask, answers, rows, arrays) -> float:
    from truthprobe.probes import scorer_from_arrays

    data = _data(states, mask, answers, rows)
    return scorer_from_arrays("mc_linear", arrays).predict(data).accuracy(data.answer_index)


def write_directions(
    run_dir: str | Path,
    plots_dir: str | Path,
    family: str = "mc_linear",
    versus: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> str:
    """`directions.csv` in the run directory and `directions.png` in `plots_dir`; a summary.

    CSV columns: task, family, layer, comparison (`strata`, `seeds`, `tasks`, `quantization`:
    cosines; `rescaled`, `quantization_accuracy`: accuracies), pair, value, sd, n (seed pairs,
    or seeds). `versus`: the run of the same sweep under another quantization, compared.
    """
    import csv

    from truthprobe.plots import plot_directions

    run_dir = Path(run_dir)
    rows = [
        dict(task=r["task"], family=r["family"], layer=r["layer"], comparison=r["comparison"],
             pair=r["pair"], value=r["cosine"], sd=r["cosine_sd"], n=r["n_pairs"])
        for r in direction_rows(run_dir) + disjoint_rows(run_dir)
    ]  # fmt: skip
    by_layer: dict[tuple, list[dict]] = defaultdict(list)
    for r in rescaled_rows(run_dir, family, cache_dir):
        by_layer[(r["task"], r["layer"])].append(r)
    for (task, layer), seeds in sorted(by_layer.items()):
        for pair in ("easy", "easy_rescaled_on_hard", "hard"):
            rows.append(_summary(task, family, layer, "rescaled", pair, [r[pair] for r in seeds]))
    if versus is not None:
        rows += quantization_rows(run_dir, versus, family, cache_dir)
    if not rows:
        from truthprobe.errors import TruthprobeError

        raise TruthprobeError(f"{run_dir}: no saved linear probes to compare")
    path = run_dir / "directions.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    figure = Path(plots_dir) / run_dir.name / "directions.png"
    plot_directions([r for r in rows if r["family"] == family], family, figure)
    lines = [
        f"{family} directions (cosine of w / sigma, mean over seed pairs; median over layers):"
    ]
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task and r["family"] == family]
        cos = defaultdict(list)
        for r in mine:
            if r["comparison"] in ("strata", "seeds", "tasks"):
                cos[r["pair"]].append(r["value"])
        text = ", ".join(f"{p} {np.median(v):.2f}" for p, v in cos.items())
        shift = defaultdict(dict)
        for r in mine:
            if r["comparison"] == "rescaled":
                shift[r["layer"]][r["pair"]] = r["value"]
        gains = [v["easy_rescaled_on_hard"] - v["easy"] for v in shift.values() if len(v) == 3]
        if gains:
            text += (
                f"; hard scaling changes the easy direction's hard-test accuracy by "
                f"{np.mean(gains):+.3f} on average ({min(gains):+.3f}..{max(gains):+.3f})"
            )
        lines.append(f"  {task}: {text}")
        quantized = defaultdict(list)
        for r in mine:
            if r["comparison"].startswith("quantization"):
                quantized[r["pair"]].append(r["value"])
        if quantized:
            text = ", ".join(f"{p} {np.median(v):.3f}" for p, v in quantized.items())
            lines.append(f"  {task}, two quantizations (cosine; hard-test accuracy): {text}")
    lines.append(f"table: {path}; figure: {figure}")
    return "\n".join(lines)
