"""The LANES section: bundles and kernel templates to and from the routers.

Why one module: the emitter turns a module's bundles (wsec.ir.lanes) and
kernels' route templates (wsec.ir.templates) into records; the loader checks
those records and expands them into the per-PE, per-color router table
(`Program.routes`) that `inspect`, the report and the simulator read. Both
directions share the checks, so a binary the emitter writes is one the
loader accepts.
"""

from __future__ import annotations

import numpy as np
from wsec.ir.graph import HOST, Bundle, Module
from wsec.ir.halo import entries as halo_entries
from wsec.ir.halo import halo_colors
from wsec.ir.lanes import (
    LaneError,
    check_cut,
    check_reads,
    check_view,
    endpoints,
    expand,
    spine_dir,
)
from wsec.ir.lanes import check as lane_check
from wsec.ir.metrics import cut_share_key, share_key
from wsec.ir.relay import RELAY_COLORS, relay_colors
from wsec.ir.relay import entries as relay_entries
from wsec.ir.templates import INTERNAL_COLORS, place, reduction_template

from .format import (
    BUNDLE_CUT,
    BUNDLE_DTYPE,
    BUNDLE_FROM_HOST,
    BUNDLE_HALO,
    BUNDLE_OWNERS,
    BUNDLE_RELAY,
    BUNDLE_TO_HOST,
    CUT_DIMS,
    NO_BUNDLE,
    POINT_DTYPE,
    ROUTE_DTYPE,
    SLICE_DTYPE,
    TEMPLATE_DTYPE,
    FormatError,
    Program,
    type_shape,
)
from .relays import _relay_of, lands_inside, relay_sinks, to_bundle
from .sink_reads import sink_reads


def bundle_records(module: Module, kernel_index: dict[str, int]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, list[int]]]:
    """(BUNDLE_DTYPE records, POINT_DTYPE waypoints, SLICE_DTYPE lane boxes
    of the cut bundles, META `cut_views`: per cut bundle index whose boxes
    are over a view of its value, that view's shape) of every edge's
    bundles."""
    from wsec.ir.kernels import cut_view, ribbon_boxes
    from wsec.ir.movement import Operands
    from wsec.ir.relay import module_relays

    recs, pts, boxes = [], [], []
    kernels = {k.name: k for k in module.kernels()}
    ops = Operands.of_module(module, runs=True)
    nbox = 0
    views: dict[str, list[int]] = {}
    relays = {(i, id(b)): rl for i, b, rl in module_relays(module)}
    for ei, e in enumerate(module.edges):
        groups: dict[str, list[Bundle]] = {}  # per sink its bundles: several are ribbons
        for b in e.bundles or ():
            groups.setdefault(b.sink, []).append(b)
        got: dict[str, list[np.ndarray]] = {}
        lane0: dict[int, tuple[int, int]] = {}
        for sink, group in groups.items():
            total = sum(b.lanes for b in group)
            at = 0
            for b in group:
                lane0[id(b)] = (at, total)
                at += b.lanes
            if group[0].cut:
                try:
                    got[sink] = ribbon_boxes(kernels[sink], group, e.value,
                                             tuple(module.values[e.value].type.shape), ops)
                except (KeyError, ValueError) as err:
                    raise FormatError(f"bundle of %{e.value} to '{sink}' is cut "
                                      f"'{group[0].cut}': {err}") from None
        for b in e.bundles or ():
            flags = (BUNDLE_FROM_HOST if e.src == HOST else 0) | (
                BUNDLE_TO_HOST if b.sink == HOST else 0)
            slice0 = 0
            if b.cut:
                box = got[b.sink][next(i for i, o in enumerate(groups[b.sink]) if o is b)]
                shape = tuple(module.values[e.value].type.shape)
                view = cut_view(kernels[b.sink], e.value, shape, ops)
                if view != shape:
                    views[str(len(recs))] = list(view)
                flags |= BUNDLE_CUT | (BUNDLE_OWNERS if b.cut == "owners" else 0) | (
                    BUNDLE_HALO if b.cut == "halo" else 0)
                slice0 = nbox
                boxes.append(box)
                nbox += box.shape[0]
            elif (ei, id(b)) in relays:  # its rows' boxes, relayed inside the sink
                rl = relays[(ei, id(b))]
                if rl.view != (tuple(module.values[e.value].type.shape) or (1,)):
                    views[str(len(recs))] = list(rl.view)
                flags |= BUNDLE_RELAY
                slice0 = nbox
                boxes.append(rl.boxes)
                nbox += rl.boxes.shape[0]
            recs.append((ei, -1 if b.sink == HOST else kernel_index[b.sink], b.color, flags,
                         b.src_pitch, b.lanes, b.axis, b.pitch, b.reach, len(pts), len(b.path),
                         slice0, *lane0[id(b)]))
            pts += b.path
    sl = np.zeros(nbox, SLICE_DTYPE)
    at = 0
    for box in boxes:
        nd = box.shape[2]
        sl["start"][at:at + box.shape[0], :nd] = box[:, 0, :]
        sl["stop"][at:at + box.shape[0], :nd] = box[:, 1, :]
        at += box.shape[0]
    return (np.array(recs, BUNDLE_DTYPE) if recs else np.zeros(0, BUNDLE_DTYPE),
            np.array(pts, POINT_DTYPE) if pts else np.zeros(0, POINT_DTYPE), sl, views)


def halo_records(module: Module) -> dict[str, list[int]]:
    """META `halos`: per bundle cut "halo" (its index, in bundle_records'
    order), how its sink's rows exchange the halo: [axis, period, depth]
    (wsec.ir.kernels.halo_cut)."""
    from wsec.ir.kernels import halo_cut
    from wsec.ir.movement import Operands

    out: dict[str, list[int]] = {}
    kernels = {k.name: k for k in module.kernels()}
    ops = Operands.of_module(module, runs=True)
    bi = 0
    for e in module.edges:
        for b in e.bundles or ():
            if b.cut == "halo":
                got = halo_cut(kernels[b.sink], e.value,
                               tuple(module.values[e.value].type.shape), ops)
                if got is None:
                    raise FormatError(f"bundle of %{e.value} to '{b.sink}' is cut 'halo', but "
                                      "its rows exchange no halo of it")
                out[str(bi)] = got[1].as_list()
            bi += 1
    return out


def relay_records(module: Module) -> dict[str, int]:
    """META `relays`: per flat bundle whose sink's PEs relay their rows'
    boxes (its index, in bundle_records' order), the colors its relay runs
    on (wsec.ir.relay.RELAY_COLORS: the relay's scheme, checked)."""
    from wsec.ir.relay import module_relays

    got = {(i, id(b)) for i, b, _ in module_relays(module)}
    out: dict[str, int] = {}
    bi = 0
    for i, e in enumerate(module.edges):
        for b in e.bundles or ():
            if (i, id(b)) in got:
                out[str(bi)] = RELAY_COLORS
            bi += 1
    return out


def template_records(module: Module) -> tuple[list[dict[str, object]], np.ndarray, list[int]]:
    """(META templates, TEMPLATE_DTYPE entries, per kernel its template or -1):
    one template per (kind, knobs, shape) that has internal flows."""
    from wsec.ir.kernels import kind_of

    meta: list[dict[str, object]] = []
    key_of: dict[tuple, int] = {}
    chunks: list[np.ndarray] = []
    per_kernel = []
    n = 0
    for k in module.kernels():
        knobs = dict(k.knobs or {})
        w, h = (int(k.cost["w"]), int(k.cost["h"])) if k.cost and "w" in k.cost else (0, 0)
        chain = kind_of(k).reduction_chain(k.dims, knobs) if knobs else 1
        key = (k.kind, tuple(sorted(knobs.items())), w, h, chain)
        if chain < 2 or w < 1:
            per_kernel.append(-1)
            continue
        if key not in key_of:
            ent = reduction_template(w, h, chain)
            key_of[key] = len(meta)
            meta.append({"kind": k.kind, "knobs": knobs, "w": w, "h": h, "chain": chain,
                         "entry0": n, "entries": int(ent.shape[0])})
            rec = np.zeros(ent.shape[0], TEMPLATE_DTYPE)
            for name, col in zip(("px", "py", "color", "rx", "tx"), ent.T, strict=True):
                rec[name] = col
            chunks.append(rec)
            n += ent.shape[0]
        per_kernel.append(key_of[key])
    return meta, (np.concatenate(chunks) if chunks else np.zeros(0, TEMPLATE_DTYPE)), per_kernel


def check_records(p: Program) -> None:
    """What expansion relies on: indices in range, geometry a valid bundle,
    sizes the grid can hold (FormatError naming the record)."""
    W, H = p.target.width, p.target.height
    ne, nk = len(p.edges), len(p.kernels)
    for bi, r in enumerate(p.bundles):
        what = f"bundle #{bi}"
        if int(r["edge"]) >= ne:
            raise FormatError(f"{what} names edge #{int(r['edge'])}; the program has {ne}")
        if not -1 <= int(r["sink"]) < nk:
            raise FormatError(f"{what} names sink kernel #{int(r['sink'])}; the program has {nk}")
        a, n = int(r["point0"]), int(r["npoints"])
        if n < 1 or a + n > len(p.points):
            raise FormatError(f"{what} has waypoints {a}..{a + n}, outside the {len(p.points)} "
                              "stored")
        if not 1 <= int(r["lanes"]) <= max(W, H) or int(r["reach"]) > max(W, H):
            raise FormatError(f"{what} has {int(r['lanes'])} lanes and reach {int(r['reach'])}; "
                              f"a {W}x{H} grid holds at most {max(W, H)} of either")
        if not 1 <= int(r["pitch"]) <= max(W, H):
            raise FormatError(f"{what} has lane pitch {int(r['pitch'])}; a pitch is at least 1 "
                              f"(every row) and at most {max(W, H)}")
        if int(r["flags"]) & BUNDLE_OWNERS and not int(r["flags"]) & BUNDLE_CUT:
            raise FormatError(f"{what} lands on owner rows but is not cut: only a cut bundle's "
                              "lanes say which rows they carry for")
        if int(r["pitch"]) > 1 and not int(r["flags"]) & BUNDLE_CUT:
            raise FormatError(f"{what} has lane pitch {int(r['pitch'])} but is not cut: only a "
                              "cut bundle's lanes say what the rows of their spines read")
        if int(r["src_pitch"]) > int(r["pitch"]):
            raise FormatError(f"{what} has source pitch {int(r['src_pitch'])} above its pitch "
                              f"{int(r['pitch'])}: lanes widen on their way, never narrow "
                              "(0 means the pitch throughout)")
        if int(r["color"]) >= p.target.colors:
            raise FormatError(f"{what} uses color {int(r['color'])}; the target has "
                              f"{p.target.colors}")
        try:
            lane_check(to_bundle(p, bi))
        except LaneError as e:
            raise FormatError(f"{what} (edge %{p.edges[int(r['edge'])].value}) is not a valid "
                              f"bundle of lanes: {e}") from None
        _check_cut(p, bi)
        _check_halo(p, bi)
        _check_spines(p, bi)
    _check_partition(p)
    for bi in range(len(p.bundles)):  # once every lane lands in its sink (the relays deal them)
        _check_relay(p, bi)
    for ti, t in enumerate(p.info.get("templates", [])):
        a, n = int(t["entry0"]), int(t["entries"])
        if a + n > len(p.templates):
            raise FormatError(f"template #{ti} has entries {a}..{a + n}, outside the "
                              f"{len(p.templates)} stored")
        ent = p.templates[a:a + n]
        if n and (int(ent["px"].max()) >= int(t["w"]) or int(ent["py"].max()) >= int(t["h"])
                  or int(ent["color"].max()) >= INTERNAL_COLORS):
            raise FormatError(f"template #{ti} reaches outside its {t['w']}x{t['h']} PEs or its "
                              f"{INTERNAL_COLORS} internal colors")


def _check_relay(p: Program, bi: int) -> None:
    """A bundle whose sink's PEs relay their rows' boxes is flat, runs into a
    kernel that exchanges no halos (the relay's colors take the exchange's),
    and its records agree (program_relays); META relays names no other."""
    r = p.bundles[bi]
    named = str(bi) in p.info.get("relays", {})
    what = f"bundle #{bi} (edge %{p.edges[int(r['edge'])].value})"
    if not int(r["flags"]) & BUNDLE_RELAY:
        if named:
            raise FormatError(f"META relays names {what}, whose sink's rows relay nothing")
        return
    if int(r["sink"]) >= 0 and not lands_inside(p, bi):
        return  # the loader names the lane landing outside its sink
    _relay_of(p, bi)
    ki = int(r["sink"])
    if ki in halo_sinks(p):
        raise FormatError(f"{what} relays into kernel '{p.kernels[ki].name}', whose rows "
                          "exchange halos on the relay's colors")


def _check_halo(p: Program, bi: int) -> None:
    """A bundle whose sink's rows exchange halos is cut into one of its
    kernels (not onto owner rows), and META `halos` says how: an axis of
    its boxes, a partner period inside the sink's rows, a depth of at least
    one row of that axis (what the simulator's exchange relies on)."""
    r = p.bundles[bi]
    flags = int(r["flags"])
    named = str(bi) in p.info.get("halos", {})
    what = f"bundle #{bi} (edge %{p.edges[int(r['edge'])].value})"
    if not flags & BUNDLE_HALO:
        if named:
            raise FormatError(f"META halos names {what}, whose lanes carry whole boxes")
        return
    if not flags & BUNDLE_CUT or flags & BUNDLE_OWNERS or int(r["sink"]) < 0:
        raise FormatError(f"{what} exchanges halos but is not cut per row into a kernel")
    spec = p.info.get("halos", {}).get(str(bi))
    if not (isinstance(spec, list) and len(spec) == 3 and all(isinstance(v, int) for v in spec)):
        raise FormatError(f"{what} exchanges halos; META halos must give its [axis, period, "
                          f"depth], got {spec!r}")
    axis, period, depth = spec
    shape = p.lane_view(bi)
    uw, uh = p.kernels[int(r["sink"])].unrotated_shape
    if not 0 <= axis < len(shape) or not 1 <= period < uh or not 1 <= depth <= shape[axis]:
        raise FormatError(f"{what}: halo [axis {axis}, period {period}, depth {depth}] does not "
                          f"fit its boxes' {len(shape)} dims {list(shape)} and its sink's "
                          f"{uw}x{uh} PEs (a partner period inside its rows)")


def _check_cut(p: Program, bi: int) -> None:
    """A cut bundle's lanes carry boxes of the slice table that lie in its
    value and cover it (overlaps are declared halo; a gap is an error)."""
    r = p.bundles[bi]
    if not int(r["flags"]) & BUNDLE_CUT:
        return
    e = p.edges[int(r["edge"])]
    what = f"bundle #{bi} (edge %{e.value})"
    if int(r["flags"]) & BUNDLE_TO_HOST:
        raise FormatError(f"{what} is cut but runs to the host, which takes flat ranges")
    a, n = int(r["slice0"]), int(r["lanes"])
    if a + n > len(p.slices):
        raise FormatError(f"{what} is cut into slices {a}..{a + n}, outside the "
                          f"{len(p.slices)} stored")
    value = tuple(type_shape(p.info["values"][e.value]))
    shape = p.lane_view(bi)
    try:
        check_view(value, shape)
    except ValueError as err:
        raise FormatError(f"{what} is cut over a view of %{e.value}: {err}") from None
    if len(shape) > CUT_DIMS:
        raise FormatError(f"{what} is cut, but %{e.value} has {len(shape)} dims "
                          f"{'in its view ' if shape != value else ''}(at most {CUT_DIMS})")
    rec = p.slices[a:a + n]
    nd = len(shape)
    if (rec["start"][:, nd:] != 0).any() or (rec["stop"][:, nd:] != 0).any():
        raise FormatError(f"{what}: a lane box has extents past the {nd} dims of %{e.value}"
                          f"{' in its view' if shape != value else ''}")
    boxes = p.lane_boxes(bi)
    assert boxes is not None
    if int(r["flags"]) & BUNDLE_FROM_HOST:
        _check_host_boxes(p, bi, boxes)


def _check_cover(p: Program, group: list[int]) -> None:
    """The boxes of a cut bundle, or of the ribbons of one cut (`group`: the
    bundles of one edge into one sink), cover the value: overlaps are
    declared halo, a gap is an error, unless no PE row of the sink reads it
    (a slice's unread rest: every element its kind's rows read, as the
    binary records them, lies in a box; `cover`)."""
    r = p.bundles[group[0]]
    e = p.edges[int(r["edge"])]
    what = (f"bundle #{group[0]} (edge %{e.value})" if len(group) == 1 else
            f"the ribbons #{', #'.join(str(b) for b in group)} (edge %{e.value})")
    views = {p.lane_view(b) for b in group}
    if len(views) > 1:
        raise FormatError(f"{what} are cut over different views of %{e.value}: "
                          f"{sorted(list(v) for v in views)}")
    boxes = np.concatenate([p.lane_boxes(b) for b in group])  # type: ignore[misc]
    try:
        cover(p, group[0], views.pop(), boxes)
    except LaneError as err:
        raise FormatError(f"lane slices of {what} to "
                          f"'{p.kernels[int(r['sink'])].name}' do not cover it: {err}") from None


def cover(p: Program, bi: int, view: tuple[int, ...], boxes: np.ndarray) -> None:
    """LaneError unless the lane boxes `boxes` of cut bundle bi (and its
    ribbons), over `view`, cover its value (check_cut), or where they leave
    a gap, every element its sink's PE rows read (sink_reads, check_reads:
    the elements nobody reads need not travel)."""
    try:
        check_cut(view, boxes)
    except LaneError as err:
        got = sink_reads(p, bi)
        if got is None or tuple(got[1]) != tuple(view):
            raise err from None
        check_reads(view, boxes, got[0])


def _check_host_boxes(p: Program, bi: int, boxes: np.ndarray) -> None:
    """A cut bundle from the host: its I/O map entry sends each lane the box
    its slice record says the lane carries."""
    r = p.bundles[bi]
    e = p.edges[int(r["edge"])]
    sink = p.kernels[int(r["sink"])].name
    what = f"bundle #{bi} (edge %{e.value}) from the host to '{sink}'"
    ios = [d for d in p.info.get("host_io", {}).get("inputs", [])
           if d.get("value") == e.value and d.get("sink") == sink]
    if len(ios) != 1 or "boxes" not in ios[0]:
        raise FormatError(f"{what} is cut, but the I/O map has no boxes for it (it would send "
                          "flat ranges)")
    view = list(p.lane_view(bi))
    if list(ios[0].get("view", type_shape(p.info["values"][e.value]))) != view:
        raise FormatError(f"{what}: the I/O map sends boxes of the shape "
                          f"{list(ios[0].get('view', type_shape(p.info['values'][e.value])))}, "
                          f"its slice records are boxes of {view}")
    sent = np.asarray(ios[0]["boxes"], np.int64).reshape(-1, *boxes.shape[1:]) \
        if ios[0]["boxes"] else np.zeros((0, *boxes.shape[1:]), np.int64)
    if sent.shape != boxes.shape or (sent != boxes).any():
        lane = next((i for i in range(min(len(sent), len(boxes)))
                     if (sent[i] != boxes[i]).any()), min(len(sent), len(boxes)))
        raise FormatError(f"{what}: the I/O map sends lane {lane} "
                          f"{sent[lane].tolist() if lane < len(sent) else 'nothing'}, but its "
                          f"slice record says it carries "
                          f"{boxes[lane].tolist() if lane < len(boxes) else 'nothing'}")


def _check_spines(p: Program, bi: int) -> None:
    """A pitched bundle's lanes land on its sink's input side and their
    spines run along that side inside the sink's rectangle, so they serve
    its rows and nobody else's PEs."""
    r = p.bundles[bi]
    k = int(r["pitch"])
    if k == 1:
        return
    e = p.edges[int(r["edge"])]
    what = f"bundle #{bi} (edge %{e.value})"
    kern = p.kernels[int(r["sink"])]
    b = to_bundle(p, bi)
    _, land = endpoints(b)
    sx, sy = spine_dir(b)
    rect = kern.rect
    for i in (0, b.lanes - 1):  # lanes are affine: the first and the last bound them all
        for t in dict.fromkeys((0, b.spine)):
            x, y = int(land[i, 0]) + t * sx, int(land[i, 1]) + t * sy
            if not (rect.x <= x < rect.x1 and rect.y <= y < rect.y1):
                how = f"the spine of lane {i} reaches" if b.spine else f"lane {i} lands on"
                raise FormatError(f"{what} at pitch {k}: {how} PE "
                                  f"({x}, {y}), outside its sink '{kern.name}' "
                                  f"({rect.w}x{rect.h} at ({rect.x}, {rect.y}))")
    along_rows = (sx != 0) if kern.rotated else (sy != 0)
    if not along_rows:
        raise FormatError(f"{what} at pitch {k}: its spines run across the PE rows of "
                          f"'{kern.name}', not along its input side")


def _check_partition(p: Program) -> None:
    """A bundle's lanes partition its value (lane_slices), so each edge needs
    exactly one bundle per sink: a second overlaps the first, a missing one
    leaves the sink without the value. (A binary without bundles — weight
    streaming — keeps activations in SRAM and routes nothing.)"""
    if not len(p.bundles):
        return
    seen: dict[tuple[int, int], list[int]] = {}
    for bi, r in enumerate(p.bundles):
        key = (int(r["edge"]), int(r["sink"]))
        if key in seen and not (int(r["flags"]) & BUNDLE_CUT
                                and int(p.bundles[seen[key][0]]["flags"]) & BUNDLE_CUT):
            e = p.edges[key[0]]
            sink = "the host" if key[1] < 0 else repr(p.kernels[key[1]].name)
            raise FormatError(f"lane slices of edge %{e.value} to {sink} overlap: bundles "
                              f"#{seen[key][0]} and #{bi} each carry all of it")
        seen.setdefault(key, []).append(bi)
    for group in seen.values():
        _check_lanes(p, group)
        if int(p.bundles[group[0]]["flags"]) & BUNDLE_CUT:
            _check_cover(p, group)
    index = {k.name: i for i, k in enumerate(p.kernels)}
    for ei, e in enumerate(p.edges):
        for d in dict.fromkeys(e.dsts):
            if (ei, -1 if d == HOST else index.get(d, -2)) not in seen:
                raise FormatError(f"edge %{e.value} has no bundle of lanes to "
                                  f"{'the host' if d == HOST else repr(d)}: the value would "
                                  "never arrive")


def _check_lanes(p: Program, group: list[int]) -> None:
    """The bundles of one edge into one sink carry each of its `sink_lanes`
    lanes exactly once (lane0: a bundle's first; one bundle: all of them,
    from 0), and ribbons (several cut bundles, wsec.ir.lanes) at one pitch
    and cut, each lane into rows of its own: a lane no bundle carries, or
    two carry, or two lanes landing on one row, is an error naming the
    kernel, the value and the lane."""
    r0 = p.bundles[group[0]]
    e = p.edges[int(r0["edge"])]
    sink = "the host" if int(r0["sink"]) < 0 else repr(p.kernels[int(r0["sink"])].name)
    what = f"%{e.value} into {sink}"
    total = int(r0["sink_lanes"])
    if not 1 <= total <= max(p.target.width, p.target.height):
        raise FormatError(f"bundle #{group[0]} of {what} says it takes {total} lanes; a "
                          f"{p.target.width}x{p.target.height} grid holds 1 to "
                          f"{max(p.target.width, p.target.height)}")
    by = np.full(total, -1, np.int64)  # per lane of the sink, the bundle carrying it
    for bi in group:
        r = p.bundles[bi]
        a, n = int(r["lane0"]), int(r["lanes"])
        if int(r["sink_lanes"]) != total:
            raise FormatError(f"bundles #{group[0]} and #{bi} of {what} disagree on its "
                              f"lanes: {total} and {int(r['sink_lanes'])}")
        if a + n > total:
            raise FormatError(f"bundle #{bi} of {what} carries its lanes {a}..{a + n - 1}, "
                              f"but it takes {total}")
        twice = np.flatnonzero(by[a:a + n] >= 0)
        if twice.size:
            lane = a + int(twice[0])
            raise FormatError(f"lane {lane} of {what} is carried twice: by bundles "
                              f"#{int(by[lane])} and #{bi}")
        by[a:a + n] = bi
        if len(group) > 1 and (r["pitch"] != r0["pitch"] or r["flags"] != r0["flags"]):
            raise FormatError(f"the ribbons #{group[0]} and #{bi} of {what} differ in pitch or "
                              "cut: lanes of one cut serve rows at one pitch")
    if (by < 0).any():
        lane = int(np.argmax(by < 0))
        raise FormatError(f"lane {lane} of {what} is carried by no bundle (of {total} lanes): "
                          "its rows would never receive the value")
    if len(group) > 1:
        kern = p.kernels[int(r0["sink"])]
        served = [_rows_of(p, bi) for bi in group]
        rows = np.concatenate([s.ravel() for s in served])
        lanes = np.concatenate([np.repeat(int(p.bundles[bi]["lane0"]) + np.arange(s.shape[0]),
                                          s.shape[1]) for bi, s in zip(group, served,
                                                                       strict=True)])
        order = np.argsort(rows, kind="stable")
        same = np.flatnonzero(rows[order][1:] == rows[order][:-1])
        if same.size:
            a, b = lanes[order][same[0]], lanes[order][same[0] + 1]
            raise FormatError(f"lanes {int(a)} and {int(b)} of {what} both serve PE row "
                              f"{int(rows[order][same[0]])} of '{kern.name}': ribbons of one "
                              "cut serve each row once")


def _rows_of(p: Program, bi: int) -> np.ndarray:
    """(lanes, rows each serves): the PE rows (unrotated) of its sink each
    lane of cut bundle bi delivers to, its landing row and its spine's."""
    kern = p.kernels[int(p.bundles[bi]["sink"])]
    b = to_bundle(p, bi)
    _, land = endpoints(b)
    py = land[:, 0] - kern.rect.x if kern.rotated else land[:, 1] - kern.rect.y
    if not b.spine:
        return py[:, None]
    sx, sy = spine_dir(b)
    return py[:, None] + (sx if kern.rotated else sy) * np.arange(b.spine + 1)[None, :]


def expand_routes(p: Program) -> np.ndarray:
    """The router table (ROUTE_DTYPE, sorted by (x, y, color)) of every bundle
    lane by lane and every kernel's template placed at its rectangle."""
    parts = []
    for bi, r in enumerate(p.bundles):
        flags = int(r["flags"])
        ex = expand(to_bundle(p, bi), bool(flags & BUNDLE_FROM_HOST),
                    bool(flags & BUNDLE_TO_HOST))
        rec = np.zeros(ex.x.size, ROUTE_DTYPE)
        rec["x"], rec["y"], rec["color"] = ex.x, ex.y, int(r["color"])
        rec["rx"], rec["tx"], rec["edge"], rec["bundle"], rec["lane"] = (
            ex.rx, ex.tx, int(r["edge"]), bi, ex.lane)
        parts.append(rec)
    for ki in halo_sinks(p):  # every PE column of a sink exchanging halos (wsec.ir.halo)
        k = p.kernels[ki]
        uw, uh = k.unrotated_shape
        period = min(int(p.halo(bi).period) for bi in np.flatnonzero(
            (p.bundles["sink"] == ki) & ((p.bundles["flags"] & BUNDLE_HALO) != 0)))
        ent, _ = halo_entries(uw, uh, period, halo_colors(p.target))
        at = place(ent, k.rect.x, k.rect.y, k.rotated)
        rec = np.zeros(at.shape[0], ROUTE_DTYPE)
        rec["x"], rec["y"], rec["color"], rec["rx"], rec["tx"] = at.T
        rec["edge"], rec["bundle"], rec["lane"] = NO_BUNDLE, NO_BUNDLE, ki
        parts.append(rec)
    for ki, sends in relay_sinks(p).items():  # one relay per kernel (wsec.ir.relay)
        k = p.kernels[ki]
        uw, uh = k.unrotated_shape
        ent, _ = relay_entries(uw, uh, sends > 0, relay_colors(p.target))
        at = place(ent, k.rect.x, k.rect.y, k.rotated)
        rec = np.zeros(at.shape[0], ROUTE_DTYPE)
        rec["x"], rec["y"], rec["color"], rec["rx"], rec["tx"] = at.T
        rec["edge"], rec["bundle"], rec["lane"] = NO_BUNDLE, NO_BUNDLE, ki
        parts.append(rec)
    temps = p.info.get("templates", [])
    for ki, k in enumerate(p.kernels):
        if k.template < 0:
            continue
        t = temps[k.template]
        ent = p.templates[int(t["entry0"]):int(t["entry0"]) + int(t["entries"])]
        raw = np.stack([ent[f].astype(np.int64) for f in ("px", "py", "color", "rx", "tx")],
                       axis=1)
        at = place(raw, k.rect.x, k.rect.y, k.rotated)
        rec = np.zeros(at.shape[0], ROUTE_DTYPE)
        rec["x"], rec["y"], rec["color"], rec["rx"], rec["tx"] = at.T
        rec["edge"], rec["bundle"], rec["lane"] = NO_BUNDLE, NO_BUNDLE, ki
        parts.append(rec)
    out = np.concatenate(parts) if parts else np.zeros(0, ROUTE_DTYPE)
    if not out.size:
        return out
    key = np.zeros(out.size, np.int64)  # (x, y, color) as one key: a stable sort of it is
    for f in ("x", "y", "color"):  # the lexsort's order, several times faster
        v = out[f].astype(np.int64)
        lo = int(v.min())
        key = key * (int(v.max()) - lo + 1) + (v - lo)
    return out[np.argsort(key, kind="stable")]


def halo_sinks(p: Program) -> list[int]:
    """The kernels (indices) a bundle cut "halo" runs into, once each."""
    halo = (p.bundles["flags"].astype(np.int64) & BUNDLE_HALO) != 0 if len(p.bundles) else []
    return sorted({int(p.bundles[bi]["sink"]) for bi in np.flatnonzero(halo)})


def route_shares(p: Program, routes: np.ndarray | None = None) -> np.ndarray:
    """Per router-table record, what its lane carries (wsec.ir.metrics
    .share_key: edge, lanes, lane), -1 for a kernel template's records."""
    r = p.routes if routes is None else routes
    lanes = r["bundle"] != NO_BUNDLE
    out = np.full(r.size, -1, np.int64)
    if lanes.any() and len(p.bundles):
        nl = np.asarray(p.bundles["lanes"], dtype=np.int64)
        bi = r["bundle"][lanes].astype(np.int64)
        ln = r["lane"][lanes].astype(np.int64)
        cut = (p.bundles["flags"].astype(np.int64) & BUNDLE_CUT) != 0
        out[lanes] = np.where(cut[bi], cut_share_key(0, 0) | (bi << 20) | ln,
                              share_key(r["edge"][lanes].astype(np.int64), nl[bi], ln))
    return out


def conflicting(p: Program, a: np.ndarray, b: np.ndarray, routes: np.ndarray | None = None
                ) -> np.ndarray:
    """For pairs of records (a[i], b[i]) on the same PE and color: whether
    they are two routes. Lanes carrying the same slice of one value in from
    the same port are one multicast route (the router sends the wavelet on
    to every port either sends to); anything else is two."""
    r = p.routes if routes is None else routes
    sh = route_shares(p, r)
    return ~((sh[a] >= 0) & (sh[a] == sh[b]) & (r["rx"][a] == r["rx"][b]))

