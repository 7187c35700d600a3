"""The activation area of a weight-streaming binary: where each value lives
between phases (META `activations`, docs/binary-format.md section 10).

Why: in stream mode activations stay in PE SRAM from the phase that
produces them to their last reader, spread evenly over every PE in a
reserved area at the top of each PE's SRAM (the kernels' SRAM region
"activations"). The schedule places them there first-fit
(wsec.passes.schedule_phases.place_activations) and the binary records each
span: value, first and last phase (the number of phases for "to the end"),
offset and bytes per PE. `check_activations` is the loader's check that the
record fits the area and the values (no two spans alive in the same phase
share a byte); `Residency` is how the simulator keeps a value only where
and while its span says (sim_weight_stream): a phase reads an input only
if its span holds it then, and writing a span's value evicts every value
whose bytes it overlaps, so a wrong offset or a span ending too early is a
SimError at the phase that reads the lost value, naming what overwrote it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from wsec.ir.types import DTYPES

from .format import Program, type_dtype, type_shape
from .sim_base import SimError


class ActivationError(ValueError):
    """META `activations` does not fit the binary (the loader's BinaryError)."""


@dataclass(frozen=True)
class Span:
    """One value's room in the activation area: bytes [offset, offset +
    size) of every PE, from phase `first` to phase `last` (inclusive)."""

    value: str
    first: int
    last: int
    offset: int
    size: int

    def overlaps(self, o: Span) -> bool:
        return self.offset < o.offset + o.size and o.offset < self.offset + self.size

    def where(self) -> str:
        return f"bytes [{self.offset}, {self.offset + self.size}) of every PE's activation area"


def spans(p: Program) -> list[Span]:
    """META `activations` as spans (the loader checked them)."""
    return [_span(r) for r in p.info.get("activations", [])]


def _span(r: dict) -> Span:
    return Span(str(r["value"]), int(r["first"]), int(r["last"]), int(r["offset"]),
                int(r["bytes"]))


def area_bytes(p: Program) -> int:
    """The activation area's bytes per PE: the SRAM region of that name
    the phases reserve at the top of every PE's SRAM; 0 without."""
    names = np.array([p.strings[int(n)] == "activations" for n in p.regions["name"]], bool)
    return int(p.regions["size"][names].max()) if names.any() else 0


def _check_phase_regions(p: Program, area: int) -> None:
    """Every phase's kernel reserves the area at the top of its PEs' SRAM
    and keeps its other regions (code, stream tiles, buffers) below it."""
    top = p.target.sram_bytes
    for ph in p.info.get("phases", []):
        ki = int(ph["kernel"])
        regs = p.kernel_regions(ki)
        act = [r for r in regs if r.name == "activations"]
        if area and (len(act) != 1 or (act[0].offset, act[0].size) != (top - area, area)):
            raise ActivationError(f"phase kernel '{p.kernels[ki].name}' does not reserve the "
                                  f"activation area (bytes [{top - area}, {top}) of its PEs' "
                                  f"SRAM) that the other phases do")
        over = [r for r in regs if r.name != "activations" and r.offset + r.size > top - area]
        if over:
            r = over[0]
            raise ActivationError(f"phase kernel '{p.kernels[ki].name}': its SRAM region "
                                  f"'{r.name}' (bytes [{r.offset}, {r.offset + r.size})) "
                                  f"reaches into the activation area (from byte {top - area})")


def check_activations(p: Program) -> None:
    """Every span names a value, lies within the phases and the activation
    area, holds its value's share of the wafer, and shares no byte with a
    span alive in one of its phases (raises ActivationError)."""
    recs = p.info.get("activations")
    if not isinstance(recs, list):
        raise ActivationError("a stream-mode binary needs a META 'activations' list (where "
                              "each value lives between phases)")
    end = len(p.info.get("phases", []))
    area = area_bytes(p)
    _check_phase_regions(p, area)
    batch = int(p.info.get("micro_batch", 1) or 1)
    out = []
    for i, r in enumerate(recs):
        try:
            s = _span(r)
        except (KeyError, TypeError, ValueError):
            raise ActivationError(f"META activations[{i}] is not a record of value, first, "
                                  f"last, offset and bytes") from None
        ty = p.info["values"].get(s.value)
        if ty is None:
            raise ActivationError(f"META activations[{i}] places %{s.value}, which is no value "
                                  f"of the binary")
        if not 0 <= s.first <= s.last <= end:
            raise ActivationError(f"%{s.value} lives from phase {s.first} to {s.last}, outside "
                                  f"the {end} phases")
        if s.offset < 0 or s.offset + s.size > area:
            raise ActivationError(f"%{s.value} takes {s.where()}, outside the {area} B the "
                                  f"phases reserve for activations")
        numel = int(np.prod(type_shape(ty), dtype=np.int64))
        need = -(-batch * numel * DTYPES[type_dtype(ty)].itemsize // p.target.pes)
        if s.size < need:
            raise ActivationError(f"%{s.value} ({ty}) gets {s.size} B per PE, but {batch} "
                                  f"sample{'s' if batch > 1 else ''} of it spread over the "
                                  f"{p.target.pes} PEs need {need} B")
        out.append(s)
    _check_disjoint(out)


def _check_disjoint(ss: list[Span]) -> None:
    """No two spans alive in a common phase share a byte (a sweep by first
    phase: only the spans still alive are compared)."""
    alive: list[Span] = []
    for s in sorted(ss, key=lambda s: (s.first, s.offset)):
        alive = [a for a in alive if a.last >= s.first]
        for a in alive:
            if a.overlaps(s):
                raise ActivationError(
                    f"%{a.value} (phases {a.first}-{a.last}) and %{s.value} (phases "
                    f"{s.first}-{s.last}) both take bytes [{max(a.offset, s.offset)}, "
                    f"{min(a.offset + a.size, s.offset + s.size)}) of every PE's activation "
                    f"area in phase {s.first}")
        alive.append(s)


class Residency:
    """Which values the activation area holds as the phases run: a value is
    resident from the phase whose span places it until its span ends or a
    later span's bytes overlap it."""

    def __init__(self, p: Program) -> None:
        self._by_start: dict[tuple[str, int], Span] = {(s.value, s.first): s for s in spans(p)}
        self.resident: dict[str, Span] = {}
        self._lost: dict[str, str] = {}  # value -> why it is no longer resident

    def place(self, value: str, phase: int, by: str) -> bool:
        """Phase `phase` (`by`: who, for messages) leaves `value` in the area
        where its span starting then says; False when no span starts then (the
        value does not stay on the wafer). Evicts what those bytes held."""
        s = self._by_start.get((value, phase))
        if s is None:
            self.resident.pop(value, None)
            self._lost[value] = f"{by} leaves it nowhere in the activation area (no span " \
                                f"of META activations starts there)"
            return False
        for other, o in list(self.resident.items()):
            if o.last < phase:  # its span is over: its room is free
                del self.resident[other]
                self._lost[other] = f"its span ends at phase {o.last}"
            elif other != value and o.overlaps(s):
                del self.resident[other]
                self._lost[other] = (f"{by} wrote %{value} over it ({s.where()}, where "
                                     f"%{other} lived for phases {o.first}-{o.last})")
        self.resident[value] = s
        return True

    def read(self, value: str, phase: int, who: str) -> None:
        """Phase `phase` (`who`) reads `value` from the area: a SimError
        unless a span holds it then."""
        s = self.resident.get(value)
        if s is not None and s.last >= phase:
            return
        why = self._lost.get(value, "no span of META activations holds it")
        if s is not None:
            why = f"its span ends at phase {s.last}"
        raise SimError(f"{who} reads %{value} from the activation area, but it is not there: "
                       f"{why}")

    def lost(self, value: str) -> str | None:
        """Why `value` left the area, if it was ever placed."""
        return self._lost.get(value)

    def drop(self, value: str, why: str) -> None:
        """The schedule frees `value` (a training phase's `free` list)."""
        if self.resident.pop(value, None) is not None:
            self._lost[value] = why
