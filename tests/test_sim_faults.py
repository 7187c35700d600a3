"""Fault injection, kind by kind: the simulator computes each kernel per PE
from what its routes delivered and its own SRAM, so a fault at one PE
changes the kernel's answer or raises a SimError naming that PE.

Faults: one PE's SRAM shard corrupted; two PEs' roles (shards, row
windows) swapped; one lane into the kernel dropped or misdirected; one
row group's halo shortened (an LRN channel group's window of neighbour
channels). The kernels come from small models (tests/sim_zoo.py) that
cover every kind with a body and every anchor op of the kinds that are not
chains; the `ops` model's kernels are also checked against onnxruntime.
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import replace

import numpy as np
import pytest
import sim_zoo
from wsec.backends.emit import write_binary
from wsec.backends.format import PORT_BITS, Program
from wsec.backends.loader import load_binary
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.backends.sim_exec import PER_PE
from wsec.backends.sim_pe import Layout, SramImages
from wsec.driver import CompileOptions, compile_model
from wsec.ir.kernels import KINDS
from wsec.run import compare

# the library's kinds with a body (tests register kinds of their own into KINDS)
BODY_KINDS = sorted(n for n, k in KINDS.items()
                    if k.has_body and type(k).__module__.startswith("wsec.ir."))
ZOO_KINDS = BODY_KINDS
ZOO_MODELS = ("cnn", "attn", "shapes", "ops", "ops_routed")
MODES = ("pipeline", "stream")
WINDOWED = ("conv", "pool", "deconv")  # row groups holding input rows plus a halo


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("zoo")
    for name in ZOO_MODELS:
        model = d / f"{name}.onnx"
        getattr(sim_zoo, f"{name}_model")(model)
        res = compile_model(str(model), CompileOptions())
        write_binary(res.module, str(d / f"{name}.bin"))
    return d


@pytest.fixture(scope="module")
def zoo(zoo_dir: pathlib.Path) -> dict[str, Program]:
    return {name: load_binary(str(zoo_dir / f"{name}.bin")) for name in ZOO_MODELS}


def _kernel(zoo: dict[str, Program], kind: str, weights: bool = False,
            windowed: bool = False, routed: bool = False) -> tuple[Program, int]:
    for p in zoo.values():
        for ki, k in enumerate(p.kernels):
            if k.kind != kind or (weights and not _weight_pes(p, ki)):
                continue
            if routed and not (p.bundles["sink"] == ki).any():
                continue  # its inputs come from the host, not by lanes
            if windowed and int(k.knobs.get("s", 1)) < 2:
                continue
            return p, ki
    raise AssertionError(f"the zoo has no {kind} kernel")


def _weight_pes(p: Program, ki: int) -> list[int]:
    """Weights of kernel ki whose PEs hold different shards."""
    mem = SramImages(p)
    out = []
    for wi in range(len(p.kernels[ki].weights)):
        if np.unique(mem.layout(ki, wi).blob).size > 1:
            out.append(wi)
    return out


# The zoo's kernels check each PE's shard, not its inbox: some of its operands (a
# batched matmul's B, ...) come on flat lanes into kinds that declare no per-row box of
# them, which no relay deals (wsec.ir.relay): their PEs are counted, not proven
ZOO_STRICT = False


def _run(p: Program, ki: int) -> dict[str, np.ndarray]:
    x = random_inputs(p, 0)
    return simulate(p, x, keep=True, strict=ZOO_STRICT).kernel_io[p.kernels[ki].name].outputs


def _differs_or_raises(p: Program, ki: int, clean: dict[str, np.ndarray]) -> str:
    try:
        got = _run(p, ki)
    except SimError as e:
        return str(e)
    assert any(not compare(n, got[n], clean[n]).ok for n in clean), \
        f"the fault left kernel {p.kernels[ki].name} ({p.kernels[ki].kind}) unchanged"
    return ""


def test_every_kind_has_a_per_pe_executor(zoo: dict[str, Program]) -> None:
    assert set(BODY_KINDS) <= set(PER_PE), sorted(set(BODY_KINDS) - set(PER_PE))
    for p in zoo.values():
        res = simulate(p, random_inputs(p), keep=True, strict=ZOO_STRICT)
        for k in p.kernels:
            assert res.kernel_stats[k.name]["whole_tensor_ops"] == 0, (k.name, k.kind)
    kinds = {k.kind for p in zoo.values() for k in p.kernels}
    assert kinds == set(ZOO_KINDS)
    # every anchor op of a kind that is not a chain ran per PE in the zoo (the
    # chain kinds run any element-wise op / trace any movement: below)
    anchors = {(k.kind, k.body[0]["op"]) for p in zoo.values() for k in p.kernels}
    want = {(n, op) for n in BODY_KINDS if n not in ("elementwise", "datamove")
            for op in KINDS[n].ops}
    assert want <= anchors, sorted(want - anchors)


def test_every_fused_op_has_a_per_pe_executor() -> None:
    """What form-kernels can fuse after an anchor, and what the chain kinds
    hold, is what the executors run per PE: element-wise ops on their owners
    (sim_tail, Trilu by position), views of a matmul, a conv's pooling, the
    ops of a decomposed LayerNorm; a combining scatter (sim_scatter)."""
    from wsec.backends import sim_exec, sim_tail
    from wsec.backends.sim_scatter import SCATTERS
    from wsec.ir.library_common import ELEMENTWISE_OPS
    from wsec.ir.library_conv import FUSED_POOLS
    from wsec.ir.library_dense import VIEW_OPS
    from wsec.ir.library_rowwise import DECOMPOSED_LN
    from wsec.passes.form_kernels import ANCHOR_FUSES

    assert ANCHOR_FUSES <= ELEMENTWISE_OPS
    assert KINDS["elementwise"].ops <= ELEMENTWISE_OPS
    assert ELEMENTWISE_OPS & {"Trilu"} <= sim_tail._POSITIONAL
    assert VIEW_OPS <= sim_exec._VIEWS
    assert FUSED_POOLS <= {"MaxPool", "AveragePool"}  # sim_rows.fused_pool
    assert DECOMPOSED_LN - {"ReduceMean"} <= ELEMENTWISE_OPS
    assert {"ScatterND", "ScatterElements"} & KINDS["datamove"].ops <= SCATTERS


def test_no_whole_tensor_fallback(zoo: dict[str, Program],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An op no executor runs per PE is an error naming it, never evaluated
    on the whole tensor by the reference semantics."""
    p, ki = _kernel(zoo, "norm")
    k = p.kernels[ki]
    monkeypatch.setitem(PER_PE, "norm", lambda env, body, stats: 0)
    with pytest.raises(SimError, match=rf"kernel '{k.name}' \(norm\): op '.*' \("
                                       rf"{k.body[0]['op']}\) cannot be simulated per PE"):
        _run(p, ki)


# --- SRAM: one PE's shard ------------------------------------------------------------
def _patch_layout(monkeypatch: pytest.MonkeyPatch, ki: int, wi: int,
                  edit: callable) -> None:  # type: ignore[valid-type]
    """Edit the layout of kernel ki's weight wi, resident or streamed."""
    from wsec.backends.sim_stream_pe import StreamImages

    for cls in (SramImages, StreamImages):
        orig = cls.__dict__["layout"]

        def layout(self: SramImages, k: int, w: int, orig=orig) -> Layout:  # noqa: ANN001
            lay = orig(self, k, w)
            return edit(self, lay) if (k, w) == (ki, wi) else lay

        monkeypatch.setattr(cls, "layout", layout)


def _patch_blob(monkeypatch: pytest.MonkeyPatch, fake: int, held: dict[str, int]) -> None:
    """Blob `fake` reads as blob held["blob"] plus one, resident or streamed."""
    from wsec.backends.sim_stream_pe import StreamImages

    for cls in (SramImages, StreamImages):
        orig = cls.__dict__["blob"]

        def blob(self: SramImages, bi: int, orig=orig) -> np.ndarray:  # noqa: ANN001
            return orig(self, held["blob"]) + 1 if bi == fake else orig(self, bi)

        monkeypatch.setattr(cls, "blob", blob)


def _corrupt_pe_shard(monkeypatch: pytest.MonkeyPatch, ki: int, wi: int, py: int,
                      px: int) -> None:
    """PE (px, py) of kernel ki holds a corrupted copy of its shard of weight
    wi (a blob of its own, under a code no other PE shares)."""
    fake = 1 << 40  # no blob or streamed tile has this index
    held: dict[str, int] = {}

    def edit(self: SramImages, lay: Layout) -> Layout:
        blob, code = lay.blob.copy(), lay.code.copy()
        held["blob"] = int(blob[py, px])
        blob[py, px], code[py, px] = fake, code.max() + 1
        return Layout(blob, lay.start, lay.stop, code)

    _patch_layout(monkeypatch, ki, wi, edit)
    _patch_blob(monkeypatch, fake, held)


@pytest.mark.parametrize("kind", ["conv", "matmul", "deconv", "norm", "gather", "resize"])
def test_corrupt_one_pe_shard(zoo: dict[str, Program], kind: str,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    p, ki = _kernel(zoo, kind)
    clean = _run(p, ki)
    wi = (_weight_pes(p, ki) or [0])[0]
    fake = len(p.blobs) + 1
    orig_blob = SramImages.blob
    held: dict[str, int] = {}

    def edit(self: SramImages, lay: Layout) -> Layout:
        blob, code = lay.blob.copy(), lay.code.copy()
        held["blob"] = int(blob[0, 0])
        blob[0, 0], code[0, 0] = fake, code.max() + 1
        return Layout(blob, lay.start, lay.stop, code)

    def blob(self: SramImages, bi: int) -> np.ndarray:
        if bi == fake:
            return orig_blob(self, held["blob"]) + 1
        return orig_blob(self, bi)

    _patch_layout(monkeypatch, ki, wi, edit)
    monkeypatch.setattr(SramImages, "blob", blob)
    msg = _differs_or_raises(p, ki, clean)
    if msg:  # a replicated constant: the PEs' copies disagree
        assert p.kernels[ki].name in msg


# --- roles: two PEs swapped ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["conv", "matmul", "deconv", "norm", "gather"])
def test_swap_two_pes_shards(zoo: dict[str, Program], kind: str,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    p, ki = _kernel(zoo, kind, weights=True)
    clean = _run(p, ki)
    wi = _weight_pes(p, ki)[0]

    def edit(self: SramImages, lay: Layout) -> Layout:
        blob, code = lay.blob.copy(), lay.code.copy()
        flat = blob.reshape(-1)
        a = 0
        b = next(i for i in range(flat.size) if flat[i] != flat[a]
                 and self.blob(int(flat[i])).size == self.blob(int(flat[a])).size
                 and not np.array_equal(self.blob(int(flat[i])), self.blob(int(flat[a]))))
        for arr in (blob, code):
            v = arr.reshape(-1)
            v[a], v[b] = v[b], v[a]
        return Layout(blob, lay.start, lay.stop, code)

    _patch_layout(monkeypatch, ki, wi, edit)
    _differs_or_raises(p, ki, clean)


# --- halos -----------------------------------------------------------------------------
def _shorten_rows(monkeypatch: pytest.MonkeyPatch, kind: str, group: int,
                  dims: dict | None = None) -> None:
    """Row group `group` of the kind's kernels (those of `dims` only, if
    given) keeps one input row less: a shortened halo."""
    fn = type(KINDS[kind]).input_rows

    def shortened(self: object, d: dict, knobs: dict, g: int) -> tuple[int, int]:
        a, b = fn(self, d, knobs, g)  # type: ignore[arg-type]
        return (a, b - 1) if g == group and dims in (None, d) else (a, b)

    monkeypatch.setattr(type(KINDS[kind]), "input_rows", shortened)


def _swap_rows(monkeypatch: pytest.MonkeyPatch, kind: str, dims: dict | None = None) -> None:
    """Row groups 0 and 1 of the kind's kernels (those of `dims` only, if
    given) read each other's input rows."""
    fn = type(KINDS[kind]).input_rows

    def swapped(self: object, d: dict, knobs: dict, g: int) -> tuple[int, int]:
        g = {0: 1, 1: 0}.get(g, g) if dims in (None, d) else g
        return fn(self, d, knobs, g)  # type: ignore[arg-type]

    monkeypatch.setattr(type(KINDS[kind]), "input_rows", swapped)


@pytest.mark.parametrize("kind", WINDOWED)
def test_swap_two_row_groups_windows(zoo: dict[str, Program], kind: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    p, ki = _kernel(zoo, kind, windowed=True)
    k = p.kernels[ki]
    _swap_rows(monkeypatch, kind)
    with pytest.raises(SimError, match=rf"kernel '{k.name}' \({kind}\).* PE \(\d+, \d+\)"):
        _run(p, ki)


@pytest.mark.parametrize("kind", WINDOWED)
def test_shortened_halo_is_an_error_at_that_pe(zoo: dict[str, Program], kind: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    p, ki = _kernel(zoo, kind, windowed=True)
    k = p.kernels[ki]
    short = 1  # the second row group keeps one row less of its halo
    _shorten_rows(monkeypatch, kind, short)
    with pytest.raises(SimError) as ex:
        _run(p, ki)
    msg = str(ex.value)
    assert f"kernel '{k.name}' ({kind}): PE (" in msg
    if "never arrived" in msg:  # an input row: named with its element and the lane carrying it
        assert " carries it" in msg and f"%{k.inputs[0]}[" in msg
    else:  # a zero row of the padding or the stride's dilation
        assert f"row group {short}" in msg


# --- lanes: dropped, misdirected ----------------------------------------------------------
def _lane_into(p: Program, ki: int) -> np.ndarray:
    """Route entries of lane 0 of the first bundle into kernel ki."""
    bi = next(b for b in range(len(p.bundles)) if int(p.bundles["sink"][b]) == ki)
    r = p.routes
    return np.flatnonzero((r["bundle"] == bi) & (r["lane"] == 0))


@pytest.mark.parametrize("kind", ZOO_KINDS)
def test_dropped_lane_never_reaches_the_kernel(zoo: dict[str, Program], kind: str) -> None:
    _drop_lane_0(*_kernel(zoo, kind, routed=True))


def _misdirect_lane_0(p: Program, ki: int, beside: bool = False) -> None:
    """Lane 0 into kernel ki turns North where it should land in the core:
    the simulator names that lane and the PE (a cut lane: the PE reads
    what that lane should have brought and holds none), or the PE North of it when
    that one has a route on the lane's color that does not take it (lane 1
    of a kernel one PE wide); with `beside`, any PE next to it (the lane
    may run into a multicast branch of the same edge there)."""
    r = p.routes.copy()
    lane = _lane_into(p, ki)
    land = lane[np.flatnonzero((r["tx"][lane] & PORT_BITS["RAMP"]) != 0)][0]
    r["tx"][land] = PORT_BITS["N"]
    x, y = int(r["x"][land]), int(r["y"][land])
    with pytest.raises(SimError) as ex:
        simulate(replace(p, routes=r), random_inputs(p))
    msg = str(ex.value)
    if beside:
        m = (re.search(r"lane 0 of edge #\d+ .*?PE \((\d+), (\d+)\)", msg)
             or re.search(r"PE \((\d+), (\d+)\) .*lane 0 of edge #\d+ .*the PE holds no lane",
                          msg))
        assert m and abs(int(m[1]) - x) + abs(int(m[2]) - y) <= 1, (msg, x, y)
    else:
        assert re.search(rf"lane 0 of edge #\d+ .*(PE \({x}, {y}\)|"
                         rf"arrives at PE \({x}, {y + 1}\) .* from S)|"
                         rf"PE \({x}, {y}\) .*lane 0 of edge #\d+ .*the PE holds no lane",
                         msg), msg


def _drop_lane_0(p: Program, ki: int) -> None:
    """Lane 0 into kernel ki never lands: the simulator says where it ends,
    or, for a pitched lane (its landing PE hands it on along the row and
    along its spine, a fork only a delivering PE may make), names the PE
    where it forks without delivering."""
    r = p.routes.copy()
    lane = _lane_into(p, ki)
    r["tx"][lane] &= ~np.uint8(PORT_BITS["RAMP"])
    with pytest.raises(SimError) as ex:
        simulate(replace(p, routes=r), random_inputs(p))
    msg = str(ex.value)
    if re.search(rf"lane 0 of edge #\d+ .* never reaches '{p.kernels[ki].name}'; "
                 rf"it ends at PE \(", msg):
        return
    m = re.search(r"lane 0 of edge #\d+ .* is sent two ways from PE \((\d+), (\d+)\)", msg)
    assert m, msg
    pes = set(zip(r["x"][lane].tolist(), r["y"][lane].tolist(), strict=True))
    assert (int(m[1]), int(m[2])) in pes, msg


def _compile_modes(d: pathlib.Path, model: pathlib.Path) -> None:
    """`model` compiled in both modes into d/pipeline.bin and d/stream.bin
    (the streamed one with its weights embedded)."""
    for mode in MODES:
        res = compile_model(str(model), CompileOptions(mode=mode))
        write_binary(res.module, str(d / f"{mode}.bin"), embed_weights=mode == "stream")


def _load_modes(d: pathlib.Path) -> dict[str, Program]:
    return {mode: load_binary(str(d / f"{mode}.bin")) for mode in MODES}


def _run_check_cli(p: Program, binary: pathlib.Path, model: pathlib.Path) -> None:
    """`wsec run BINARY --check MODEL --per-kernel` passes every kernel and
    every output."""
    from conftest import run_wsec

    r = run_wsec("run", str(binary), "--check", str(model), "--per-kernel", cwd=binary.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAIL" not in r.stdout
    assert "first kernel that differs" not in r.stdout
    assert r.stdout.count("PASS") == len(p.kernels) + len(p.info["outputs"])


@pytest.mark.parametrize("kind", ZOO_KINDS)
def test_misdirected_lane_is_an_error_at_that_pe(zoo: dict[str, Program], kind: str) -> None:
    """Lane 0 turns North where it should land in the kernel's core."""
    _misdirect_lane_0(*_kernel(zoo, kind, routed=True))


# --- wsec run --per-kernel ----------------------------------------------------------------
def test_per_kernel_check_names_kernel_pe_and_element(zoo: dict[str, Program],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from wsec.kernel_check import check_kernels

    p, ki = _kernel(zoo, "softmax")
    k = p.kernels[ki]
    good = PER_PE["softmax"]

    def off_by_one(env, body, stats):  # type: ignore[no-untyped-def]
        n = good(env, body, stats)
        o = env.k.outputs[0]
        if env.k.name == k.name:
            v = env.vals[o].copy()
            v.reshape(-1)[-1] += 1.0
            env.vals[o] = v
        return n

    monkeypatch.setitem(PER_PE, "softmax", off_by_one)
    res = simulate(p, random_inputs(p), keep=True)
    lines: list[str] = []
    assert not check_kernels(p, res, lines.append, 1e-4, 1e-5, compare)
    last = lines[-1]
    assert f"first kernel that differs: '{k.name}' (softmax)" in last
    assert "on PE (" in last and "simulated" in last and "reference" in last


# --- weight streaming: phases on their PEs, weights from the streamed tiles ----------------
@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> Program:
    from conftest import ROOT

    out = tmp_path_factory.mktemp("stream") / "gpt.bin"
    res = compile_model(str(ROOT / "tests" / "fixtures" / "gpt_o14.onnx"),
                        CompileOptions(mode="stream"))
    write_binary(res.module, str(out), embed_weights=True)
    return load_binary(str(out))


def test_stream_phases_run_per_pe_from_streamed_tiles(streamed: Program) -> None:
    from wsec.backends.sim_exec import reference_kernel

    assert "stream" in streamed.info["mode"]
    res = simulate(streamed, random_inputs(streamed), keep=True)
    mem = SramImages(streamed)
    for ki, k in enumerate(streamed.kernels):
        assert res.kernel_stats[k.name]["whole_tensor_ops"] == 0, (k.name, k.kind)
        io = res.kernel_io[k.name]
        ref = reference_kernel(mem, ki, io.inputs)
        for n, v in io.outputs.items():
            assert compare(n, v, ref[n]).ok, (k.name, n)


def test_stream_corrupt_tile_of_one_pe(streamed: Program,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from wsec.backends.sim_stream_pe import StreamImages

    ki = next(i for i, k in enumerate(streamed.kernels) if k.kind == "matmul"
              and k.weights and int(k.knobs["kx"]) * int(k.knobs["ky"]) > 1)
    clean = _run(streamed, ki)
    orig = StreamImages._stream_layout

    def layout(self: StreamImages, k: int, w: int) -> Layout:
        lay = orig(self, k, w)
        if (k, w) != (ki, 0):
            return lay
        bad = self.blob(int(lay.blob[0, 0])) + 1
        self._tiles.append(bad)
        blob = lay.blob.copy()
        blob[0, 0] = len(self._tiles) - 1
        return Layout(blob, lay.start, lay.stop, blob.copy())

    monkeypatch.setattr(StreamImages, "_stream_layout", layout)
    _differs_or_raises(streamed, ki, clean)


def test_run_check_per_kernel_cli(tmp_path: pathlib.Path) -> None:
    from conftest import EXAMPLE, run_wsec

    out = tmp_path / "tiny.bin"
    assert run_wsec(str(EXAMPLE), "-o", str(out), "-q").returncode == 0
    r = run_wsec("run", str(out), "--check", str(EXAMPLE), "--per-kernel", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "per-kernel check against the reference semantics" in r.stdout
    assert sum(ln.strip().startswith("k") and ln.endswith("PASS") for ln in lines) == 7


# --- 1-D and 3-D convs, a pooling fused into a conv ----------------------------------------
def _conv_of_rank(zoo: dict[str, Program], rank: int, fused_pool: bool = False
                  ) -> tuple[Program, int]:
    p = zoo["shapes"]
    for ki, k in enumerate(p.kernels):
        if k.kind != "conv":
            continue
        w = p.info["values"][k.weights[0]]
        if w.count(",") + 1 == rank and (not fused_pool or k.body[-1]["op"] == "MaxPool"):
            return p, ki
    raise AssertionError(f"no rank-{rank} conv in the shapes zoo")


@pytest.mark.parametrize("rank", [3, 5])
def test_conv_1d_3d_shortened_halo(zoo: dict[str, Program], rank: int,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    p, ki = _conv_of_rank(zoo, rank)
    k = p.kernels[ki]
    assert int(k.knobs["s"]) > 1
    _shorten_rows(monkeypatch, "conv", 0, k.dims)
    with pytest.raises(SimError, match=rf"kernel '{k.name}' \(conv\): PE \(\d+, \d+\)"):
        _run(p, ki)


@pytest.mark.parametrize("rank", [3, 5])
def test_conv_1d_3d_corrupt_one_pe_shard(zoo: dict[str, Program], rank: int,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    p, ki = _conv_of_rank(zoo, rank)
    clean = _run(p, ki)
    fake = len(p.blobs) + 1
    orig_blob = SramImages.blob
    held: dict[str, int] = {}

    def edit(self: SramImages, lay: Layout) -> Layout:
        blob, code = lay.blob.copy(), lay.code.copy()
        held["blob"] = int(blob[0, 0])
        blob[0, 0], code[0, 0] = fake, code.max() + 1
        return Layout(blob, lay.start, lay.stop, code)

    _patch_layout(monkeypatch, ki, 0, edit)
    monkeypatch.setattr(SramImages, "blob", lambda self, bi: orig_blob(self, held["blob"]) + 1
                        if bi == fake else orig_blob(self, bi))
    _differs_or_raises(p, ki, clean)


def test_fused_pool_window_beyond_its_row_group(zoo: dict[str, Program],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    p, ki = _conv_of_rank(zoo, 4, fused_pool=True)
    k = p.kernels[ki]
    fn = type(KINDS["conv"]).pool_rows

    def shortened(self: object, dims: dict, knobs: dict, group: int) -> tuple[int, int]:
        a, b = fn(self, dims, knobs, group)  # type: ignore[arg-type]
        halo = int(dims["pR"]) - 1  # the group keeps no rows of the group before it
        return (a + halo, b) if group == 1 and dims == k.dims else (a, b)

    monkeypatch.setattr(type(KINDS["conv"]), "pool_rows", shortened)
    with pytest.raises(SimError, match=rf"kernel '{k.name}' \(conv\): PE \(\d+, \d+\) pools "
                                       r"output row \d+ from conv rows"):
        _run(p, ki)


# --- the executors of the `ops` model's anchors ---------------------------------------------
# key -> (anchor op, what else picks the kernel, the constant a fault corrupts, the output
# element whose owner PE is corrupted (None: the first))
OPS: dict[str, tuple[str, callable, str, tuple[int, ...] | None]] = {  # type: ignore[valid-type]
    "lrn": ("LRN", lambda k: True, "", None),
    "bn_train": ("BatchNormalization", lambda k: k.body[0]["attrs"].get("training_mode"), "sc",
                 None),
    "deconv_grouped": ("ConvTranspose", lambda k: k.body[0]["attrs"].get("group", 1) > 1, "wd",
                       None),
    "einsum_reduce": ("Einsum", lambda k: k.kind == "reduce", "", None),
    "einsum_const": ("Einsum", lambda k: bool(k.weights), "we", None),
    "einsum_act": ("Einsum", lambda k: k.kind == "matmul" and not k.weights, "", None),
    "matmul_batched_b": ("MatMul", lambda k: True, "wb", None),  # run as an Einsum
    "cumsum": ("CumSum", lambda k: True, "ax2", None),
    "scatter_add": ("ScatterND", lambda k: True, "ind", None),
    "scatter_mul": ("ScatterElements", lambda k: True, "ine", None),
    "trilu": ("Trilu", lambda k: True, "tk", (0, 0, 2)),  # on the diagonal k = 1 moves past
    "wgrad_tail": ("Conv", lambda k: k.kind == "conv_wgrad" and len(k.body) > 1, "kw", None),
}


def _op_kernel(zoo: dict[str, Program], key: str, model: str = "ops") -> tuple[Program, int]:
    op, pick, _, _ = OPS[key]
    p = zoo[model]
    for ki, k in enumerate(p.kernels):
        if k.body and k.body[0]["op"] == op and pick(k):
            return p, ki
    raise AssertionError(f"the ops zoo has no kernel for {key}")


def test_ops_zoo_matches_onnxruntime(zoo: dict[str, Program], zoo_dir: pathlib.Path) -> None:
    from wsec.run import onnx_reference

    p = zoo["ops"]
    x = random_inputs(p, 1)
    got = simulate(p, x, strict=ZOO_STRICT).outputs
    want, _ = onnx_reference(str(zoo_dir / "ops.onnx"), x)
    bad = [n for n in want if not compare(n, got[n], want[n]).ok]
    assert not bad and set(want) == set(got), bad


@pytest.mark.parametrize("key", sorted(OPS))
def test_ops_dropped_lane(zoo: dict[str, Program], key: str) -> None:
    _drop_lane_0(*_op_kernel(zoo, key, "ops_routed"))


@pytest.mark.parametrize("key", sorted(OPS))
def test_ops_misdirected_lane(zoo: dict[str, Program], key: str) -> None:
    _misdirect_lane_0(*_op_kernel(zoo, key, "ops_routed"))


@pytest.mark.parametrize("key", sorted(k for k, v in OPS.items() if v[2]))
def test_ops_corrupt_one_pe_shard(zoo: dict[str, Program], key: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The PE owning an output element holds a wrong shard: that element
    changes (or, for a constant every PE must hold alike, the copies
    disagree and the error names the kernel)."""
    p, ki = _op_kernel(zoo, key)
    k = p.kernels[ki]
    wi = k.weights.index(OPS[key][2])
    res = simulate(p, random_inputs(p, 0), keep=True, strict=ZOO_STRICT)
    clean = res.kernel_io[k.name].outputs
    out = k.outputs[0]
    owner = np.broadcast_to(res.kernel_io[k.name].owner[out], clean[out].shape)
    py, px = divmod(int(owner[OPS[key][3] or (0,) * owner.ndim]), k.unrotated_shape[0])
    _corrupt_pe_shard(monkeypatch, ki, wi, py, px)
    msg = _differs_or_raises(p, ki, clean)
    if msg:
        assert f"kernel '{k.name}'" in msg


@pytest.mark.parametrize("key", ["bn_train", "einsum_const", "matmul_batched_b"])
def test_ops_swap_two_pes_shards(zoo: dict[str, Program], key: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    p, ki = _op_kernel(zoo, key)
    clean = _run(p, ki)
    wi = p.kernels[ki].weights.index(OPS[key][2])

    def edit(self: SramImages, lay: Layout) -> Layout:
        blob, code = lay.blob.copy(), lay.code.copy()
        flat = blob.reshape(-1)
        b = next(i for i in range(flat.size) if flat[i] != flat[0]
                 and self.blob(int(flat[i])).size == self.blob(int(flat[0])).size
                 and not np.array_equal(self.blob(int(flat[i])), self.blob(int(flat[0]))))
        for arr in (blob, code):
            v = arr.reshape(-1)
            v[0], v[b] = v[b], v[0]
        return Layout(blob, lay.start, lay.stop, code)

    _patch_layout(monkeypatch, ki, wi, edit)
    _differs_or_raises(p, ki, clean)


def _lrn_windows(monkeypatch: pytest.MonkeyPatch, edit: callable) -> None:  # type: ignore
    fn = type(KINDS["norm"]).input_channels

    def patched(self: object, dims: dict, knobs: dict, group: int) -> tuple[int, int]:
        return edit(fn, self, dims, knobs, group)

    monkeypatch.setattr(type(KINDS["norm"]), "input_channels", patched)


def test_lrn_shortened_channel_window(zoo: dict[str, Program],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Channel group 1 keeps one neighbour channel less above its block."""
    p, ki = _op_kernel(zoo, "lrn")
    k = p.kernels[ki]
    assert int(k.knobs["c"]) > 2
    _lrn_windows(monkeypatch, lambda fn, self, d, kn, g: (
        (fn(self, d, kn, g)[0], fn(self, d, kn, g)[1] - 1) if g == 1 else fn(self, d, kn, g)))
    with pytest.raises(SimError) as ex:
        _run(p, ki)
    msg = str(ex.value)
    assert f"kernel '{k.name}' (norm): PE (" in msg and "never arrived there" in msg
    assert f"%{k.inputs[0]}[" in msg and " carries it" in msg and "channel group 1" in msg


def test_lrn_swapped_channel_windows(zoo: dict[str, Program],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    p, ki = _op_kernel(zoo, "lrn")
    k = p.kernels[ki]
    _lrn_windows(monkeypatch, lambda fn, self, d, kn, g: fn(self, d, kn, {0: 2, 2: 0}.get(g, g)))
    with pytest.raises(SimError, match=rf"kernel '{k.name}' \(norm\): PE \(\d+, \d+\)"):
        _run(p, ki)
