"""The weighted layout objective: what a placement that trades bottleneck
time against wirelength minimises, and what the ISPD scorer reports.

Why one definition: the ISPD 2020 contest scores a layout as

    wdeltat x Δt + wlength x wirelength + wadapter x adapter

with the weights in each kernel graph's header. The placer (which picks the
bottleneck time and the layout for these weights), the scorer and the
benchmark tables must weigh the terms identically, so they all ask this
module.

The adapter term is a seam: the contest charges connections whose two ends
are laid out differently, but never published how, so no layout metric
computes it. `Objective` carries its weight and `value` takes the adapter
cost as an argument (0 unless a caller has one), so a definition can be
added later without touching the callers that optimise the other terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Objective:
    """Weights of the layout objective (all >= 0). wlength = 0 means the
    bottleneck time first and wirelength only to break ties."""

    wdeltat: float = 1.0
    wlength: float = 0.0
    wadapter: float = 0.0

    def __post_init__(self) -> None:
        for name in ("wdeltat", "wlength", "wadapter"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and v == v and v >= 0):
                raise ValueError(f"objective weight {name}={v!r} must be a number >= 0")

    @staticmethod
    def of(attrs: Mapping[str, Any]) -> Objective:
        """The weights a module carries (a kernel graph's header: wdeltat,
        wlength, wadapter); absent ones take the contest's defaults of 1, 1, 0."""
        return Objective(float(attrs.get("wdeltat", 1)), float(attrs.get("wlength", 1)),
                         float(attrs.get("wadapter", 0)))

    @property
    def trades(self) -> bool:
        """Whether wirelength is worth bottleneck time (else Δt comes first)."""
        return self.wlength > 0

    def value(self, delta_t: float, wirelength: float, adapter: float = 0.0) -> float:
        """The weighted objective of a layout (adapter: see the module docstring)."""
        return (self.wdeltat * float(delta_t) + self.wlength * float(wirelength)
                + self.wadapter * float(adapter))
