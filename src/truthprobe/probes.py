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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from truthprobe.choice_probs import ChoiceProbs
from truthprobe.configs import PROBE_KINDS
from truthprobe.errors import TruthprobeError


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
        return ((states - self.mean) / self.std).astype(np.float32)


@dataclass(frozen=True)
class LinearScorer:
    """A fitted direction: score = w · z(x) (+ b), softmaxed across each item's choices."""

    standardizer: Standardizer
    weight: np.ndarray
    bias: float = 0.0

    def scores(self, test: ProbeData) -> np.ndarray:
        return self.standardizer(test.states) @ self.weight + self.bias

    def predict(self, test: ProbeData) -> ChoiceProbs:
        return ChoiceProbs.from_scores(test.ids, self.scores(test), test.mask)

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
    """Full-batch SGD steps."""
    final_lr_fraction: float = 0.1
    max_grad_norm: float = 1.0
    max_refits: int = 5

    def fit(self, train: ProbeData, seed: int) -> LinearScorer:
        standardizer = Standardizer.fit(train)
        x = torch.from_numpy(standardizer(train.states))
        mask = torch.from_numpy(train.mask)
        y = torch.from_numpy(np.asarray(train.answer_index, dtype=np.int64))
        l2, clip = self.l2, self.max_grad_norm
        for _ in range(self.max_refits + 1):
            weight = self._fit_once(x, mask, y, seed, l2, clip)
            if np.isfinite(weight).all():
                return LinearScorer(standardizer, weight)
            l2, clip = l2 * 4, clip / 4  # the paper's recovery from divergence
        raise TruthprobeError(f"linear probe diverged after {self.max_refits} refits")

    def _fit_once(self, x, mask, y, seed: int, l2: float, clip: float) -> np.ndarray:
        """Full-batch SGD with the loss's closed-form gradient.

        The same steps as autograd + `torch.optim.SGD` + `LinearLR` + `clip_grad_norm_` (the
        tests compare them), without their per-step bookkeeping: for a 640-weight model that
        bookkeeping, not the arithmetic, was most of a sweep's time.
        """
        generator = torch.Generator().manual_seed(seed)
        n, c, d = x.shape
        bound = 1 / np.sqrt(d)  # nn.Linear's default initialisation
        w = (torch.rand(d, generator=generator) * 2 - 1) * bound
        flat = x.reshape(n * c, d)
        blocked = torch.zeros(n, c).masked_fill(~mask, float("-inf"))
        target = torch.nn.functional.one_hot(y, c).to(x.dtype)
        steps = max(1, self.epochs - 1)
        with torch.no_grad():
            for step in range(self.epochs):
                probs = torch.softmax((flat @ w).view(n, c) + blocked, dim=1)
                grad = ((probs - target) / n).reshape(-1) @ flat  # d mean cross-entropy / dw
                if self.l2_squared:
                    grad += 2 * l2 * w
                else:
                    norm = torch.linalg.vector_norm(w)
                    if norm > 0:  # the subgradient of ||w|| at 0 is taken as 0, as torch does
                        grad += l2 * w / norm
                scale = clip / (float(torch.linalg.vector_norm(grad)) + 1e-6)
                if scale < 1:
                    grad *= scale
                fraction = 1 + (self.final_lr_fraction - 1) * min(step, steps) / steps
                w -= self.lr * fraction * grad
        return w.numpy().astype(np.float32)


@dataclass(frozen=True)
class LogisticProbe:
    """scikit-learn logistic regression on single choice states (correct = 1)."""

    c: float = 1.0
    """Inverse regularisation strength."""
    max_iter: int = 1000

    def fit(self, train: ProbeData, seed: int) -> LinearScorer:
        from sklearn.linear_model import LogisticRegression

        standardizer = Standardizer.fit(train)
        x, labels = _choice_rows(train, standardizer)
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
        x, labels = _choice_rows(train, standardizer)
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
        x = _centre_per_item(self.standardizer(test.states), test.mask)
        p = 1 / (1 + np.exp(-(x @ self.weight + self.bias)))
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
    """Rebuild a fitted probe from its saved arrays (a run's `probe_*` arrays).

    The rebuilt scorer computes exactly the probabilities the fitted one did.
    """
    standardizer = Standardizer(arrays["probe_mean"], arrays["probe_std"])
    bias = float(arrays["probe_bias"])
    scorer = CCSScorer if kind == "ccs" else LinearScorer
    return scorer(standardizer, arrays["probe_weight"], bias)


def _ccs_loss(x: torch.Tensor, mask: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
    p = torch.sigmoid(x @ w + b)
    consistency = (1 - (p * mask).sum(1)) ** 2
    confidence = p.masked_fill(~mask, 1.0).min(1).values ** 2
    return (consistency + confidence).mean()


def _centre_per_item(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    counts = mask.sum(1, keepdims=True)[..., None]
    mean = (x * mask[..., None]).sum(1, keepdims=True) / counts
    return (x - mean).astype(np.float32)


def _choice_rows(data: ProbeData, standardizer: Standardizer) -> tuple[np.ndarray, np.ndarray]:
    """Real (item, choice) vectors and their 0/1 labels."""
    labels = np.zeros(data.mask.shape, dtype=np.int64)
    labels[np.arange(len(data)), data.answer_index] = 1
    return standardizer(data.states)[data.mask], labels[data.mask]


def make_probe(kind: str) -> Probe:
    """A probe with its default settings, by name."""
    probes: dict[str, Probe] = {
        "mc_linear": MultipleChoiceLinearProbe(),
        "logistic": LogisticProbe(),
        "mass_mean": MassMeanProbe(),
        "ccs": CCSProbe(),
    }
    if kind not in probes:
        raise TruthprobeError(f"unknown probe {kind!r}; valid: {', '.join(PROBE_KINDS)}")
    return probes[kind]
