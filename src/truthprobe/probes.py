"""Probes that map answer-end hidden states to `ChoiceProbs`.

Every probe has one interface: `fit(train, seed) -> FittedProbe`, `FittedProbe.predict(test) ->
ChoiceProbs`. Probes read `ProbeData` (arrays taken from an `ActivationCache`), never HDF5.

- `mc_linear`: Hase et al.'s multiple-choice linear probe: a bias-free score w·x per choice,
  softmax across the question's choices, cross-entropy plus an L2 penalty, features z-scored with
  training statistics; SGD, full batch, linear decay, gradient clipping, NaN refits.
- `logistic`: scikit-learn logistic regression on single choice states (correct vs not); the
  per-choice decision values are softmaxed across choices.
- `mass_mean`: the difference of the class means (correct minus incorrect choices) as direction.
- `ccs`: contrast-consistent search (unsupervised): per-choice sigmoid probabilities trained to
  be consistent (sum to one across choices) and confident; labels are never read.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

import numpy as np
import torch

from truthprobe.choice_probs import ChoiceProbs
from truthprobe.configs import PROBE_KINDS, PROBE_PRESETS
from truthprobe.errors import TruthprobeError
from truthprobe.probe_registry import FAMILIES


@dataclass(frozen=True)
class ProbeData:
    """Hidden states of a set of items at one layer.

    Attributes:
        ids: item ids.
        states: (items, choices, d_model) float32 answer-end hidden states.
        mask: (items, choices) True for real choices.
        answer_index: (items,) gold choice.
    """

    ids: tuple[str, ...]
    states: np.ndarray
    mask: np.ndarray
    answer_index: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray | Sequence[int]) -> ProbeData:
        rows = np.asarray(rows)
        return ProbeData(
            tuple(self.ids[i] for i in rows),
            self.states[rows],
            self.mask[rows],
            self.answer_index[rows],
        )


class FittedProbe(Protocol):
    def predict(self, test: ProbeData) -> ChoiceProbs: ...


class Probe(Protocol):
    def fit(self, train: ProbeData, seed: int) -> FittedProbe: ...


@dataclass(frozen=True)
class Standardizer:
    """Z-scoring with statistics of the training set's real (item, choice) vectors."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, data: ProbeData) -> Standardizer:
        vectors = data.states[data.mask].astype(np.float64)
        std = vectors.std(axis=0)
        return cls(vectors.mean(axis=0), np.where(std > 0, std, 1.0))

    def __call__(self, states: np.ndarray) -> np.ndarray:
        # in float32: float64 arithmetic on every (item, choice) vector was most of a sweep
        z = (states - self.mean.astype(np.float32)) / self.std.astype(np.float32)
        return z.astype(np.float32, copy=False)


@dataclass(frozen=True)
class LinearScorer:
    """A fitted direction: score = w · z(x) (+ b), softmaxed across each item's choices."""

    standardizer: Standardizer
    weight: np.ndarray
    bias: float = 0.0

    def scores(self, test: ProbeData, standardized: np.ndarray | None = None) -> np.ndarray:
        """Per-choice scores; `standardized` = `self.standardizer(test.states)` if known."""
        z = self.standardizer(test.states) if standardized is None else standardized
        return z @ self.weight + self.bias

    def predict(self, test: ProbeData, standardized: np.ndarray | None = None) -> ChoiceProbs:
        return ChoiceProbs.from_scores(test.ids, self.scores(test, standardized), test.mask)

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to rebuild this scorer exactly (`scorer_from_arrays`)."""
        return _scorer_arrays(self)


@dataclass(frozen=True)
class MultipleChoiceLinearProbe:
    """Hase et al.'s linear head (defaults from their code; see paper_methods.md §6.3)."""

    l2: float = 1.0
    """Weight of the L2 penalty."""
    l2_squared: bool = False
    """The paper penalises the unsquared norm ||w||; True uses ||w||^2 instead."""
    lr: float = 0.05
    epochs: int = 100
    """Length of the learning-rate schedule (full-batch SGD steps)."""
    final_lr_fraction: float = 0.1
    max_grad_norm: float = 1.0
    max_refits: int = 5
    stop: int = 0
    """Stop after this many steps of the `epochs`-step schedule (0 = run it all): early
    stopping as a checkpoint of one run, so a grid over steps costs one run per l2."""

    def __post_init__(self) -> None:
        if not 0 <= self.stop <= self.epochs:
            raise ValueError(f"stop must be in 0..epochs ({self.epochs}), got {self.stop}")

    @property
    def steps(self) -> int:
        """Steps taken."""
        return self.stop or self.epochs

    def setting(self) -> str:
        """What a validated run chose, as results record it."""
        return f"l2={self.l2:g} steps={self.steps}"

    def fit(self, train: ProbeData, seed: int) -> LinearScorer:
        return fit_linear_grid([self], [train], [seed])[0][0]

    def batch_key(self) -> tuple:
        """Settings that must agree for probes to be fitted in one batched program."""
        return (self.l2_squared, self.lr, self.final_lr_fraction, self.max_grad_norm)


def fit_linear_grid(
    probes: Sequence[MultipleChoiceLinearProbe],
    trains: Sequence[ProbeData],
    seeds: Sequence[int],
) -> list[list[LinearScorer]]:
    """Every probe on every (training set, seed), as one batched tensor program.

    The probes differ only in `l2`, `epochs` and `stop` (`batch_key` must agree); draws of one
    shape (items, used choice slots) form one batch. Returns `[draw][probe]`, each what
    `probes[g].fit(trains[s], seeds[s])` alone gives: every (draw, l2, epochs) is its own
    full-batch SGD run with its own initialisation, schedule and refits, read at each `stop`;
    batching only replaces Python loops and matrix-vector products by batched matrix products,
    which is what makes a grid cost about as much as one fit.
    """
    first = probes[0]
    if any(p.batch_key() != first.batch_key() for p in probes):
        raise ValueError("probes fitted together must differ only in l2, epochs and stop")
    standardizers = [Standardizer.fit(t) for t in trains]
    # drop choice slots no item of the draw uses (they add nothing to the loss), then fit each
    # shape of draws as one batch: ARC's rare 5th choice no longer widens every draw
    slots = [max(1, int(t.mask.sum(1).max())) for t in trains]
    shapes = [(len(t), c, t.states.shape[-1]) for t, c in zip(trains, slots, strict=True)]
    fitted: list[list[LinearScorer]] = [[] for _ in trains]
    for shape in dict.fromkeys(shapes):
        idx = [i for i, s in enumerate(shapes) if s == shape]
        c = shape[1]
        x = torch.from_numpy(np.stack([standardizers[i](trains[i].states)[:, :c] for i in idx]))
        mask = torch.from_numpy(np.stack([trains[i].mask[:, :c] for i in idx]))
        y = torch.from_numpy(np.stack([np.asarray(trains[i].answer_index, np.int64) for i in idx]))
        weights = _fit_batch(probes, x, mask, y, [seeds[i] for i in idx])
        for j, i in enumerate(idx):
            z = standardizers[i]
            fitted[i] = [LinearScorer(z, w.numpy().astype(np.float32)) for w in weights[j]]
    return fitted


def _fit_batch(
    probes: Sequence[MultipleChoiceLinearProbe],
    x: torch.Tensor,
    mask: torch.Tensor,
    y: torch.Tensor,
    seeds: Sequence[int],
) -> torch.Tensor:
    """(draws, probes, d) weights of every probe on a batch of same-shape standardised draws."""
    first = probes[0]
    d = x.shape[-1]
    bound = 1 / np.sqrt(d)  # nn.Linear's default initialisation, one draw per seed
    w0 = torch.stack(
        [(torch.rand(d, generator=torch.Generator().manual_seed(s)) * 2 - 1) * bound for s in seeds]
    )
    runs = list(dict.fromkeys((p.l2, p.epochs) for p in probes))  # one SGD run per (l2, epochs)
    stops = [sorted({p.steps for p in probes if (p.l2, p.epochs) == r}) for r in runs]
    n_draws, n_runs = len(seeds), len(runs)
    l2 = torch.tensor([[v for v, _ in runs]] * n_draws, dtype=torch.float32)
    clip = torch.full((n_draws, n_runs), float(first.max_grad_norm))
    epochs = [e for _, e in runs]
    read = _sgd(first, x, mask, y, w0[:, None].expand(-1, n_runs, -1), l2, clip, epochs, stops)
    weights = torch.stack([read[runs.index((p.l2, p.epochs)), p.steps] for p in probes], 1)
    for s, g in (~torch.isfinite(weights).all(-1)).nonzero().tolist():
        weights[s, g] = _refit(probes[g], x[s : s + 1], mask[s : s + 1], y[s : s + 1], w0[s])
    return weights


def _refit(
    probe: MultipleChoiceLinearProbe, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, w0
) -> torch.Tensor:
    """The paper's recovery from divergence: refit with 4x the penalty and 1/4 the clip."""
    l2, clip = probe.l2, probe.max_grad_norm
    for _ in range(probe.max_refits):
        l2, clip = l2 * 4, clip / 4
        read = _sgd(
            probe, x, mask, y, w0[None, None], torch.tensor([[l2]]), torch.tensor([[clip]]),
            [probe.epochs], [[probe.steps]],
        )  # fmt: skip
        weight = read[0, probe.steps][0]
        if torch.isfinite(weight).all():
            return weight
    raise TruthprobeError(f"linear probe diverged after {probe.max_refits} refits")


def _sgd(
    probe: MultipleChoiceLinearProbe,
    x: torch.Tensor,
    mask: torch.Tensor,
    y: torch.Tensor,
    w0: torch.Tensor,
    l2: torch.Tensor,
    clip: torch.Tensor,
    epochs: Sequence[int],
    stops: Sequence[Sequence[int]],
) -> dict[tuple[int, int], torch.Tensor]:
    """Full-batch SGD of (draws, runs) linear heads at once, with the closed-form gradient.

    x: (S, N, C, D) standardised states; mask (S, N, C); y (S, N); w0 (S, R, D); l2 and clip
    (S, R); epochs (R,): each run's schedule length; stops[r]: the step counts at which run r's
    weights are read. Returns {(r, steps): (S, D) weights}. The same steps as autograd +
    `torch.optim.SGD` + `LinearLR` + `clip_grad_norm_` per (draw, run) (the tests compare
    them), without their per-step bookkeeping, and with the runs' matrix-vector products done
    as one batched matrix product.
    """
    n_draws, n, c, d = x.shape
    # choice-major rows: scores come out (S, R, C, N), so the softmax runs over a long axis
    flat = x.transpose(1, 2).reshape(n_draws, c * n, d)
    blocked = torch.zeros(n_draws, 1, c, n).masked_fill(~mask.transpose(1, 2)[:, None], -torch.inf)
    target = torch.nn.functional.one_hot(y, c).to(x.dtype).transpose(1, 2).reshape(n_draws, 1, -1)
    last = [max(s) for s in stops]
    order = sorted(range(len(epochs)), key=lambda r: -last[r])  # longest first, so the runs
    w = w0[:, order].clone()  # still going at a step are always a prefix
    l2, clip = l2[:, order, None], clip[:, order, None]
    spans = [max(1, epochs[r] - 1) for r in order]  # steps over which the rate decays
    fractions = [[min(step, t) / t for t in spans] for step in range(last[order[0]])]
    rates = probe.lr * (1 + (probe.final_lr_fraction - 1) * torch.tensor(fractions))  # (T, R)
    read: dict[tuple[int, int], torch.Tensor] = {}
    with torch.no_grad():
        for step in range(last[order[0]]):
            k = sum(1 for r in order if step < last[r])
            part = w[:, :k]
            scores = torch.bmm(part, flat.transpose(1, 2)).view(n_draws, k, c, n) + blocked
            probs = torch.softmax(scores, dim=2).reshape(n_draws, k, c * n)
            grad = torch.bmm((probs - target) / n, flat)  # d mean cross-entropy / dw
            if probe.l2_squared:
                grad += 2 * l2[:, :k] * part
            else:
                norm = torch.linalg.vector_norm(part, dim=-1, keepdim=True)
                # the subgradient of ||w|| at 0 is taken as 0, as torch does
                grad += torch.where(norm > 0, l2[:, :k] * part / norm.clamp_min(1e-38), 0.0)
            scale = clip[:, :k] / (torch.linalg.vector_norm(grad, dim=-1, keepdim=True) + 1e-6)
            grad *= scale.clamp(max=1.0)
            part -= rates[step, :k, None] * grad
            for i, r in enumerate(order[:k]):
                if step + 1 in stops[r]:
                    read[r, step + 1] = w[:, i].clone()
    return read


@dataclass(frozen=True)
class LogisticProbe:
    """scikit-learn logistic regression on single choice states (correct = 1)."""

    c: float = 1.0
    """Inverse regularisation strength."""
    max_iter: int = 1000

    def setting(self) -> str:
        return f"c={self.c:g}"

    def fit(self, train: ProbeData, seed: int) -> LinearScorer:
        from sklearn.linear_model import LogisticRegression

        standardizer = Standardizer.fit(train)
        x, labels = choice_rows(train, standardizer)
        model = LogisticRegression(C=self.c, max_iter=self.max_iter, random_state=seed)
        model.fit(x, labels)
        return LinearScorer(
            standardizer, model.coef_[0].astype(np.float32), float(model.intercept_[0])
        )


@dataclass(frozen=True)
class MassMeanProbe:
    """Direction = mean of correct choices minus mean of incorrect ones (z-scored space)."""

    def fit(self, train: ProbeData, seed: int) -> LinearScorer:
        standardizer = Standardizer.fit(train)
        x, labels = choice_rows(train, standardizer)
        direction = x[labels == 1].mean(0) - x[labels == 0].mean(0)
        return LinearScorer(standardizer, direction.astype(np.float32))


@dataclass(frozen=True)
class CCSProbe:
    """Contrast-consistent search for multiple choice; unsupervised (labels are not read).

    Each choice gets p_j = sigmoid(w·x_j + b) on states centred per question (which removes what
    the choices share); the loss is (1 - sum_j p_j)^2 (consistency) + (min_j p_j)^2
    (confidence). Several random restarts; the lowest loss wins.
    """

    restarts: int = 5
    epochs: int = 300
    lr: float = 1e-2
    weight_decay: float = 0.01

    def fit(self, train: ProbeData, seed: int) -> CCSScorer:
        standardizer = Standardizer.fit(train)
        x = torch.from_numpy(_centre_per_item(standardizer(train.states), train.mask))
        mask = torch.from_numpy(train.mask)
        generator = torch.Generator().manual_seed(seed)
        best: tuple[float, np.ndarray, float] | None = None
        for _ in range(self.restarts):
            w = torch.randn(x.shape[-1], generator=generator) / np.sqrt(x.shape[-1])
            w.requires_grad_(True)
            b = torch.zeros(1, requires_grad=True)
            optimizer = torch.optim.AdamW([w, b], lr=self.lr, weight_decay=self.weight_decay)
            for _ in range(self.epochs):
                optimizer.zero_grad()
                loss = _ccs_loss(x, mask, w, b)
                loss.backward()
                optimizer.step()
            final = float(_ccs_loss(x, mask, w, b).detach())
            if best is None or final < best[0]:
                best = (final, w.detach().numpy().copy(), float(b.detach()))
        assert best is not None
        return CCSScorer(standardizer, best[1].astype(np.float32), best[2])


@dataclass(frozen=True)
class CCSScorer:
    standardizer: Standardizer
    weight: np.ndarray
    bias: float

    def predict(self, test: ProbeData) -> ChoiceProbs:
        from scipy.special import expit  # the logistic without exp's overflow warning

        x = _centre_per_item(self.standardizer(test.states), test.mask)
        p = expit(x @ self.weight + self.bias)
        return ChoiceProbs.from_scores(test.ids, np.log(np.clip(p, 1e-12, 1)), test.mask)

    def arrays(self) -> dict[str, np.ndarray]:
        return _scorer_arrays(self)


def _scorer_arrays(scorer: LinearScorer | CCSScorer) -> dict[str, np.ndarray]:
    return {
        "probe_mean": scorer.standardizer.mean,
        "probe_std": scorer.standardizer.std,
        "probe_weight": scorer.weight,
        "probe_bias": np.float64(scorer.bias),
    }


def scorer_from_arrays(kind: str, arrays: dict[str, np.ndarray]) -> LinearScorer | CCSScorer:
    """Rebuild a fitted probe of family `kind` from its saved arrays (a run's `probe_*` arrays):
    the family's `rebuild`, else a `LinearScorer`. It computes exactly the probabilities the
    fitted one did."""
    module = family(kind)
    if hasattr(module, "rebuild"):
        return module.rebuild(arrays)
    standardizer = Standardizer(arrays["probe_mean"], arrays["probe_std"])
    return LinearScorer(standardizer, arrays["probe_weight"], float(arrays["probe_bias"]))


def _ccs_loss(x: torch.Tensor, mask: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
    p = torch.sigmoid(x @ w + b)
    consistency = (1 - (p * mask).sum(1)) ** 2
    confidence = p.masked_fill(~mask, 1.0).min(1).values ** 2
    return (consistency + confidence).mean()


def _centre_per_item(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    counts = mask.sum(1, keepdims=True)[..., None]
    mean = (x * mask[..., None]).sum(1, keepdims=True) / counts
    return (x - mean).astype(np.float32)


def choice_rows(data: ProbeData, standardizer: Standardizer) -> tuple[np.ndarray, np.ndarray]:
    """Real (item, choice) vectors and their 0/1 labels."""
    labels = np.zeros(data.mask.shape, dtype=np.int64)
    labels[np.arange(len(data)), data.answer_index] = 1
    return standardizer(data.states)[data.mask], labels[data.mask]


def make_probe(kind: str) -> Probe:
    """A probe with its default (paper preset) settings, by name."""
    return preset_probes(kind, "paper")[0]


#: How a probe's settings are chosen: `validated` picks one per draw from a grid on easy
#: validation items; `paper` fixes them (Hase et al.'s for mc_linear, library defaults else).
PRESETS: tuple[str, ...] = PROBE_PRESETS
L2_GRID: tuple[float, ...] = (1.0, 0.1, 0.01)
"""mc_linear penalty weights (strongest first: ties on validation go to the first)."""
STEP_GRID: tuple[int, ...] = (50, 100)
"""mc_linear steps taken of the paper's 100-step schedule (early stopping; one run per l2)."""
C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
"""logistic inverse penalty weights (strongest first)."""


def family(kind: str) -> ModuleType:
    """The module of probe family `kind` (a method family `<kind>-paper` is its kind's), as
    `truthprobe.probe_registry` lists it.

    Raises:
        TruthprobeError: no such family.
    """
    name = kind.split("-")[0]
    if name not in FAMILIES:
        raise TruthprobeError(f"unknown probe {kind!r}; valid: {', '.join(PROBE_KINDS)}")
    return importlib.import_module(FAMILIES[name].module)


def preset_probes(kind: str, preset: str) -> tuple[Probe, ...]:
    """The candidate probes `preset` fits for `kind` (one for `paper`, a grid for `validated`
    where the family has something to choose)."""
    if preset not in PRESETS:
        raise TruthprobeError(f"unknown probe preset {preset!r}; valid: {', '.join(PRESETS)}")
    return tuple(family(kind).candidates(preset))


def fit_many(
    probes: Sequence[Probe], trains: Sequence[ProbeData], seeds: Sequence[int]
) -> list[list[FittedProbe]]:
    """Every probe on every (training set, seed): `[draw][probe]`.

    mc_linear probes that differ only in `l2` and `epochs` are fitted as one batched program
    (`fit_linear_grid`); anything else one fit at a time. Each result equals the probe's own
    `fit` on that draw.
    """
    linear = [p for p in probes if isinstance(p, MultipleChoiceLinearProbe)]
    batched = len(linear) == len(probes) and len({p.batch_key() for p in linear}) == 1
    if batched:
        return fit_linear_grid(linear, trains, seeds)  # type: ignore[return-value]
    return [[p.fit(t, s) for p in probes] for t, s in zip(trains, seeds, strict=True)]


def choose(
    fitted: Sequence[FittedProbe], validation: ProbeData, standardized: np.ndarray | None = None
) -> tuple[int, list[float]]:
    """The fit that does best on `validation` items, and every fit's validation accuracy.

    Best = highest accuracy, as reported; ties (common: on ~100 items accuracy moves in steps of
    0.01) go to the lower mean log-loss of the gold choice, then to the earlier candidate (grids
    list the strongest regularisation first). Log-loss alone, though a proper score, picks the
    near-uniform probes that risk nothing on weak-signal layers: on the default model's ARC
    cache it gave lower hard-test accuracy than accuracy-based choice at every layer checked.
    `standardized`: the validation states through the candidates' shared standardizer.
    """
    accuracies, losses = [], []
    gold = np.asarray(validation.answer_index)
    shared = all(isinstance(p, LinearScorer) for p in fitted) and (
        len({id(p.standardizer) for p in fitted}) == 1  # type: ignore[union-attr]
    )
    if shared:  # one draw's grid: standardise once, score every candidate in one product
        z = standardized
        if z is None:
            z = fitted[0].standardizer(validation.states)  # type: ignore[union-attr]
        weights = np.stack([p.weight for p in fitted], 1)  # type: ignore[union-attr]
        biases = np.array([p.bias for p in fitted])  # type: ignore[union-attr]
        scores = np.moveaxis(z @ weights + biases, -1, 0)
        candidates = [ChoiceProbs.from_scores(validation.ids, v, validation.mask) for v in scores]
    else:
        candidates = [p.predict(validation) for p in fitted]
    for probs in candidates:
        accuracies.append(probs.accuracy(gold))
        losses.append(float(-np.log(np.clip(probs.gold_probability(gold), 1e-12, 1)).mean()))
    best = min(range(len(fitted)), key=lambda g: (-accuracies[g], losses[g], g))
    return best, accuracies
