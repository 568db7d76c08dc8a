"""Probes on cached hidden states: one method per (probe kind, preset, layer).

Each part fits the probe on the training rows' answer-end states and scores the test and the
easy validation items (validation accuracy chooses the reported layer); the fitted probe's
arrays (direction, bias, standardisation) are stored with the part.

Presets (`truthprobe.probes.PRESETS`): `validated` fits a grid of settings and keeps, per draw,
the one that does best on the easy validation items (never on test items); `paper` keeps Hase
et al.'s fixed settings (family `<kind>-paper`). All candidates of a kind, for every draw of a
layer, are fitted together in one batched program (`Method.prepare`), so both presets and the
whole grid cost about what one fit per draw did in a Python loop. A draw's result does not
depend on which other draws ran with it, nor on whether the paper preset runs beside the
validated one (whose grid holds the paper's setting).
"""

from __future__ import annotations

import logging

import numpy as np

from truthprobe.choice_probs import COLLAPSED_MARGIN
from truthprobe.methods.base import (
    MID_LAST,
    Method,
    MethodContext,
    MethodOutput,
    layer_name,
    register_method,
)
from truthprobe.probes import (
    PRESETS,
    FittedProbe,
    LinearScorer,
    Probe,
    ProbeData,
    choose,
    fit_many,
    preset_probes,
)

log = logging.getLogger(__name__)


def _draw_key(
    train: np.ndarray, seed: int, labels: np.ndarray | None = None
) -> tuple[int, bytes, bytes]:
    noisy = b"" if labels is None else np.asarray(labels, np.int64).tobytes()
    return seed, np.asarray(train, np.int64).tobytes(), noisy


class ProbeAtLayer(Method):
    noisy_labels = True

    def __init__(
        self, kind: str, layer: int, preset: str = "validated", presets: tuple[str, ...] = ()
    ) -> None:
        """`presets`: every preset of this run; their candidates are fitted together."""
        self.kind, self.layer, self.preset = kind, layer, preset
        self.family = kind if preset == "validated" else f"{kind}-paper"
        self.label = f"{self.family}@{layer_name(layer)}"
        self.candidates = preset_probes(kind, preset)
        pool: list[Probe] = []
        for name in [n for n in PRESETS if n in (preset, *presets)]:  # one order for all
            pool += [p for p in preset_probes(kind, name) if p not in pool]
        # validated's grid holds the paper's setting, so a part's pool (and so its exact
        # numbers, which batched products round differently) is the same whether or not the
        # paper preset runs beside it; a paper-only run fits only the paper's setting
        self.pool = tuple(pool)

    def settings(self) -> dict:
        return {
            "kind": self.kind,
            "layer": self.layer,
            "preset": self.preset,
            "candidates": [repr(p) for p in self.candidates],
            "fitted_with": [repr(p) for p in self.pool],
        }

    def _fits(self, ctx: MethodContext) -> dict:
        """Fitted pools by draw for this (kind, layer), and the layer's evaluated items; a task
        keeps only the latest layer's."""
        key = ("probe", self.kind, self.layer, self.pool)
        if ctx.scratch.get("probe_key") != key:
            ctx.scratch.update(probe_key=key, probe_fits={})
        return ctx.scratch["probe_fits"]

    def prepare(self, ctx: MethodContext, draws: list[tuple[np.ndarray, int]]) -> None:
        assert ctx.states is not None
        fits = self._fits(ctx)
        todo = [(rows, seed) for rows, seed in draws if _draw_key(rows, seed) not in fits]
        if not todo:
            return
        data = ctx.states.probe_data(self.layer)
        fitted = fit_many(self.pool, [data.take(rows) for rows, _ in todo], [s for _, s in todo])
        for (rows, seed), row in zip(todo, fitted, strict=True):
            fits[_draw_key(rows, seed)] = row

    def run(
        self,
        ctx: MethodContext,
        train: np.ndarray | None,
        seed: int,
        labels: np.ndarray | None = None,
    ) -> MethodOutput:
        assert ctx.states is not None and train is not None
        fits = self._fits(ctx)
        if labels is not None:  # a noisy draw: fitted on its own labels
            data = ctx.states.probe_data(self.layer).take(train)
            noisy = ProbeData(data.ids, data.states, data.mask, np.asarray(labels))
            fits[_draw_key(train, seed, labels)] = fit_many(self.pool, [noisy], [seed])[0]
        elif _draw_key(train, seed) not in fits:
            self.prepare(ctx, [(train, seed)])
        pooled = fits[_draw_key(train, seed, labels)]
        candidates: list[FittedProbe] = [pooled[self.pool.index(p)] for p in self.candidates]
        rows = ctx.evaluated
        if "evaluated" not in fits:  # the same items for every part at this layer
            data = ctx.states.probe_data(self.layer)
            fits["evaluated"] = data.take(rows)
            fits["validation"] = data.take(ctx.task.split.validation)
        evaluated, validation = fits["evaluated"], fits["validation"]
        z = z_validation = None
        shared = all(isinstance(c, LinearScorer) for c in candidates) and (
            len({id(c.standardizer) for c in candidates}) == 1  # type: ignore[union-attr]
        )
        if shared:
            # a draw's candidates share its standardizer: z-score the items once for the
            # choice and for both presets' predictions (validation rows close `evaluated`)
            key = ("z", *_draw_key(train, seed, labels))
            if key not in fits:
                fits[key] = candidates[0].standardizer(evaluated.states)  # type: ignore[union-attr]
            z = fits[key]
            z_validation = z[len(rows) - len(validation) :]
        best, accuracies = (0, [])
        if len(candidates) > 1:
            best, accuracies = choose(candidates, validation, z_validation)
        fitted = candidates[best]
        probs = fitted.predict(evaluated, z) if z is not None else fitted.predict(evaluated)
        margin = probs.uniform_margin()
        arrays = fitted.arrays()
        if margin < COLLAPSED_MARGIN and self.family not in ctx.scratch.setdefault("warned", set()):
            ctx.scratch["warned"].add(self.family)
            log.warning(
                "%s %s (seed %d): probe collapsed, probabilities near uniform (mean max - 1/k "
                "= %.4f < %.2f, |w| = %.2g); its argmax may still rank choices, its "
                "probabilities carry nothing; the report counts every collapsed part",
                ctx.task.name, self.label, seed, margin, COLLAPSED_MARGIN,
                float(np.linalg.norm(arrays["probe_weight"])),
            )  # fmt: skip
        info = {
            "setting": _setting(self.candidates[best]),
            "weight_norm": float(np.linalg.norm(arrays["probe_weight"])),
            "uniform_margin": margin,
            "collapsed": margin < COLLAPSED_MARGIN,
        }
        if accuracies:
            info["validation_by_setting"] = {
                _setting(p): a for p, a in zip(self.candidates, accuracies, strict=True)
            }
        return MethodOutput.from_choice_probs(
            rows, probs, evaluated.answer_index, probe=arrays, info=info
        )


def _setting(probe: Probe) -> str:
    """The chosen values of a candidate, as recorded in results (`l2=0.01 steps=50`; `fixed`
    for a family with nothing to choose)."""
    setting = getattr(probe, "setting", None)
    return setting() if callable(setting) else "fixed"


def build(task, settings, layers) -> list[Method]:
    if task.free_form:
        return []
    chosen = settings.probe.layers if settings.probe.layers is not None else layers
    missing = [k for k in chosen if k not in layers]
    if missing:
        from truthprobe.errors import TruthprobeError

        raise TruthprobeError(
            f"--layers {missing[0]} is out of range: this model has hidden states "
            f"{layers[0]}..{layers[-1]} (0 = embeddings)"
        )
    if settings.probe.mid_last:
        if tuple(layers) == tuple(range(len(layers))):  # the cache holds every layer
            chosen = (*chosen, MID_LAST)
        else:
            log.info("mid+last features skipped: the cache holds only layers %s", list(layers))
    methods: list[Method] = []
    for layer in chosen:
        for kind in settings.probe.probes:
            presets = settings.probe.probe_preset
            if len(preset_probes(kind, "validated")) == 1:
                presets = ("validated",)  # nothing to choose: both presets are one probe
            methods += [ProbeAtLayer(kind, layer, p, presets) for p in presets]
    return methods


register_method("probe", build)
