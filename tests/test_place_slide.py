"""Flow shelves: a kernel shorter than its shelf slides off the rows that a
bundle passing it needs (passes/place_slide), so that the bundle runs on
free PEs instead of over lanes already at capacity."""

from __future__ import annotations

import fake_kinds as fk
from wsec.ir.fabric import Fabric
from wsec.ir.graph import Module, Rect
from wsec.ir.target import get_target
from wsec.passes.place_slide import slide_short_kernels

CAP = 1000  # wavelets per sample a link moves in the bottleneck time
FULL = (1, 8000)  # 16,000 bytes: 4,000 wavelets, four lanes at capacity


def _put(m: Module, name: str, ins: list[str], out: str, rect: Rect,
         shape: tuple[int, ...] = (1, 64)) -> None:
    fk.box(m, name, ins, out, rect.w, rect.h, out_shape=shape).rect = rect


def _shelf(shorts: list[tuple[str, int]], skip: tuple[int, ...] = (1, 4000),
           fill: tuple[int, ...] = FULL) -> Module:
    """On one shelf 8 rows high: z -> a -> shorts... -> c -> d, and a skip
    z -> d along rows 0..2 (the rows z and d share). Each short kernel
    (name, rows) sits at the foot of the shelf; a's output (`fill`) fills
    the first one's input lanes, by default to capacity."""
    m = fk.sized("shelf")
    x = 0
    _put(m, "z", [], "vz", Rect(x, 0, 1, 8), skip)
    _put(m, "a", ["vz"], "va", Rect(1, 0, 1, 8), fill)
    prev, x = "va", 2
    for name, rows in shorts:
        _put(m, name, [prev], f"v{name}", Rect(x, 0, 2, rows), FULL)
        prev, x = f"v{name}", x + 2
    _put(m, "c", [prev], "vc", Rect(x, 0, 1, 8))
    _put(m, "d", ["vc", "vz"], "vd", Rect(x + 1, 0, 1, 3))
    return fk.connect(m)


def _fabric() -> Fabric:
    return Fabric.of(get_target("wse2", (16, 8)))


def test_a_full_short_kernel_moves_off_a_passing_bundle() -> None:
    m = _shelf([("b", 4)])
    assert slide_short_kernels(m, _fabric(), CAP, columns=False) == 1
    # the nearest place whose rows the skip (rows 0..2) does not cross
    assert m.kernel("b").rect == Rect(2, 3, 2, 4)
    for n in ("z", "a", "c", "d"):  # the others stay
        assert m.kernel(n).rect.y == 0


def test_linked_short_kernels_move_together() -> None:
    """Two short kernels in a row that exchange data slide by one shift, so
    that their bundle still runs straight."""
    m = _shelf([("b", 4), ("e", 5)])
    assert slide_short_kernels(m, _fabric(), CAP, columns=False) == 2
    assert m.kernel("b").rect.y == m.kernel("e").rect.y == 3


def test_nothing_moves_where_the_rows_keep_up() -> None:
    """A passing bundle light enough to share the short kernel's rows, or a
    kernel as tall as its shelf: nothing moves."""
    m = _shelf([("b", 4)], skip=(1, 64), fill=(1, 4000))
    assert slide_short_kernels(m, _fabric(), CAP, columns=False) == 0
    assert m.kernel("b").rect.y == 0
    m = _shelf([("b", 8)])
    assert slide_short_kernels(m, _fabric(), CAP, columns=False) == 0


def test_column_shelves_slide_along_x() -> None:
    """A transposed flow layout (shelves are columns): the same, x for y."""
    m = _shelf([("b", 4)])
    for k in m.kernels():
        r = k.rect
        k.rect = Rect(r.y, r.x, r.h, r.w)
    assert slide_short_kernels(m, _fabric(), CAP, columns=True) == 1
    assert m.kernel("b").rect == Rect(3, 2, 4, 2)


def test_no_slide_onto_a_kernel_of_another_shelf() -> None:
    """b (3 rows) would slide off the skip's rows onto rows 3-5, but a
    kernel of another shelf stands in its column there (a raised producer
    may reach past its shelf's band, place_rows): b stays; without it b
    slides."""
    m = _shelf([("b", 3)])
    assert slide_short_kernels(m, _fabric(), CAP, columns=False) == 1
    assert m.kernel("b").rect == Rect(2, 3, 2, 3)
    m = _shelf([("b", 3)])
    _put(m, "o", [], "vo", Rect(2, 3, 2, 5))
    assert slide_short_kernels(m, _fabric(), CAP, columns=False) == 0
    assert m.kernel("b").rect == Rect(2, 0, 2, 3)
