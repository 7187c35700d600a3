"""Halo exchange: cut lanes carry a windowed kernel's rows' disjoint cores, the rows pass the halo.

A conv's, pooling's or resize's PE rows read overlapping input rows; cut
"halo" (wsec.ir.halo), a bundle's lanes carry each row's box only up to
where its partner row's begins, and every PE row takes the rest from its
partner `period` rows on, down a carrier column and along its row, in
route order (a dilated window's halo as a chain over several rows). The
binary flags such a bundle (BUNDLE_HALO) and says how in META `halos`;
the loader expands the exchange's routes and checks them; the simulator's
inbox of a PE is its lane's core plus what the exchange brought it, and a
PE reading a row neither brought raises, naming the PE.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from wsec.backends.emit import write_binary
from wsec.backends.format import BUNDLE_HALO, PORT_BITS, FormatError
from wsec.backends.inspect import program_routes
from wsec.backends.lanes import check_records, expand_routes
from wsec.backends.loader import load_binary
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.driver import CompileOptions, compile_model
from wsec.ir.halo import Halo, covers, entries, exchange, lane_rows, received, split
from wsec.ir.kernels import halo_cut, input_cut
from wsec.ir.lanes import check_cut, cut_counts
from wsec.ir.library_conv import channel_row_boxes, covering_rows, window_rows
from wsec.ir.metrics import halo_arrays, link_loads
from wsec.ir.movement import Operands

_STEP = {PORT_BITS["N"]: (0, 1), PORT_BITS["S"]: (0, -1), PORT_BITS["E"]: (1, 0),
         PORT_BITS["W"]: (-1, 0)}
_BACK = {PORT_BITS["N"]: PORT_BITS["S"], PORT_BITS["S"]: PORT_BITS["N"],
         PORT_BITS["E"]: PORT_BITS["W"], PORT_BITS["W"]: PORT_BITS["E"]}


def _conv_rows(H: int, R: int, sh: int, dh: int, ph: int, s: int, c: int, C: int = 8,
               W: int = 5) -> np.ndarray:
    """A conv's per-row input boxes (ConvKind._row_boxes' construction)."""
    Ho = (H + ph - (R - 1) * dh - 1) // sh + 1
    rows = np.array([window_rows(Ho, s, sh, R, dh, g) for g in range(s)], np.int64)
    lo, hi = covering_rows(rows, ph, H)
    return channel_row_boxes((1, C, H, W), C, 1, c, s, lo, hi, 2)


@pytest.mark.parametrize("case", [(17, 3, 1, 1, 2, 17, 1), (23, 3, 2, 1, 2, 11, 4),
                                  (19, 5, 1, 3, 12, 19, 2), (40, 5, 1, 3, 4, 16, 2),
                                  (31, 3, 1, 4, 8, 8, 8),
                                  (9, 4, 1, 1, 3, 9, 3), (40, 7, 3, 2, 6, 12, 2)])
def test_cores_partition_the_input_and_the_exchange_gives_each_row_its_box(
        case: tuple[int, ...]) -> None:
    H, R, sh, dh, ph, s, c = case
    rows = _conv_rows(H, R, sh, dh, ph, s, c)
    got = split(rows, 2)
    assert got is not None
    core, h = got
    assert h.axis == 2 and h.period == c and h.depth >= 1
    shape = (1, 8, H, 5)
    check_cut(shape, core)  # the cores cover the input...
    live = (core[:, 1] > core[:, 0]).all(axis=1)
    # ...once, but for the rows of the groups the pad clips to the first input row
    # (their boxes all start there: no partner's starts inside them)
    first = int(rows[live & (rows[:, 0, 2] == 0), 1, 2].max())
    twice = np.nonzero((cut_counts(shape, core[live]) > 1).any(axis=(0, 1, 3)))[0]
    assert (twice < first).all()
    assert cut_counts(shape, core[live]).sum() < cut_counts(shape, rows).sum()
    assert covers(rows, core, h, 1)
    # what a partnered row receives is exactly its box past its core (a chain where
    # the halo is deeper than the next row group's core: the dilated cases); a row
    # the pad clipped keeps its box and may take up to the depth more
    got_rows = received(core, h, 1)
    other = np.prod(rows[:, 1, [0, 1, 3]] - rows[:, 0, [0, 1, 3]], axis=1)
    want = (rows[:, 1, 2] - core[:, 1, 2]) * other
    partnered = core[:, 1, 2] < rows[:, 1, 2]
    assert (got_rows[partnered] == want[partnered]).all()
    assert (got_rows <= h.depth * other).all()


def test_no_halo_where_rows_share_nothing() -> None:
    rows = _conv_rows(16, 1, 1, 1, 0, 8, 2)  # a 1x1 conv: disjoint row groups
    assert split(rows, 2) is None
    assert split(_conv_rows(17, 3, 1, 1, 2, 17, 1), None) is None  # the kind names no axis


def test_a_carrier_whose_lane_never_arrived_passes_nothing_on() -> None:
    rows = _conv_rows(40, 5, 1, 3, 4, 16, 2)  # a halo of 12 rows over 2-row cores
    core, h = split(rows, 2)  # type: ignore[misc]
    own = np.broadcast_to(lane_rows(core, 1)[:, None], (rows.shape[0], 3, *rows.shape[1:]))
    full, _ = exchange(own, h)
    own = own.copy()
    py = 20  # drop its lane at every PE of its row
    own[py] = 0
    held, _ = exchange(own, h)
    assert (held[py] == 0).all()
    # the rows below it along its residue stop short of their box's end
    short = [q for q in range(py - h.period, -1, -h.period)
             if held[q, 0, 1, 2] < rows[q, 1, 2]]
    assert short and short[0] == py - h.period
    assert (held[py + 1:] == full[py + 1:]).all()  # the rows after it are unaffected


@pytest.mark.parametrize("uw,uh,p", [(4, 9, 2), (3, 10, 3), (8, 7, 1), (5, 12, 4), (1, 6, 1)])
def test_exchange_routes_are_paths_one_route_per_pe_and_color(uw: int, uh: int, p: int) -> None:
    ent, whose = entries(uw, uh, p, (16, 17, 18, 19))
    assert ent.shape[0] == whose.size
    keys = {(int(a), int(b), int(c)) for a, b, c in ent[:, :3]}
    assert len(keys) == ent.shape[0]  # one route per PE and color
    at = {(int(a), int(b), int(c)): (int(rx), int(tx)) for a, b, c, rx, tx in ent}
    for (x, y, c), (_, tx) in at.items():
        out = [bit for bit in _STEP if tx & bit]
        assert len(out) <= 1  # a route is a path
        for bit in out:
            dx, dy = _STEP[bit]
            nxt = at.get((x + dx, y + dy, c))
            assert nxt is not None and nxt[0] & _BACK[bit], (x, y, c)
            assert 0 <= x + dx < uw and 0 <= y + dy < uh
    # every receiving row's carrier gets it from N into its core, and every PE of
    # the row takes it into its core
    ramp = PORT_BITS["RAMP"]
    for row in range(uh - p):
        mine = ent[whose == row]
        into = {int(x) for x, _, _, _, tx in mine[mine[:, 1] == row] if tx & ramp}
        assert into == set(range(uw))


# --- compiled: a small conv, a dilated conv and a pooling, their cut bundles exchanging -----
def _graph(name: str, C: int, H: int, W: int, K: int, R: int, stride: int, dil: int, pad: int,
           op: str) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits, Ko = [], K or C
    if op == "Conv":
        inits.append(numpy_helper.from_array(
            rng.standard_normal((K, C, R, R)).astype(np.float32), "w"))
        node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[R, R],
                                strides=[stride, stride], dilations=[dil, dil], pads=[pad] * 4)
    elif op == "Resize":  # R-times linear upsampling
        inits.append(numpy_helper.from_array(np.array([1, 1, R, R], np.float32), "scales"))
        node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear")
    else:
        node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[R, R],
                                strides=[stride, stride], pads=[pad] * 4)
    Ho = (H + 2 * pad - dil * (R - 1) - 1) // stride + 1
    Wo = (W + 2 * pad - dil * (R - 1) - 1) // stride + 1
    if op == "Resize":
        Ho, Wo = H * R, W * R
    g = helper.make_graph([node], name,
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, H, W])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                         [1, Ko, Ho, Wo])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


CASES = {"conv3": (8, 17, 13, 8, 3, 1, 1, 1, "Conv"),
         "dilated": (4, 19, 9, 8, 5, 1, 3, 6, "Conv"),  # a halo of 12 rows, chained
         "pool": (8, 17, 13, 0, 3, 2, 1, 1, "MaxPool"),
         "resize": (4, 9, 11, 0, 2, 1, 1, 0, "Resize")}  # its kernel placed rotated


def _halo_binary(d: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    """The case compiled, its cut input bundle turned into cut "halo" (the
    router cuts so only where whole boxes find no pitch: here they do), and
    written: (onnx path, binary path)."""
    path = d / f"{name}.onnx"
    onnx.save(_graph(name, *CASES[name]), str(path))
    m = compile_model(str(path), CompileOptions()).module
    ops = Operands.of_module(m, runs=True)
    kern = {k.name: k for k in m.kernels()}
    turned = 0
    for e in m.edges:
        shape = tuple(m.values[e.value].type.shape)
        new = []
        for b in e.bundles or ():
            if b.cut == "rows" and b.sink in kern:
                got = halo_cut(kern[b.sink], e.value, shape, ops)
                rows = input_cut(kern[b.sink], e.value, shape, ops)
                if got is not None and rows is not None and covers(rows, *got, b.pitch):
                    b = dataclasses.replace(b, cut="halo")
                    turned += 1
            new.append(b)
        e.bundles = new
    assert turned == 1
    # the exchange's links are in the link loads (and so in the realised rate the
    # binary states, which the loader checks every link against)
    assert any(link_loads(part, _fabric(m)).max() > 0 for _, _, part in halo_arrays(m))
    from wsec.passes.route import account

    account(m, _fabric(m))
    write_binary(m, str(d / f"{name}.bin"))
    return path, d / f"{name}.bin"


def _fabric(m):  # type: ignore[no-untyped-def]
    from wsec.ir.fabric import Fabric
    from wsec.ir.target import get_target

    return Fabric(get_target(str(m.attrs.get("target") or "wse2")))


@pytest.fixture(scope="module")
def halo_bins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[pathlib.Path,
                                                                           pathlib.Path]]:
    d = tmp_path_factory.mktemp("halo")
    return {name: _halo_binary(d, name) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_halo_cut_kernels_match_onnxruntime_with_every_pe_proven(halo_bins, name: str) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    path, binary = halo_bins[name]
    p = load_binary(str(binary))
    bi = next(i for i, b in enumerate(p.bundles) if int(b["flags"]) & BUNDLE_HALO)
    assert p.halo(bi) == Halo(*p.info["halos"][str(bi)])
    x = random_inputs(p, 0)
    res = simulate(p, x, strict=True)
    sink = p.kernels[int(p.bundles["sink"][bi])].name
    assert res.kernel_stats[sink]["forwarded_pes"] == 0
    if name == "resize":
        assert p.kernels[int(p.bundles["sink"][bi])].rotated  # the exchange placed transposed
    ref = ort.InferenceSession(str(path)).run(None, {"x": x["x"]})[0]
    np.testing.assert_allclose(res.outputs["y"], ref, rtol=1e-4, atol=1e-4)
    # the exchange's routes are in the router table, on the halo colors, no bundle's
    routes = expand_routes(p)
    top = p.target.colors - p.target.reserved_colors
    mine = routes[(routes["color"] >= top - 4) & (routes["color"] < top)]
    lanes = p.routes["color"][p.routes["bundle"] != 0xFFFFFFFF].astype(np.int64)
    assert mine.size and not ((lanes >= top - 4) & (lanes < top)).any()
    # and in the binary's link loads, with the bytes of the halo rows they move
    ra = program_routes(p)
    on = (ra.color >= top - 4) & (ra.color < top)
    assert on.any() and (ra.bytes[on] > 0).all()


def test_shortened_halo_is_an_error_at_the_pe(halo_bins) -> None:  # type: ignore[no-untyped-def]
    _, binary = halo_bins["dilated"]
    p = load_binary(str(binary))
    bi = next(i for i, b in enumerate(p.bundles) if int(b["flags"]) & BUNDLE_HALO)
    axis, period, depth = p.info["halos"][str(bi)]
    p.info["halos"][str(bi)] = [axis, period, depth - 1]  # one exchanged row dropped
    with pytest.raises(SimError, match=r"PE \(\d+, \d+\) .*reads %x\[.*never arrived there "
                                       r".*core with the halo from PE row \d+"):
        simulate(p, random_inputs(p, 0))


def test_lane_missing_at_a_sender_starves_the_row_it_feeds(halo_bins) -> None:  # type: ignore[no-untyped-def]
    """One PE's core no longer takes its lane (the PE that sends the row
    `period` before it its halo, down that row's carrier column): it holds
    nothing, so it passes nothing on, and a row whose halo chain runs
    through it (the row `period` before it, or, the halo of this dilated
    conv deeper than a core, one further up the same residue) finds the
    halo rows missing: a SimError at its PE."""
    from wsec.backends.sim_inbox import unrotated_offsets
    from wsec.ir.halo import carrier

    _, binary = halo_bins["dilated"]
    p = load_binary(str(binary))
    bi = next(i for i, b in enumerate(p.bundles) if int(b["flags"]) & BUNDLE_HALO)
    h = p.halo(bi)
    assert h is not None
    ki = int(p.bundles["sink"][bi])
    uw, uh = p.kernels[ki].unrotated_shape
    r = p.routes.copy()
    ramp = np.uint8(PORT_BITS["RAMP"])
    mine = np.flatnonzero((r["bundle"] == bi) & ((r["tx"] & ramp) != 0))
    px, py = unrotated_offsets(p, ki, r["x"][mine].astype(np.int64), r["y"][mine].astype(np.int64))
    from wsec.backends.sim_inbox import deliveries

    d = deliveries(p)[ki]["x"]
    assert d.held is not None and d.boxes is not None
    took = d.held[:, :, 1, h.axis] > d.boxes[np.maximum(d.lane_at, 0), 1, h.axis]
    row = int(np.flatnonzero(took.any(axis=1))[len(np.flatnonzero(took.any(axis=1))) // 2]) \
        + h.period  # a row that sends a halo the row `period` before it needs
    at = mine[(py == row) & (px == carrier(row - h.period, h.period, uw))]  # the sender
    assert at.size == 1
    r["tx"][at] &= ~ramp
    with pytest.raises(SimError, match=r"offset \(\d+, (\d+)\)\) reads %x\[.*never arrived "
                                       r"there .*halo from PE row (\d+)") as err:
        simulate(dataclasses.replace(p, routes=r), random_inputs(p, 0))
    got = re.search(r"offset \(\d+, (\d+)\)\).*halo from PE row (\d+)", str(err.value))
    assert got is not None
    at, sender = int(got.group(1)), int(got.group(2))
    assert sender == at + h.period and at < row and (row - at) % h.period == 0


def test_swapped_cores_are_an_error_at_a_pe(halo_bins) -> None:  # type: ignore[no-untyped-def]
    """Two lanes' cores swapped (each lane lands its core on the other's
    rows): a PE reads rows neither its lane nor the exchange brought."""
    _, binary = halo_bins["conv3"]
    p = load_binary(str(binary))
    bi = next(i for i, b in enumerate(p.bundles) if int(b["flags"]) & BUNDLE_HALO)
    a = int(p.bundles["slice0"][bi])
    n = int(p.bundles["lanes"][bi])
    i, j = n // 4, 3 * n // 4
    p.slices[[a + i, a + j]] = p.slices[[a + j, a + i]]
    for io in p.info["host_io"]["inputs"]:  # from the host: its I/O map sends them so too
        if io.get("boxes") and len(io["boxes"]) == n:
            io["boxes"][i], io["boxes"][j] = io["boxes"][j], io["boxes"][i]
    with pytest.raises(SimError, match=r"PE \(\d+, \d+\) .*reads %x\[.*never arrived there"):
        simulate(p, random_inputs(p, 0))


def test_loader_checks_the_halo_records(halo_bins) -> None:  # type: ignore[no-untyped-def]
    _, binary = halo_bins["conv3"]
    p = load_binary(str(binary))
    bi = next(i for i, b in enumerate(p.bundles) if int(b["flags"]) & BUNDLE_HALO)
    spec = list(p.info["halos"][str(bi)])
    check_records(p)
    uw, _ = p.kernels[int(p.bundles["sink"][bi])].unrotated_shape
    p.info["halos"][str(bi)] = [spec[0], uw + 1, spec[2]]
    with pytest.raises(FormatError, match=rf"bundle #{bi} .*halo \[axis 2, period {uw + 1}"):
        check_records(p)
    p.info["halos"][str(bi)] = [7, spec[1], spec[2]]
    with pytest.raises(FormatError, match=r"does not fit its boxes' 4 dims"):
        check_records(p)
    del p.info["halos"][str(bi)]
    with pytest.raises(FormatError, match=rf"bundle #{bi} .*exchanges halos; META halos must "):
        check_records(p)
    p.info["halos"][str(bi)] = spec
    p.bundles["flags"][bi] &= ~np.uint8(BUNDLE_HALO)
    with pytest.raises(FormatError, match=rf"META halos names bundle #{bi} .*whole boxes"):
        check_records(p)


def test_halo_cut_round_trips_through_ir_text(tmp_path: pathlib.Path) -> None:
    from wsec.ir.parser import parse_module
    from wsec.ir.printer import print_module

    path = tmp_path / "conv3.onnx"
    onnx.save(_graph("conv3", *CASES["conv3"]), str(path))
    m = compile_model(str(path), CompileOptions()).module
    e = next(e for e in m.edges if any(b.cut == "rows" for b in e.bundles or ()))
    e.bundles = [dataclasses.replace(b, cut="halo") if b.cut == "rows" else b
                 for b in e.bundles or ()]
    text = print_module(m)
    assert " cut halo" in text
    back = parse_module(text)
    assert [b for e in back.edges for b in e.bundles or ()] == [
        b for e in m.edges for b in e.bundles or ()]
