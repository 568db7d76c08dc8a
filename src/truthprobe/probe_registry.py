"""The probe families truthprobe fits, by name: the one list the command line, the run store
and the report follow.

A family is one module in `truthprobe.probe_families` and one `register` line here. The module
gives `candidates(preset)` (the probes a preset fits: one for `paper`, a grid for `validated`
where there is something to choose) and, where its fitted arrays are not a `LinearScorer`'s,
`rebuild(arrays)`. This table imports nothing (it sits below the configs, whose `--probes`
choices it gives); `truthprobe.probes.family` imports a family's module on first use.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    module: str
    """The module that implements it (imported when the family is first used)."""
    summary: str
    """One line for `--help` and the docs."""


FAMILIES: dict[str, Family] = {}


def register(name: str, summary: str, module: str | None = None) -> None:
    """Add a family (its module defaults to `truthprobe.probe_families.<name>`)."""
    if name in FAMILIES or "-" in name or "@" in name:
        raise ValueError(f"probe family {name!r}: taken, or not a plain name")
    FAMILIES[name] = Family(name, module or f"truthprobe.probe_families.{name}", summary)


register("mc_linear", "Hase et al.'s multiple-choice linear head (softmax over choices)")
register("logistic", "scikit-learn logistic regression on single choices")
register("mass_mean", "difference of the means of correct and incorrect choices")
register("ccs", "contrast-consistent search, without labels")
register("lda", "Fisher's linear discriminant (scikit-learn, shrinkage)")
register("lat", "PCA / LAT: first principal component of paired differences, signed by labels")
register("truth_polarity", "general truth and polarity directions (after Buerger et al. 2024)")
register("random", "a random direction: the floor every figure can show")
