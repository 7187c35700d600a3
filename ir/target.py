"""Hardware targets as pure data (DESIGN.md section 1).

A target fixes the program grid, SRAM per PE, router colors, SIMD width and
clock. `--grid WxH` derives a custom-sized variant of a named target for
tests and small experiments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .errors import UsageError
from .limits import grid_problem


@dataclass(frozen=True)
class Target:
    name: str
    width: int  # program grid, PEs along x (West -> East)
    height: int  # program grid, PEs along y (South -> North)
    sram_bytes: int  # SRAM per PE
    colors: int  # router colors (virtual channels) in total
    reserved_colors: int  # colors kept for host I/O / the runtime
    simd: int  # fp16 FMAC lanes per PE per cycle
    clock_hz: float
    wavelet_bytes: int = 4  # one wavelet (32 bits) per link per cycle
    io_bytes_per_cycle_per_edge_pe: int = 4  # host I/O on West/East edge rows
    dtype: str = "f16"  # element type weights and activations take on the PE
    simd_f32: int = 1  # fp32 FMAC lanes per PE per cycle (assumed: a quarter of fp16's)
    # the external weight store's link (weight streaming), each way: a CS-2's is
    # publicly 1.2 Tb/s; the on-wafer edge I/O above is ~29x wider
    store_bytes_per_second: float = 150e9

    @property
    def pes(self) -> int:
        return self.width * self.height

    @property
    def lanes(self) -> int:
        """Multiply-accumulates per PE per cycle in the device dtype."""
        return self.simd if self.dtype == "f16" else self.simd_f32

    def with_grid(self, width: int, height: int) -> Target:
        return replace(self, name=self.name, width=width, height=height)

    def with_dtype(self, dtype: str) -> Target:
        if dtype not in DEVICE_DTYPES:
            raise UsageError(f"unsupported device dtype '{dtype}' (known: "
                             f"{', '.join(DEVICE_DTYPES)})")
        return replace(self, dtype=dtype)

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


KiB = 1024

# Element types a PE computes in: fp16 (native SIMD) or fp32 (the precision
# of most exported models; what `--dtype auto` picks for an fp32 model).
DEVICE_DTYPES = ("f16", "f32")

TARGETS: dict[str, Target] = {
    "wse2": Target("wse2", 750, 994, 48 * KiB, 24, 3, 4, 1.1e9, simd_f32=1),
    "wse3": Target("wse3", 755, 1174, 48 * KiB, 24, 3, 8, 1.1e9, simd_f32=2),
    "cs1": Target("cs1", 633, 633, 48 * KiB, 24, 3, 1, 1.0e9, simd_f32=1),
}


def parse_grid(text: str) -> tuple[int, int]:
    """Parse '64x64' (W x H) into (64, 64); raise ValueError with a hint."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ValueError(f"bad grid '{text}': expected WIDTHxHEIGHT, e.g. 64x64")
    bad = grid_problem(int(m.group(1)), int(m.group(2)))
    if bad:
        raise ValueError(f"bad grid '{text}': {bad}")
    return int(m.group(1)), int(m.group(2))


def get_target(name: str, grid: tuple[int, int] | None = None,
               dtype: str | None = None) -> Target:
    """The named target, optionally resized to a custom grid and computing in
    another device dtype."""
    if name not in TARGETS:
        import difflib

        near = difflib.get_close_matches(name, list(TARGETS), n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise UsageError(f"unknown target '{name}' ({hint}known: {', '.join(sorted(TARGETS))})")
    t = TARGETS[name]
    t = t.with_grid(*grid) if grid else t
    return t.with_dtype(dtype) if dtype else t


def module_target(attrs: dict[str, object]) -> Target:
    """The Target a module's attributes describe (target name, grid, dtype)."""
    name = str(attrs.get("target", "wse2"))
    grid = attrs.get("grid")
    dtype = attrs.get("dtype")
    return get_target(name, (int(grid[0]), int(grid[1])) if grid else None,  # type: ignore[index]
                      str(dtype) if dtype else None)
