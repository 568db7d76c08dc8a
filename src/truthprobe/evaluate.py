"""The evaluation harness: train/test splits by hardness, accuracy, SGR and bootstrap CIs.

Supervision Gap Recovered (SGR), all accuracies on the hard test split:

    SGR = (acc_easy - acc_unsupervised) / (acc_hard - acc_unsupervised)

1 means easy supervision is as good as hard supervision, 0 that it is no better than none.
Confidence intervals come from a paired bootstrap that resamples test items and training seeds
jointly for all three terms (items and seeds with replacement, as the paper's R analysis does).
"""

from __future__ import annotations

import functools
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from truthprobe.choice_probs import ECE_BINS, expected_calibration_error
from truthprobe.configs import check_fraction, require_non_negative, require_positive
from truthprobe.errors import TruthprobeError
from truthprobe.hardness import Stratum

TRAIN_ON: tuple[str, ...] = ("easy", "hard", "all")


def pool_key(name: str) -> int:
    """The number a pool's name adds to its draws' seed: easy / hard / all keep the index they
    always had; a study's own pool (`grade-3`) a checksum of its name."""
    return TRAIN_ON.index(name) if name in TRAIN_ON else zlib.crc32(name.encode())


class EvaluationError(TruthprobeError, ValueError):
    """A split or metric that cannot be computed as asked (too few items, empty test set)."""


@dataclass(frozen=True)
class SplitConfig:
    """How items are divided into a hard test set, training pools and a validation set."""

    n_train: int = 160
    """Training items drawn per (train_on, seed)."""
    seeds: int = 5
    """Training draws per stratum (seeds 0..N-1); the bootstrap resamples them."""
    test_fraction: float = 0.5
    """Share of the hard stratum held out as the hard test set (the rest is the hard pool)."""
    validation_size: int = 100
    """Easy items held out to choose layers and settings (never the hard test set)."""
    max_test: int = 0
    """Cap on hard test items (costly methods on a CPU; 0 = no cap); the rest joins the hard
    pool."""
    split_seed: int = 0
    """Seed of the test / pool / validation division (fixed across training seeds)."""

    def __post_init__(self) -> None:
        check_fraction(self.test_fraction, "test_fraction")
        require_positive(self.n_train, "n_train")
        require_positive(self.seeds, "seeds")
        require_positive(self.validation_size, "validation_size")
        require_non_negative(self.max_test, "max_test", "half the hard stratum")

    @property
    def seed_values(self) -> range:
        return range(self.seeds)


@dataclass(frozen=True)
class EvalSplit:
    """Row indices (into the evaluated item list) of every set; all disjoint where they must be.

    `pools["all"]` holds every rated item outside the test and validation sets, so "all" covers
    easy, medium and hard items.
    """

    test: np.ndarray
    validation: np.ndarray
    pools: dict[str, np.ndarray]
    config: SplitConfig

    def train_rows(self, train_on: str, seed: int, n: int | None = None) -> np.ndarray:
        """`n` (default `n_train`) training rows for (train_on, seed): the one draw rule.

        The first `n` of one seeded order of the pool (`draw_order`), so draws are nested: the
        draw of 40 is a subset of the draw of 80 with the same seed (a learning curve adds
        items, it never swaps them), and a curve's point at `n_train` is the sweep's own draw.
        ICL passes its k here: its demonstrations come from the same pools as probe training.
        """
        pool = self.pools.get(train_on)
        if pool is None:
            raise EvaluationError(f"unknown train_on {train_on!r}; valid: {', '.join(TRAIN_ON)}")
        size = self.config.n_train if n is None else n
        if size > len(pool):
            raise EvaluationError(f"{train_on} pool has {len(pool)} items, {size} requested")
        return np.sort(self.draw_order(train_on, seed)[:size])

    def draw_order(self, train_on: str, seed: int) -> np.ndarray:
        """The pool in the seeded order every draw of (train_on, seed) takes its first n from.

        Its first `n_train` are the split's draw of that size as it has been made since the
        first release (`Generator.choice` without replacement, which is not nested by itself),
        followed by the rest of the pool shuffled by the same generator: runs stored before
        draws were nested keep their training items, and every size is a prefix.
        """
        pool = self.pools[train_on]
        rng = np.random.default_rng([self.config.split_seed, seed, pool_key(train_on)])
        first = rng.choice(pool, size=min(self.config.n_train, len(pool)), replace=False)
        rest = rng.permutation(np.setdiff1d(pool, first))
        return np.concatenate([first, rest])


def noisy_labels(
    answers: np.ndarray, n_choices: np.ndarray, p: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Answers with round(p * n) of them, drawn at random, replaced by a random wrong choice.

    Returns the noisy answers and a mask of the replaced items. Exactly that many labels are
    wrong, so a probe that agrees with the clean labels scores 1 - p against the noisy ones.
    The same (seed, p) always replaces the same items, whichever command asks.
    """
    answers = np.asarray(answers).copy()
    n_choices = np.asarray(n_choices)
    rng = np.random.default_rng([seed, int(round(p * 1000))])
    flipped = np.zeros(len(answers), bool)
    flipped[rng.choice(len(answers), int(round(p * len(answers))), replace=False)] = True
    for i in np.flatnonzero(flipped):
        wrong = [c for c in range(int(n_choices[i])) if c != answers[i]]
        answers[i] = rng.choice(wrong)
    return answers, flipped


def make_split(strata: Sequence[Stratum | None], config: SplitConfig) -> EvalSplit:
    """Divide rated items into hard test, hard pool, easy validation, easy pool and all pool.

    Raises:
        EvaluationError: when a pool is smaller than `n_train` (the message gives the counts).
    """
    strata = np.array([s if s is not None else "" for s in strata])
    rng = np.random.default_rng(config.split_seed)
    hard = rng.permutation(np.flatnonzero(strata == "hard"))
    easy = rng.permutation(np.flatnonzero(strata == "easy"))
    n_test = int(round(len(hard) * config.test_fraction))
    if config.max_test:
        n_test = min(n_test, config.max_test)
    test, hard_pool = np.sort(hard[:n_test]), np.sort(hard[n_test:])
    validation, easy_pool = (
        np.sort(easy[: config.validation_size]),
        np.sort(easy[config.validation_size :]),
    )
    held_out = np.zeros(len(strata), bool)
    held_out[test] = held_out[validation] = True
    all_pool = np.flatnonzero((strata != "") & ~held_out)
    pools = {"easy": easy_pool, "hard": hard_pool, "all": all_pool}
    short = {k: len(v) for k, v in pools.items() if len(v) < config.n_train}
    if short or n_test == 0 or len(validation) == 0:
        raise EvaluationError(
            f"too few items for n_train={config.n_train}: pools {short or 'ok'}, hard test "
            f"{n_test}, easy validation {len(validation)} (easy {len(easy)}, hard {len(hard)}); "
            "lower --n-train or --validation-size, or use a larger dataset"
        )
    return EvalSplit(test, validation, pools, config)


def supervision_gap_recovered(acc_easy: float, acc_hard: float, acc_unsup: float) -> float:
    """SGR = (easy - unsup) / (hard - unsup); NaN when hard supervision gains nothing."""
    denominator = acc_hard - acc_unsup
    if denominator == 0:
        return float("nan")
    return (acc_easy - acc_unsup) / denominator


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval."""

    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class SGRResult:
    """SGR and its three accuracies on the hard test set, each with a bootstrap interval."""

    sgr: Interval
    acc_unsup: Interval
    acc_easy: Interval
    acc_hard: Interval
    denominator: Interval
    n_test: int
    n_seeds: int
    n_boot: int
    warning: str | None = None
    zero_denominators: int = 0
    """Resamples in which acc_hard - acc_unsup was exactly 0 (their SGR is undefined and left
    out of the interval)."""

    @property
    def no_gap(self) -> bool:
        """True when hard supervision has no measurable gap to recover: the interval of
        acc_hard - acc_unsup includes 0 or lies below it. SGR is then reported as "no gap"."""
        return not self.denominator.low > 0

    def text(self) -> str:
        """`0.67 [-1.72, 3.11]`, or `no gap` where there is none to recover."""
        return sgr_text(self.to_dict())

    def to_dict(self) -> dict[str, float | int | str | None]:
        out: dict[str, float | int | str | None] = {}
        for name in ("sgr", "acc_unsup", "acc_easy", "acc_hard", "denominator"):
            interval = getattr(self, name)
            out[name], out[f"{name}_low"], out[f"{name}_high"] = (
                interval.estimate,
                interval.low,
                interval.high,
            )
        out.update(
            n_test=self.n_test,
            n_seeds=self.n_seeds,
            n_boot=self.n_boot,
            no_gap=self.no_gap,
            zero_denominators=self.zero_denominators,
            warning=self.warning,
        )
        return out


def sgr_text(row: dict) -> str:
    """How an SGR row (`SGRResult.to_dict()`) is printed: `no gap` where the interval of
    acc_hard - acc_unsup includes 0 or lies below it (a ratio over a gap that may not exist is
    noise), else `estimate [low, high]`."""
    if row["no_gap"]:
        return "no gap"
    return f"{row['sgr']:.2f} [{row['sgr_low']:.2f}, {row['sgr_high']:.2f}]"


def _as_matrix(correct: np.ndarray) -> np.ndarray:
    correct = np.asarray(correct, dtype=np.float64)
    return correct[:, None] if correct.ndim == 1 else correct


@functools.lru_cache(maxsize=8)
def _bootstrap_weights(n: int, n_seeds: int, n_boot: int, seed: int):
    """Resampling counts: (n_boot, n) for items, (n_boot, n_seeds) for seeds.

    Cached: every layer and method of a task is resampled with the same draws, which both saves
    time and keeps their intervals comparable.
    """
    rng = np.random.default_rng(seed)
    items = rng.multinomial(n, np.full(n, 1 / n), size=n_boot).astype(np.float64)
    seeds = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot).astype(np.float64)
    items.flags.writeable = seeds.flags.writeable = False
    return items, seeds


def _resampled_means(correct: np.ndarray, items: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Mean of `correct` (n, S) under each resample; a 1-column matrix ignores seed weights."""
    n, s = correct.shape
    per_seed = items @ correct  # (B, S): item-weighted sums per seed
    if s == 1:
        return per_seed[:, 0] / n
    return (per_seed * seeds).sum(1) / (n * s)


def _interval(estimate: float, samples: np.ndarray, level: float) -> Interval:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return Interval(estimate, float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high))


def bootstrap_accuracy(
    correct: np.ndarray, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Accuracy (mean over items and seeds) with an item-and-seed bootstrap interval."""
    matrix = _as_matrix(correct)
    items, seeds = _bootstrap_weights(matrix.shape[0], matrix.shape[1], n_boot, seed)
    return _interval(float(matrix.mean()), _resampled_means(matrix, items, seeds), level)


def bootstrap_sgr(
    unsup: np.ndarray,
    easy: np.ndarray,
    hard: np.ndarray,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> SGRResult:
    """SGR with a paired bootstrap over test items and training seeds.

    Args:
        unsup: (items,) or (items, 1) correctness of the unsupervised method.
        easy: (items, seeds) correctness after easy training.
        hard: the same after hard training: the same items in the same order, seed k of both
            drawn with the same seed value.
    """
    u, e, h = _as_matrix(unsup), _as_matrix(easy), _as_matrix(hard)
    if not (u.shape[0] == e.shape[0] == h.shape[0]) or e.shape[1] != h.shape[1]:
        raise EvaluationError(
            f"SGR terms must share test items and seeds: unsup {u.shape}, easy {e.shape}, "
            f"hard {h.shape}"
        )
    if u.shape[0] == 0:
        raise EvaluationError("SGR needs at least one test item")
    items, seeds = _bootstrap_weights(e.shape[0], e.shape[1], n_boot, seed)
    bu, be, bh = (_resampled_means(m, items, seeds) for m in (u, e, h))
    with np.errstate(divide="ignore", invalid="ignore"):
        sgr_samples = (be - bu) / (bh - bu)
    acc_u, acc_e, acc_h = float(u.mean()), float(e.mean()), float(h.mean())
    denominator = _interval(acc_h - acc_u, bh - bu, level)
    zero = int(np.count_nonzero(bh == bu))
    warning = None
    if not denominator.low > 0:
        warning = (
            f"no gap: the denominator acc_hard - acc_unsup = {acc_h - acc_u:+.3f} has a "
            f"{level:.0%} interval [{denominator.low:+.3f}, {denominator.high:+.3f}] that "
            f"{'lies below' if denominator.high < 0 else 'includes'} 0 ({zero} of {n_boot} "
            "resamples had a zero denominator): SGR is not meaningful here"
        )
        warnings.warn(warning, stacklevel=2)
    return SGRResult(
        sgr=_interval(supervision_gap_recovered(acc_e, acc_h, acc_u), sgr_samples, level),
        acc_unsup=_interval(acc_u, bu, level),
        acc_easy=_interval(acc_e, be, level),
        acc_hard=_interval(acc_h, bh, level),
        denominator=denominator,
        n_test=e.shape[0],
        n_seeds=e.shape[1],
        n_boot=n_boot,
        warning=warning,
        zero_denominators=zero,
    )


def bootstrap_ece(
    confidence: np.ndarray,
    correct: np.ndarray,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
    bins: int = ECE_BINS,
) -> Interval:
    """ECE over (items, seeds) with an item-and-seed bootstrap interval (the resamples of
    `bootstrap_accuracy`).

    The interval is the basic ("reverse percentile") one, 2 x estimate minus the resamples'
    quantiles: binned ECE is biased upwards (noise in a bin's accuracy only ever adds), and a
    resample, which repeats items, adds more, so the plain percentile interval of perfectly
    calibrated probabilities lies wholly above 0. The basic interval reflects that shift back
    (its lower end clipped at 0, where ECE ends).
    """
    c, y = _as_matrix(confidence), _as_matrix(correct)
    n, s = c.shape
    estimate = expected_calibration_error(c, y, bins)
    items, seeds = _bootstrap_weights(n, s, n_boot, seed)
    which = np.minimum((c * bins).astype(np.int64), bins - 1)
    onehot = np.eye(bins)[which]  # (n, s, bins)
    samples = np.empty(n_boot)
    for start in range(0, n_boot, 1000):  # (1000, n, s) pair weights at a time
        w = items[start : start + 1000, :, None] * seeds[start : start + 1000, None, :]
        weight = np.einsum("bis,isk->bk", w, onehot)
        gap = np.einsum("bis,isk->bk", w, onehot * (y - c)[..., None])
        samples[start : start + 1000] = np.abs(gap).sum(1) / weight.sum(1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(estimate, max(0.0, float(2 * estimate - high)), float(2 * estimate - low))
