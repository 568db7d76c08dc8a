"""Model-based hardness: how hard the *model* finds each item, as a hardness measure.

Two scores per item, higher = harder, both "one minus the label's confidence" (the paper's MDL
view: an item whose label the model codes cheaply is easy):

- `mdl`: zero-shot MDL, 1 - p(gold) from the cached zero-shot choice log-likelihoods (the
  zero-shot method's own scoring, so no extra forward pass);
- `probe_mdl`: probe MDL, 1 - the mean gold probability of held-out linear probes along a
  learning curve (`CURVE` shares of the training folds) at the middle layer, cross-fitted over
  `FOLDS` folds: an item's score only ever comes from probes that never saw it (the online-code
  view of description length).

Scores cover every record of the dataset's cache and are stored beside it
(`<cache>.hardness.npz`), keyed by the cache's content: they are recomputed only when the cache
changes. `truthprobe.harness` fills the whole cache and reads them for `--tasks arc:mdl`.
`model_scores` also serves the contamination measures (`min_k`, `min_k_pp`, see
`truthprobe.min_k`), which a pass of their own stores in the cache itself when a task asks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from truthprobe.choice_probs import zero_shot_probs
from truthprobe.errors import TruthprobeError
from truthprobe.hardness import MODEL_MEASURES
from truthprobe.min_k import DEFAULT_PERCENT, hardness_column
from truthprobe.min_k import MEASURE_SCORES as MIN_K_MEASURES
from truthprobe.runstore import RunStoreError, read_npz

log = logging.getLogger(__name__)

FOLDS = 5
CURVE: tuple[float, ...] = (0.0625, 0.125, 0.25, 0.5, 1.0)
"""Shares of the other folds' items each learning-curve probe trains on (nested)."""
SCORES_FORMAT = 1


def zero_shot_mdl(logprob: np.ndarray, mask: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """1 - p(gold) under zero-shot scoring (softmax of summed log-likelihoods over choices)."""
    ids = tuple(map(str, range(len(answers))))
    return 1.0 - zero_shot_probs(ids, logprob, None, mask, "raw").gold_probability(answers)


def probe_mdl(
    states: np.ndarray,
    mask: np.ndarray,
    answers: np.ndarray,
    folds: int = FOLDS,
    curve: Sequence[float] = CURVE,
    seed: int = 0,
) -> np.ndarray:
    """1 - mean held-out gold probability along a cross-fitted learning curve.

    Items are dealt into `folds` folds (seeded); for each fold, probes (l2 = 0.1, 100 steps:
    a middle setting of the validated grid) train on nested shares `curve` of the other folds
    and score the fold. No item's score comes from a probe trained on it.
    """
    from truthprobe.probes import MultipleChoiceLinearProbe, ProbeData, fit_many

    n = len(answers)
    if n < 2 * folds:
        raise TruthprobeError(f"probe MDL needs at least {2 * folds} items, got {n}")
    rng = np.random.default_rng(seed)
    fold_of = fold_assignment(n, folds, rng)
    ids = tuple(map(str, range(n)))
    data = ProbeData(ids, states, mask, np.asarray(answers))
    trains, held_out = [], []
    for f in range(folds):
        rest = rng.permutation(np.flatnonzero(fold_of != f))  # nested prefixes: a curve
        for share in curve:
            size = max(folds, int(round(share * len(rest))))
            trains.append(np.sort(rest[:size]))
            held_out.append(np.flatnonzero(fold_of == f))
    probe = MultipleChoiceLinearProbe(l2=0.1)
    fitted = fit_many([probe], [data.take(t) for t in trains], list(range(len(trains))))
    confidence = np.zeros(n)
    for (fit,), rows in zip(fitted, held_out, strict=True):
        test = data.take(rows)
        confidence[rows] += fit.predict(test).gold_probability(test.answer_index)
    return 1.0 - confidence / len(curve)


def fold_assignment(n: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold of each item: a seeded deal, so fold sizes differ by at most one."""
    return rng.permutation(n) % folds


def middle_layer(layers: Sequence[int]) -> int:
    return max(layers) // 2


def scores_path(cache_path: str | Path) -> Path:
    path = Path(cache_path)
    return path.with_name(path.stem + ".hardness.npz")


def model_scores(cache, measure: str) -> dict[str, float]:
    """Per-item `measure` scores of every record in a complete cache, read from beside it or
    computed (and stored) when the cache changed since."""
    if measure not in MODEL_MEASURES:
        raise TruthprobeError(f"{measure!r} is not model-based; model-based: {MODEL_MEASURES}")
    if not cache.is_complete:
        raise TruthprobeError(
            f"{cache.path}: {measure} needs every record's states ({cache.rows_done} of "
            f"{cache.n_items} rows written); extract the whole dataset first"
        )
    ids = cache.item("id").astype(str)
    if measure in MIN_K_MEASURES:  # stored in the cache by the question-score pass
        column = cache.score(MIN_K_MEASURES[measure])
        values = hardness_column(column, cache.min_k_percents, DEFAULT_PERCENT)
        return {i: float(v) for i, v in zip(ids, values, strict=True) if np.isfinite(v)}
    state = cache.content_hash()
    path = scores_path(cache.path)
    stored: dict[str, np.ndarray] = {}
    if path.is_file():
        try:
            found = read_npz(path)
            if str(found["state"]) == state and int(found["format"]) == SCORES_FORMAT:
                stored = found
        except (RunStoreError, KeyError, ValueError) as err:
            log.warning("%s; model-rated scores computed again", err)
    if measure not in stored:
        mask = cache.item("choice_mask")
        answers = cache.item("answer_index")
        if measure == "mdl":
            values = zero_shot_mdl(cache.score("choice_logprob"), mask, answers)
        else:
            states = cache.answer_end(middle_layer(cache.layers))
            values = probe_mdl(states, mask, answers)
        stored = {k: v for k, v in stored.items() if k not in ("state", "format")}
        stored[measure] = values
        if measure == "probe_mdl":
            stored["probe_mdl_layer"] = np.int64(middle_layer(cache.layers))
        staging = path.with_name(f"{path.stem}.partial-{os.getpid()}.npz")
        np.savez(staging, state=np.array(state), format=np.int64(SCORES_FORMAT), **stored)
        staging.replace(path)
    return dict(zip(ids, stored[measure].astype(float).tolist(), strict=True))


def zero_shot_correct(cache) -> dict[str, float]:
    """1.0 where zero-shot scoring (the cached choice log-likelihoods) gets an item right: the
    per-stratum accuracy `truthprobe data summary` shows beside model-based strata (under
    `min_k`, the direct test of contamination: are likely-seen items answered better?)."""
    ids = cache.item("id").astype(str)
    logprob, mask = cache.score("choice_logprob"), cache.item("choice_mask")
    probs = zero_shot_probs(ids, logprob, None, mask, "raw")
    right = probs.correct(cache.item("answer_index"))
    return dict(zip(ids, right.tolist(), strict=True))


def rank_correlations(records: Sequence, measure: str, scores: dict[str, float]) -> list[dict]:
    """Spearman rank correlation of a model-based measure with every human measure that rates
    these records (on the records both rate): does the model find hard what people do?"""
    from scipy.stats import spearmanr

    from truthprobe.hardness import MEASURES, hardness_values, measures_for

    dataset = records[0].dataset
    rows = []
    for name in measures_for(dataset):
        if MEASURES[name].needs_model:
            continue
        values = hardness_values(records, name)
        pairs = [
            (v, scores[r.id])
            for r, v in zip(records, values, strict=True)
            if v is not None and r.id in scores
        ]
        if len(pairs) < 3 or len({v for v, _ in pairs}) < 2:
            continue
        rho = spearmanr([v for v, _ in pairs], [m for _, m in pairs]).statistic
        rows.append(dict(dataset=dataset, model_measure=measure, human_measure=name,
                         n=len(pairs), spearman=float(rho)))  # fmt: skip
    return rows


def stored_scores(dataset: str, measure: str, cache_dir: str | Path) -> tuple[Path, dict]:
    """Scores of `measure` stored beside the one cache of `dataset` under `cache_dir` that has
    them (`truthprobe data summary` reads them without a model)."""
    from truthprobe.activations import ActivationCache

    found = []
    if measure in MIN_K_MEASURES:  # in every complete cache of the dataset
        for path in sorted(Path(cache_dir).glob(f"*/{Path(dataset).stem}-*.h5")):
            try:
                with ActivationCache(path) as cache:
                    if cache.is_scored:
                        found.append(scores_path(path))
            except TruthprobeError:
                continue  # another version's or a damaged file: not a source of scores
    damaged = []
    for path in sorted(Path(cache_dir).glob(f"*/{Path(dataset).stem}-*.hardness.npz")):
        try:
            if measure in read_npz(path):
                found.append(path)
        except RunStoreError:
            damaged.append(path)
    if not found:
        note = f" ({damaged[0]} is damaged)" if damaged else ""
        raise TruthprobeError(
            f"no stored {measure} scores for {dataset} under {cache_dir}{note}: `truthprobe "
            f"sweep --tasks {dataset}:{measure}` computes them with the model"
        )
    if len(found) > 1:
        raise TruthprobeError(
            f"{len(found)} caches under {cache_dir} hold {measure} scores for {dataset} (one per "
            f"model or template): pass --cache-dir of one model, e.g. {found[0].parent}"
        )
    cache_path = found[0].with_name(found[0].name.replace(".hardness.npz", ".h5"))
    with ActivationCache(cache_path) as cache:
        return cache_path, model_scores(cache, measure)
