"""What every part of the device simulator shares: its error, the PE
compute dtype, edge naming, route traces and the result of a run.

(Kept apart so the simulator's modules — routers, PE memory, kernel
execution, weight streaming — import it and never each other in a cycle.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from wsec.ir.errors import WsecError
from wsec.ir.types import DTYPES

from .format import Program, type_dtype, type_shape

COMPUTE_DTYPE = np.float32  # what a simulated PE computes in


class SimError(WsecError):
    """The binary cannot execute as configured (the message names where)."""


def edge_name(p: Program, ei: int) -> str:
    e = p.edges[ei]
    return f"edge #{ei} %{e.value} ({e.src} -> {', '.join(e.dsts)})"


@dataclass
class Trace:
    """Where one edge's wavelets go: the sinks reached and the route entries used.

    `sinks` maps a kernel name (or HOST) to the first PE where a lane of the
    value arrived; `entries` holds, per bundle of the edge, the indices into
    the program's route table of every entry its lanes pass through."""

    edge: int
    sinks: dict[str, tuple[int, int]] = field(default_factory=dict)
    entries: list[np.ndarray] = field(default_factory=list)

    @property
    def indices(self) -> np.ndarray:
        """Every route-table entry the edge's lanes use."""
        return (np.concatenate(self.entries) if self.entries
                else np.zeros(0, dtype=np.int64))


def value_array_type(p: Program, name: str) -> tuple[tuple[int, ...], np.dtype]:
    text = p.info["values"][name]
    return tuple(type_shape(text)), DTYPES[type_dtype(text)]


@dataclass
class KernelIO:
    """One kernel's delivered inputs, its outputs and, per output, the PE
    (linear offset py * uw + px of its unrotated rectangle, broadcastable to
    the output) that computed each element (absent: not known per PE)."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    owner: dict[str, np.ndarray]


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    traces: list[Trace]
    kernel_seconds: dict[str, float]
    kernel_stats: dict[str, dict[str, int]]
    kernel_io: dict[str, KernelIO] = field(default_factory=dict)  # simulate(keep=True)
