"""What a method is: anything that, given a task, training rows and a seed, scores test items.

Zero-shot, ICL, ICL+CoT, a probe at layer L, QLoRA, QLoRA+CoT: each is a `Method` whose
`run(context, train_rows, seed)` returns a `MethodOutput` (per-item probabilities over the
choices, or generations scored to correct / incorrect). The harness (`truthprobe.harness`) runs
methods over train_on x seed and stores every output in one per-item format; the report reads
only that store. Adding a method is one module with a factory plus one `register_method` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from truthprobe.choice_probs import ChoiceProbs
from truthprobe.configs import ModelConfig
from truthprobe.errors import TruthprobeError

if TYPE_CHECKING:
    from truthprobe.activations import ActivationCache
    from truthprobe.baselines.cot import Generations
    from truthprobe.methods.settings import MethodSettings
    from truthprobe.models import LoadedModel
    from truthprobe.probes import ProbeData
    from truthprobe.prompts import PromptTemplate
    from truthprobe.tasks import Task


@dataclass
class MethodOutput:
    """Per-item results of one (method, train_on, seed) on a task's test (and validation) items.

    `rows` index the task's items; `prediction` is a choice index (-1: no choice, e.g. a
    generation without an answer or a free-form item) and `prediction_text` what a generation
    answered; `probs` are per-choice probabilities (None for generations).
    """

    rows: np.ndarray
    correct: np.ndarray
    prediction: np.ndarray
    probs: np.ndarray | None = None
    prediction_text: list[str | None] | None = None
    probe: dict[str, np.ndarray] | None = None
    """A fitted probe's arrays (`probes.scorer_from_arrays` rebuilds it)."""
    info: dict[str, Any] = field(default_factory=dict)
    """JSON-ready extras (demonstrations dropped, training losses, ...)."""
    generations: list[dict] | None = None
    """Completions for inspection (stored beside the part as JSON lines)."""

    @classmethod
    def from_choice_probs(
        cls, rows: np.ndarray, probs: ChoiceProbs, answers: np.ndarray, **extra: Any
    ) -> MethodOutput:
        prediction = probs.predictions()
        return cls(
            rows=np.asarray(rows, np.int64),
            correct=prediction == np.asarray(answers),
            prediction=prediction,
            probs=probs.probs,
            **extra,
        )

    @classmethod
    def from_generations(
        cls, rows: np.ndarray, generations: Generations, choices: Sequence[tuple | None]
    ) -> MethodOutput:
        """Scored completions; an answer that names a choice also gives its index."""
        prediction = np.array(
            [
                _choice_index(text, options)
                for text, options in zip(generations.predicted, choices, strict=True)
            ],
            dtype=np.int64,
        )
        return cls(
            rows=np.asarray(rows, np.int64),
            correct=generations.correct().astype(bool),
            prediction=prediction,
            prediction_text=list(generations.predicted),
            generations=generations.to_rows(),
        )


def _choice_index(text: str | None, options: tuple | None) -> int:
    if text is None or not options:
        return -1
    lowered = [o.lower() for o in options]
    return lowered.index(text.lower()) if text.lower() in lowered else -1


class Models:
    """The run's model: its identity at once, its weights on first use, and quantised copies
    for QLoRA. A run whose caches hold every row it reads and whose methods read only caches
    (the sweep, the studies) never loads weights."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._loaded: dict[str, LoadedModel] = {}
        self._identity: LoadedModel | None = None

    @property
    def identity(self) -> LoadedModel:
        """The model without its weights (configuration, tokenizer and fingerprint, weights on
        the meta device; `models.load_planning`): all a cache's identity and a part's
        fingerprint need. The loaded model, where it is loaded already."""
        if self.config.quantization in self._loaded:
            return self._loaded[self.config.quantization]
        if self._identity is None:
            from truthprobe.models import load_planning

            self._identity = load_planning(self.config)
        return self._identity

    @property
    def base(self) -> LoadedModel:
        return self.quantized(self.config.quantization)

    def quantized(self, quantization: str | None) -> LoadedModel:
        """The model with `quantization` weights (the base model itself when they agree or
        `quantization` is None)."""
        quantization = quantization or self.config.quantization
        if quantization not in self._loaded:
            from truthprobe.models import load_model

            c = self.config
            self._loaded[quantization] = load_model(c.name, quantization, c.dtype, c.device)
        return self._loaded[quantization]

    def fingerprint(self, quantization: str | None) -> dict[str, str]:
        """The fingerprint of `quantized(quantization)`'s weights, without loading them: the
        base model's with its quantization replaced (name, revision and dtype are the run's
        for every copy)."""
        base = self.identity.fingerprint
        return replace(base, quantization=quantization or base.quantization).to_dict()


MID_LAST = -2
"""The `layer` of the paper's own probe features: the middle and the last hidden states,
concatenated (-1 stands for methods without a layer)."""


def mid_last(layers: Sequence[int]) -> tuple[int, int]:
    """The middle and last of a model's hidden states 0..n_layers (0 = embeddings), as the
    paper's code picks them: n_layers // 2 and n_layers."""
    last = max(layers)
    return last // 2, last


def answer_end_features(cache: ActivationCache, layer: int, rows: np.ndarray) -> np.ndarray:
    """What a probe at `layer` reads: the cache's answer-end states at that layer, or for
    `MID_LAST` the middle and last layers' states concatenated along the feature axis."""
    if layer != MID_LAST:
        return cache.answer_end(layer, rows)
    mid, last = mid_last(cache.layers)
    return np.concatenate([cache.answer_end(mid, rows), cache.answer_end(last, rows)], -1)


def layer_name(layer: int) -> str:
    """How a result's layer is printed: its index, `mid+last`, or `-` (no layer)."""
    return "mid+last" if layer == MID_LAST else (str(layer) if layer >= 0 else "-")


class TaskStates:
    """Cached hidden states and scores of a task's items (the last layer read is kept)."""

    def __init__(self, cache_path: Path, cache_rows: np.ndarray, task: Task) -> None:
        self.path = cache_path
        self.rows = cache_rows
        self.task = task
        self._layer: tuple[int, ProbeData] | None = None

    def probe_data(self, layer: int) -> ProbeData:
        """Answer-end states of every task item at `layer` (or `MID_LAST`), as `ProbeData`."""
        from truthprobe.activations import ActivationCache
        from truthprobe.probes import ProbeData

        if self._layer is None or self._layer[0] != layer:
            with ActivationCache(self.path) as cache:
                states = answer_end_features(cache, layer, self.rows)
                mask = cache.item("choice_mask")[self.rows]
            self._layer = (layer, ProbeData(self.task.ids, states, mask, self.task.answers))
        return self._layer[1]

    def scores(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A cached per-choice score (`choice_logprob`, `choice_chars`) and the choice mask."""
        from truthprobe.activations import ActivationCache

        with ActivationCache(self.path) as cache:
            return cache.score(name, self.rows), cache.item("choice_mask")[self.rows]


@dataclass
class MethodContext:
    """What a method may use: the task, the models, the task's cached states, the run folder."""

    task: Task
    models: Models
    states: TaskStates | None
    run_dir: Path
    progress: bool = True
    template: PromptTemplate | None = None
    """The prompt of the task's multiple-choice methods (its cache's); None for free-form."""
    scratch: dict[str, Any] = field(default_factory=dict)
    """Work methods share within the task (e.g. probe fits of every preset at a layer)."""

    @property
    def test(self) -> np.ndarray:
        return self.task.split.test

    @property
    def evaluated(self) -> np.ndarray:
        """Test rows, then validation rows (what cheap methods score)."""
        return np.concatenate([self.task.split.test, self.task.split.validation])


class Method:
    """Base of every method; subclasses set the attributes and implement `run`."""

    label: str
    """Unique name within a task, used for the stored part (`mc_linear@9`, `icl+cot`)."""
    family: str
    """What the report groups by (`mc_linear`, `icl+cot`); layers of one probe share one."""
    layer: int = -1
    supervised: bool = True
    """False: runs once (train_on `none`) as an unsupervised floor."""
    noisy_labels: bool = False
    """True: `run` can train on given (noisy) labels."""
    quantization: str | None = None
    """Weights the method runs on when not the run's model (`Models.quantized`): its parts'
    fingerprints and the table name them."""

    def n_train(self, n_train: int) -> int:
        """Training items drawn per (train_on, seed); `n_train` is the split's setting."""
        return n_train

    def settings(self) -> dict[str, Any]:
        """Everything that changes this method's results (part fingerprints include it)."""
        return {}

    def prepare(self, ctx: MethodContext, draws: list[tuple[np.ndarray, int]]) -> None:
        """Work cheaper done for all (train rows, seed) draws at once, before any `run`.

        Called with every supervised draw of the method whenever one of its parts is missing;
        `run` must give the same output with or without it.
        """

    def run(
        self,
        ctx: MethodContext,
        train: np.ndarray | None,
        seed: int,
        labels: np.ndarray | None = None,
    ) -> MethodOutput:
        """Score the evaluated items after training on `train` (rows of the task's items).

        `labels`: answers to train on instead of the records' (label-noise draws); only methods
        with `noisy_labels` set receive them.
        """
        raise NotImplementedError


#: Builds the methods a name stands for on a task (e.g. `probe` -> one per kind and layer).
MethodFactory = Callable[["Task", "MethodSettings", tuple[int, ...]], list[Method]]
METHODS: dict[str, MethodFactory] = {}


def register_method(name: str, factory: MethodFactory) -> None:
    """Make `name` usable in `--methods` (and by the harness)."""
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered")
    METHODS[name] = factory


BUILTIN = ("zero_shot", "probe", "icl", "qlora")


def _register_builtins() -> None:
    """Import the built-in method modules (each registers itself) on first use."""
    import importlib

    for name in BUILTIN:
        if name not in METHODS:
            importlib.import_module(f"truthprobe.methods.{name}")


def build_methods(
    names: Sequence[str], task: Task, settings: MethodSettings, layers: tuple[int, ...]
) -> list[Method]:
    """The methods `names` stand for on `task`; `layers` are the cached hidden-state layers."""
    _register_builtins()
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise TruthprobeError(f"unknown method {unknown[0]!r}; known: {', '.join(METHODS)}")
    methods = [m for name in names for m in METHODS[name](task, settings, layers)]
    labels = [m.label for m in methods]
    assert len(labels) == len(set(labels)), labels
    return methods
