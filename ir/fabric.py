"""The fabric API: the one read-only view of a Target that algorithms ask.

Why: sizing, placement, routing, phase scheduling, the emitter, reports,
`inspect` and the simulator all need the same device facts (which shapes
fit, a port's neighbour, where host data enters and leaves, which links
exist and what they carry). Derived in one place they cannot drift apart,
the way nextpnr's placer and router see the device only through its Arch
API. `Target` (ir/target.py) stays plain data; `Fabric` derives the facts.

Conventions (DESIGN.md section 1):
- the program grid has x from West (0) to East (width-1), y from South (0)
  to North (height-1);
- a router has five ports, N E S W and RAMP (its own core); a directed link
  is (x, y, port) leaving PE (x, y) through `port`;
- host inputs enter on the West edge: a PE (0, y) whose route receives from
  W; host outputs leave on the East edge: a PE (width-1, y) whose route
  sends to E. No other route points off the grid;
- a link moves one 32-bit wavelet per cycle, so a layout running at Δt
  cycles per sample can carry Δt wavelets per sample on every link.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .graph import PORTS
from .target import Target

# Direction ports (links to neighbouring routers), in the order of PORTS.
DIRS: tuple[str, ...] = ("N", "E", "S", "W")
RAMP = "RAMP"
STEP: dict[str, tuple[int, int]] = {"N": (0, 1), "E": (1, 0), "S": (0, -1), "W": (-1, 0)}
OPPOSITE: dict[str, str] = {"N": "S", "S": "N", "E": "W", "W": "E"}
PORT_BITS: dict[str, int] = {p: 1 << i for i, p in enumerate(PORTS)}  # N=1 E=2 S=4 W=8 RAMP=16
DIR_INDEX: dict[str, int] = {d: i for i, d in enumerate(DIRS)}

# Host I/O: the off-grid port a host input arrives on, and a host output leaves by.
HOST_IN_PORT = "W"
HOST_OUT_PORT = "E"

# Link planes of a load array (height, width, LINK_PLANES): one per direction
# port leaving a PE, then the RAMP into the core (data delivered to it) and
# the RAMP out of the core (data it injects).
LINK_PLANES: tuple[str, ...] = (*DIRS, "RAMP-in", "RAMP-out")
RAMP_IN, RAMP_OUT = 4, 5


def ports_of(mask: int) -> tuple[str, ...]:
    """The ports set in a port bit mask, in PORTS order."""
    return tuple(p for p in PORTS if mask & PORT_BITS[p])


def mask_of(ports: tuple[str, ...] | list[str]) -> int:
    """The bit mask of a set of ports."""
    m = 0
    for p in ports:
        m |= PORT_BITS[p]
    return m


@dataclass(frozen=True, eq=False)
class Fabric:
    """Device facts of one target: shapes, ports, host I/O, links, colors."""

    target: Target

    @staticmethod
    def of(target: Target) -> Fabric:
        return _fabric(target)

    # --- grid --------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.target.width

    @property
    def height(self) -> int:
        return self.target.height

    @property
    def pes(self) -> int:
        return self.target.pes

    @property
    def sram_bytes(self) -> int:
        return self.target.sram_bytes

    def on_grid(self, x: int, y: int) -> bool:
        return 0 <= x < self.target.width and 0 <= y < self.target.height

    # --- shapes --------------------------------------------------------------
    def fits(self, w: int, h: int) -> bool:
        """A w x h rectangle fits the grid in either orientation."""
        W, H = self.target.width, self.target.height
        return (w <= W and h <= H) or (h <= W and w <= H)

    def fits_array(self, w: np.ndarray, h: np.ndarray) -> np.ndarray:
        """`fits`, element-wise over arrays of widths and heights."""
        W, H = self.target.width, self.target.height
        return ((w <= W) & (h <= H)) | ((h <= W) & (w <= H))

    def legal_array(self, w: np.ndarray, h: np.ndarray, sram: np.ndarray) -> np.ndarray:
        """Shapes that fit the grid in some orientation with SRAM per PE in a PE."""
        return self.fits_array(w, h) & (sram <= self.target.sram_bytes)

    def needs_rotation(self, w: int, h: int) -> bool:
        """True when a w x h rectangle fits only rotated (as h x w)."""
        return not (w <= self.target.width and h <= self.target.height) and self.fits(w, h)

    def orientations(self, w: int, h: int) -> list[tuple[int, int, bool]]:
        """The (width, height, rotated) placements of a w x h rectangle that fit."""
        W, H = self.target.width, self.target.height
        out = [(w, h, False)] if w <= W and h <= H else []
        if w != h and h <= W and w <= H:
            out.append((h, w, True))
        return out

    # --- ports and links ---------------------------------------------------------
    @staticmethod
    def step(port: str) -> tuple[int, int]:
        return STEP[port]

    @staticmethod
    def opposite(port: str) -> str:
        return OPPOSITE[port]

    def neighbour(self, x: int, y: int, port: str) -> tuple[int, int] | None:
        """The PE a link (x, y, port) leads to; None when it leaves the grid."""
        dx, dy = STEP[port]
        nx, ny = x + dx, y + dy
        return (nx, ny) if self.on_grid(nx, ny) else None

    def link_capacity(self, cycles_per_sample: int) -> int:
        """Wavelets per sample one link (or RAMP) carries at that time: one per cycle."""
        return int(cycles_per_sample)

    def wavelets(self, nbytes: int | np.ndarray) -> int | np.ndarray:
        """Wavelets needed to move `nbytes` (rounded up)."""
        return -(-nbytes // self.target.wavelet_bytes)

    @property
    def usable_colors(self) -> int:
        """Router colors a layout may use (the rest are kept for host I/O)."""
        return self.target.colors - self.target.reserved_colors

    # --- host I/O ------------------------------------------------------------------
    @property
    def host_input_x(self) -> int:
        return 0

    @property
    def host_output_x(self) -> int:
        return self.target.width - 1

    def host_input_pe(self, y: int) -> tuple[int, int]:
        return (self.host_input_x, y)

    def host_output_pe(self, y: int) -> tuple[int, int]:
        return (self.host_output_x, y)

    def is_host_input(self, x: int, rx: tuple[str, ...] | list[str]) -> bool:
        """A route entry at column x receiving `rx` takes data from the host."""
        return x == self.host_input_x and HOST_IN_PORT in rx

    def is_host_output(self, x: int, tx: tuple[str, ...] | list[str]) -> bool:
        """A route entry at column x sending `tx` gives data to the host."""
        return x == self.host_output_x and HOST_OUT_PORT in tx

    def host_input_mask(self, x: np.ndarray, rx: np.ndarray) -> np.ndarray:
        """`is_host_input` over arrays of columns and rx bit masks."""
        return (x == self.host_input_x) & ((rx & PORT_BITS[HOST_IN_PORT]) != 0)

    def host_output_mask(self, x: np.ndarray, tx: np.ndarray) -> np.ndarray:
        """`is_host_output` over arrays of columns and tx bit masks."""
        return (x == self.host_output_x) & ((tx & PORT_BITS[HOST_OUT_PORT]) != 0)

    def off_grid(self, x: int, y: int, port: str) -> bool:
        """A direction port that leaves the grid: legal only as host I/O."""
        return port in STEP and self.neighbour(x, y, port) is None

    @property
    def host_io_bytes_per_cycle(self) -> int:
        """Bytes per cycle one West or East edge PE moves to or from the host."""
        return self.target.io_bytes_per_cycle_per_edge_pe

    def host_centre_x(self, output: bool) -> float:
        """Where host data sits for placed wirelength: x = 0 for inputs (the
        West edge), x = width for outputs (past the East edge)."""
        return float(self.target.width) if output else 0.0

    @property
    def edge_io_bytes_per_cycle(self) -> int:
        """Host I/O bandwidth of a whole edge (all its rows)."""
        return self.target.io_bytes_per_cycle_per_edge_pe * self.target.height

    @property
    def store_bytes_per_cycle(self) -> float:
        """The external weight store's link, per wafer clock cycle (each way)."""
        return self.target.store_bytes_per_second / self.target.clock_hz

    @property
    def weight_stream_bytes_per_cycle(self) -> float:
        """What a streamed weight (or gradient) moves per cycle: the store's
        link, unless the edge PEs' on-wafer I/O is narrower."""
        return min(self.store_bytes_per_cycle, float(self.edge_io_bytes_per_cycle))


@lru_cache(maxsize=64)
def _fabric(target: Target) -> Fabric:
    return Fabric(target)
