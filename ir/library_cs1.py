"""The `cs1` kernel library: the ISPD 2020 contest's cost model (Cerebras CS-1).

Why here: the contest is the public benchmark of exactly wsec's sizing +
placement problem, so its three kernel kinds are ordinary library kinds and
the normal size/place passes, the scorer and the lower bound all ask them.

A conv (formal arguments H W R S C K T, knobs h w c k) is a rectangle

    height = h*w*(c+1)      width = 3*k
    time   = ceil(H/h)*ceil(W/w)*ceil(C/c)*ceil(K/k)*R*S/T/T
    memory = (C/c)*(K/k)*R*S + ((W+S-1)/w)*((H+R-1)/h)*(K/k)   words per PE

A block (dblock: 3 convs, cblock: 4 convs) shares h, w and has its own
c_i, k_i: height = max, width = sum, time = max, memory = max of its convs.

Units: `cycles` is the contest time rounded up to an integer (times are
quarter-integers when T=2); `sram` is bytes, 2 per 16-bit word, so a kernel
is memory-legal iff sram <= 2*memlimit words (dims["memlimit"], from the
kgraph header; target.sram_bytes when absent). All limits are checked in
exact integer arithmetic.

`choices` is the exact Pareto frontier (area vs time) over the knob space
h in distinct-ceil values of H, w likewise, c_i <= C_i, k_i <= K_i: for a
fixed (h, w) and height cap m, each conv independently takes c_i =
min(m, C_i) (free: the height is set by m) and the smallest k_i meeting a
time cap and the memory limit, in closed form. Sweeping the caps over the
convs' own distinct times covers every frontier point without enumerating
the product of 8-10 knobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from math import lcm

import numpy as np

from .fabric import Fabric
from .kernel_kind import Choice, Dims, KernelKind, Knobs
from .target import Target

WORD_BYTES = 2  # the contest's memory unit is a 16-bit word; memlimit 24576 words = 48 KiB

# one conv of a kernel: (H, W, R, S, C, K, T)
Conv = tuple[int, int, int, int, int, int, int]


def _cdiv(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    return -(-np.asarray(a, dtype=np.int64) // np.asarray(b, dtype=np.int64))


@cache
def distinct_ceil_values(x: int) -> np.ndarray:
    """The knob values v in 1..x at which ceil(x/v) changes: the smallest v
    for each distinct quotient (larger v with the same quotient only cost area)."""
    v = np.arange(1, x + 1, dtype=np.int64)
    q = np.unique(_cdiv(x, v))
    out = np.unique(_cdiv(x, q))
    out.flags.writeable = False
    return out


def mem_limit_bytes(dims: Dims, target: Target) -> int:
    """The per-PE memory budget in bytes: the kgraph's memlimit (words) if given."""
    if "memlimit" in dims:
        return WORD_BYTES * int(dims["memlimit"])
    return target.sram_bytes


class ConvGroupKind(KernelKind):
    """Common cost model of conv / dblock / cblock: a row of convs sharing h, w."""

    n_convs = 1

    def convs(self, dims: Dims) -> list[Conv]:
        raise NotImplementedError

    def formal_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def knob_limits(self, dims: Dims) -> dict[str, int]:
        """Largest legal value of every knob (knobs are 1..limit)."""
        cv = self.convs(dims)
        lim = {"h": int(dims["H"]), "w": int(dims["W"])}
        cs, ks = self._ck_names()
        lim.update({cs[i]: conv[4] for i, conv in enumerate(cv)})
        lim.update({ks[i]: conv[5] for i, conv in enumerate(cv)})
        return lim

    def _ck_names(self) -> tuple[list[str], list[str]]:
        if self.n_convs == 1:
            return ["c"], ["k"]
        n = self.n_convs
        return [f"c{i + 1}" for i in range(n)], [f"k{i + 1}" for i in range(n)]

    def _den(self, dims: Dims) -> int:
        """Common denominator of the convs' times (T*T of every conv)."""
        return lcm(*[t * t for *_, t in self.convs(dims)])

    # --- exact vectorised cost model ---------------------------------------
    def _conv_terms(self, cv: Conv, den: int, h: np.ndarray, w: np.ndarray, c: np.ndarray,
                    k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per conv: time numerator (time*den), memory numerator and denominator
        (memory words = num/den), all exact int64."""
        H, W, R, S, C, K, T = cv
        tnum = (_cdiv(H, h) * _cdiv(W, w) * _cdiv(C, c) * _cdiv(K, k) * (R * S * (den // (T * T))))
        # memory = K*(C*R*S*w*h + (W+S-1)*(H+R-1)*c) / (k*c*w*h)
        mnum = K * (C * R * S * w * h + (W + S - 1) * (H + R - 1) * c)
        mden = k * c * w * h
        return tnum, mnum, mden

    def evaluate(self, dims: Dims, knobs: dict[str, np.ndarray],
                 target: Target) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        names = ["h", "w", *self._ck_names()[0], *self._ck_names()[1]]
        arrs = np.broadcast_arrays(*[np.asarray(knobs[n], dtype=np.int64) for n in names])
        kn = dict(zip(names, arrs, strict=True))
        cs, ks = self._ck_names()
        den = self._den(dims)
        width = np.zeros(arrs[0].shape, dtype=np.int64)
        height = np.zeros_like(width)
        tmax = np.zeros_like(width)
        smax = np.zeros_like(width)
        h, w = kn["h"], kn["w"]
        for i, cv in enumerate(self.convs(dims)):
            c, k = kn[cs[i]], kn[ks[i]]
            tnum, mnum, mden = self._conv_terms(cv, den, h, w, c, k)
            width += 3 * k
            height = np.maximum(height, h * w * (c + 1))
            tmax = np.maximum(tmax, tnum)
            smax = np.maximum(smax, _cdiv(WORD_BYTES * mnum, mden))
        return width, height, _cdiv(tmax, den), smax

    def _scalar(self, dims: Dims, knobs: Knobs) -> tuple[int, int, int, int]:
        self.check_knobs(dims, knobs)
        out = self.evaluate(dims, {k: np.int64(v) for k, v in knobs.items()}, None)  # type: ignore[arg-type]
        return tuple(int(o) for o in out)  # type: ignore[return-value]

    def shape(self, dims: Dims, knobs: Knobs, target: Target) -> tuple[int, int]:
        w, h, _, _ = self._scalar(dims, knobs)
        return w, h

    def cycles(self, dims: Dims, knobs: Knobs, target: Target) -> int:
        return self._scalar(dims, knobs)[2]

    def sram(self, dims: Dims, knobs: Knobs, target: Target) -> int:
        return self._scalar(dims, knobs)[3]

    def time(self, dims: Dims, knobs: Knobs) -> float:
        """The contest's exact (unrounded) time; quarter-integers when T=2."""
        self.check_knobs(dims, knobs)
        cs, ks = self._ck_names()
        den = self._den(dims)
        t = max(int(self._conv_terms(cv, den, np.int64(knobs["h"]), np.int64(knobs["w"]),
                                     np.int64(knobs[cs[i]]), np.int64(knobs[ks[i]]))[0])
                for i, cv in enumerate(self.convs(dims)))
        return t / den

    def memory_words(self, dims: Dims, knobs: Knobs) -> float:
        """The contest's memory per PE in words (real division)."""
        self.check_knobs(dims, knobs)
        cs, ks = self._ck_names()
        best = 0.0
        for i, cv in enumerate(self.convs(dims)):
            _, mnum, mden = self._conv_terms(cv, 1, np.int64(knobs["h"]), np.int64(knobs["w"]),
                                             np.int64(knobs[cs[i]]), np.int64(knobs[ks[i]]))
            best = max(best, int(mnum) / int(mden))
        return best

    def memory_ok(self, dims: Dims, knobs: Knobs, target: Target) -> bool:
        return self.sram(dims, knobs, target) <= mem_limit_bytes(dims, target)

    def knob_errors(self, dims: Dims, knobs: Knobs) -> list[str]:
        """Plain-words reasons why knobs are not legal for these dims ([] if legal)."""
        errs = []
        for name, lim in self.knob_limits(dims).items():
            v = knobs.get(name)
            if v is None:
                errs.append(f"knob {name} is missing")
            elif not isinstance(v, int | np.integer) or v < 1 or v > lim:
                errs.append(f"knob {name}={v} is outside 1..{lim}")
        extra = sorted(set(knobs) - set(self.knob_limits(dims)))
        if extra:
            errs.append(f"unknown knob(s) {', '.join(extra)}")
        return errs

    def check_knobs(self, dims: Dims, knobs: Knobs) -> None:
        errs = self.knob_errors(dims, knobs)
        if errs:
            raise ValueError(f"{self.name} {self.formal_str(dims)}: {'; '.join(errs)}")

    def formal_str(self, dims: Dims) -> str:
        return "(" + " ".join(f"{n}={dims[n]}" for n in self.formal_names()) + ")"

    # --- search space -----------------------------------------------------
    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        return {n: distinct_ceil_values(lim) for n, lim in self.knob_limits(dims).items()}

    def choices(self, dims: Dims, target: Target) -> list[Choice]:
        return list(_frontier(self, tuple(sorted(dims.items())), target))

    def shapes_for_time(self, dims: Dims, target: Target, t: int) -> list[Choice]:
        """Every shape running in <= t cycles that no other such shape beats in
        both width and height (width ascending, height descending): the
        alternatives a placer may pick from to pack kernels tightly."""
        a = _shapes_for_time(self, dims, target, t)
        names = list(self.knob_names)
        cols = {"h": a["h_knob"], "w": a["w_knob"], **{n: a[n] for n in names[2:]}}
        return [Choice(tuple((n, int(cols[n][i])) for n in names), int(a["w"][i]),
                       int(a["h"][i]), int(a["cycles"][i]), int(a["sram"][i]))
                for i in range(a["w"].size)]

    def frontier_arrays(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        """The frontier as arrays (w, h, cycles, sram and one array per knob)."""
        return _frontier_arrays(self, dims, target)


@dataclass(frozen=True)
class _Rows:
    """Every (h, w, m) knob row whose height fits the grid, with per-conv
    terms: c_i, the time numerator without ceil(K/k) (`base`), the smallest
    memory-legal k (`kmem`) and the memory numerator/denominator."""

    h: np.ndarray
    w: np.ndarray
    m: np.ndarray
    c: list[np.ndarray]
    base: list[np.ndarray]
    kmem: list[np.ndarray]
    num: list[np.ndarray]
    dm: list[np.ndarray]


@lru_cache(maxsize=1024)
def _rows_cached(kind: ConvGroupKind, dims_key: tuple[tuple[str, int], ...],
                 target: Target) -> _Rows:
    dims = dict(dims_key)
    cv = kind.convs(dims)
    den = kind._den(dims)
    limit = mem_limit_bytes(dims, target)
    hs = distinct_ceil_values(int(dims["H"]))
    ws = distinct_ceil_values(int(dims["W"]))
    ms = np.unique(np.concatenate([distinct_ceil_values(c[4]) for c in cv]))
    # rows: every (h, w, m) whose height fits the grid in some rotation
    h, w, m = (a.reshape(-1) for a in np.meshgrid(hs, ws, ms, indexing="ij"))
    keep_row = h * w * (m + 1) <= max(target.width, target.height)
    if all(cn[0] == cn[1] and cn[2] == cn[3] for cn in cv):
        keep_row &= h <= w  # square problem: (h, w) and (w, h) cost the same
    c = [np.minimum(m, conv[4]) for conv in cv]
    base, kmem, num, dm = [], [], [], []  # per conv, per row
    for i, (H, W, R, S, C, K, T) in enumerate(cv):
        base.append(_cdiv(H, h) * _cdiv(W, w) * _cdiv(C, c[i]) * (R * S * (den // (T * T))))
        # memory words = K*num/(k*dm) <= limit/WORD_BYTES  <=>  k >= WB*K*num/(dm*limit)
        num.append(C * R * S * w * h + (W + S - 1) * (H + R - 1) * c[i])
        dm.append(c[i] * w * h)
        kmem.append(np.maximum(_cdiv(WORD_BYTES * K * num[i], dm[i] * limit), 1))
        keep_row &= kmem[i] <= K
    r0 = np.nonzero(keep_row)[0]
    return _Rows(h[r0], w[r0], m[r0], *([a[r0] for a in lst] for lst in (c, base, kmem, num, dm)))


def _rows(kind: ConvGroupKind, dims: Dims, target: Target) -> _Rows:
    return _rows_cached(kind, tuple(sorted(dims.items())), target)


def _shapes_for_time(kind: ConvGroupKind, dims: Dims, target: Target,
                     t: int) -> dict[str, np.ndarray]:
    """Every (width, height) staircase point meeting `t` cycles: per row the
    smallest k_i meeting the time and memory, then the shapes no other
    shape beats in both width and height (width ascending)."""
    cv = kind.convs(dims)
    den = kind._den(dims)
    rw = _rows(kind, dims, target)
    cap = int(t) * den  # cycles = ceil(tnum/den) <= t  <=>  tnum <= t*den
    ok = np.ones(rw.h.shape, bool)
    ks, tmax, smax = [], np.zeros(rw.h.shape, np.int64), np.zeros(rw.h.shape, np.int64)
    for i, conv in enumerate(cv):
        K = conv[5]
        q = np.clip(cap // rw.base[i], 0, K)
        ok &= q >= 1
        k = np.maximum(_cdiv(K, np.maximum(q, 1)), rw.kmem[i])
        ks.append(k)
        tmax = np.maximum(tmax, rw.base[i] * _cdiv(K, k))
        smax = np.maximum(smax, _cdiv(WORD_BYTES * K * rw.num[i], k * rw.dm[i]))
    width = 3 * sum(ks) if ks else np.zeros(rw.h.shape, np.int64)
    height = rw.h * rw.w * (rw.m + 1)
    ok &= Fabric.of(target).fits_array(width, height)
    sel = np.nonzero(ok)[0]
    order = sel[np.lexsort((height[sel], width[sel]))]  # width up, then height up
    hh = height[order]
    prev = np.concatenate([[np.iinfo(np.int64).max], np.minimum.accumulate(hh)[:-1]])
    pick = order[hh < prev]
    cs, kn = kind._ck_names()
    out = {"w": width[pick], "h": height[pick], "cycles": _cdiv(tmax[pick], den),
           "sram": smax[pick], "h_knob": rw.h[pick], "w_knob": rw.w[pick]}
    for i in range(len(cv)):
        out[cs[i]] = rw.c[i][pick]
        out[kn[i]] = ks[i][pick]
    return out


def _frontier_arrays(kind: ConvGroupKind, dims: Dims, target: Target) -> dict[str, np.ndarray]:
    cv = kind.convs(dims)
    den = kind._den(dims)
    rw = _rows(kind, dims, target)
    h, w, m = rw.h, rw.w, rw.m
    c, base, kmem, num, dm = rw.c, rw.base, rw.kmem, rw.num, rw.dm
    # time caps: the convs' own distinct times, within [fastest, slowest useful] per row
    tlo = np.max([base[i] for i in range(len(cv))], axis=0)
    thi = np.max([base[i] * _cdiv(conv[5], kmem[i]) for i, conv in enumerate(cv)], axis=0)
    caps = np.concatenate([base[i][:, None] * np.unique(_cdiv(conv[5], distinct_ceil_values(
        conv[5])))[None, :] for i, conv in enumerate(cv)], axis=1)
    r, j = np.nonzero((caps >= tlo[:, None]) & (caps <= thi[:, None]))
    cap = caps[r, j]
    ks = []
    tmax = np.zeros(cap.shape, np.int64)
    smax = np.zeros(cap.shape, np.int64)
    for i, conv in enumerate(cv):
        K = conv[5]
        q = np.clip(cap // base[i][r], 1, K)  # largest ceil(K/k) the cap allows (>=1 as cap>=tlo)
        k = np.maximum(_cdiv(K, q), kmem[i][r])
        ks.append(k)
        tmax = np.maximum(tmax, base[i][r] * _cdiv(K, k))
        smax = np.maximum(smax, _cdiv(WORD_BYTES * K * num[i][r], k * dm[i][r]))
    width = 3 * sum(ks)
    height = (h * w * (m + 1))[r]
    ok = Fabric.of(target).fits_array(width, height)
    sel = np.nonzero(ok)[0]
    cyc = _cdiv(tmax[sel], den)
    area = width[sel] * height[sel]
    order = np.lexsort((cyc, area))  # area, then time (no packed key: large grids overflow it)
    cyc_o = cyc[order]
    prev = np.concatenate([[np.iinfo(np.int64).max], np.minimum.accumulate(cyc_o)[:-1]])
    pick = sel[order[cyc_o < prev]]
    rr = r[pick]
    out = {"w": width[pick], "h": height[pick], "cycles": _cdiv(tmax[pick], den),
           "sram": smax[pick], "h_knob": h[rr], "w_knob": w[rr]}
    cs, kn = kind._ck_names()
    for i in range(len(cv)):
        out[cs[i]] = c[i][rr]
        out[kn[i]] = ks[i][pick]
    return out


@lru_cache(maxsize=4096)
def _frontier(kind: ConvGroupKind, dims_key: tuple[tuple[str, int], ...],
              target: Target) -> tuple[Choice, ...]:
    dims = dict(dims_key)
    a = _frontier_arrays(kind, dims, target)
    names = list(kind.knob_names)
    cols = {"h": a["h_knob"], "w": a["w_knob"], **{n: a[n] for n in names[2:]}}
    return tuple(Choice(tuple((n, int(cols[n][i])) for n in names), int(a["w"][i]),
                        int(a["h"][i]), int(a["cycles"][i]), int(a["sram"][i]))
                 for i in range(a["w"].size))


class ConvKind(ConvGroupKind):
    name = "ispd.conv"
    knob_names = ("h", "w", "c", "k")
    description = "ISPD 2020 conv(H W R S C K T): knobs h w c k"
    n_convs = 1

    def convs(self, dims: Dims) -> list[Conv]:
        d = {k: int(dims[k]) for k in ("H", "W", "R", "S", "C", "K", "T")}
        return [(d["H"], d["W"], d["R"], d["S"], d["C"], d["K"], d["T"])]

    def formal_names(self) -> tuple[str, ...]:
        return ("H", "W", "C", "K", "R", "S", "T", "U")


class DBlockKind(ConvGroupKind):
    name = "ispd.dblock"
    knob_names = ("h", "w", "c1", "c2", "c3", "k1", "k2", "k3")
    description = "ISPD 2020 dblock(H W F): three convs sharing h, w"
    n_convs = 3

    def convs(self, dims: Dims) -> list[Conv]:
        H, W, F = int(dims["H"]), int(dims["W"]), int(dims["F"])
        return [(H, W, 1, 1, F, F // 4, 1), (H, W, 3, 3, F // 4, F // 4, 1),
                (H, W, 1, 1, F // 4, F, 1)]

    def formal_names(self) -> tuple[str, ...]:
        return ("H", "W", "F")


class CBlockKind(ConvGroupKind):
    name = "ispd.cblock"
    knob_names = ("h", "w", "c1", "c2", "c3", "c4", "k1", "k2", "k3", "k4")
    description = "ISPD 2020 cblock(H W F): four convs sharing h, w"
    n_convs = 4

    def convs(self, dims: Dims) -> list[Conv]:
        H, W, F = int(dims["H"]), int(dims["W"]), int(dims["F"])
        return [(H, W, 1, 1, F // 2, F // 4, 1), (H, W, 3, 3, F // 4, F // 4, 2),
                (H // 2, W // 2, 1, 1, F // 4, F, 1), (H, W, 1, 1, F // 2, F, 2)]

    def formal_names(self) -> tuple[str, ...]:
        return ("H", "W", "F")


CONV = ConvKind()
DBLOCK = DBlockKind()
CBLOCK = CBlockKind()
ISPD_KINDS: dict[str, ConvGroupKind] = {"conv": CONV, "dblock": DBLOCK, "cblock": CBLOCK}
