"""Per-PE execution of the anchors the executors once rejected, in both
modes (tests/sim_zoo.py `gaps_model`): bool reductions, reductions to and
of 0-d tensors, int8 MaxPool, Einsums of three and four operands (chains
of two-operand Einsums), LayerNormalization / BatchNormalization whose
scale or variance another kernel computes, LRN, Resize computing each
output-row group from the input rows it holds, and a 3-D ConvTranspose
(depth planes folded into the 2-D mapping).

Each is checked against onnxruntime (bool and integer outputs exactly) and,
kernel by kernel, against the reference semantics on the same inputs; the
faults (a lane dropped or misdirected, a row group's window shortened or
two groups' windows swapped, one PE's SRAM shard or streamed tile
corrupted) change the answer or raise at that PE.
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import replace

import numpy as np
import pytest
import sim_zoo
from test_sim_faults import (
    MODES,
    _compile_modes,
    _corrupt_pe_shard,
    _differs_or_raises,
    _drop_lane_0,
    _load_modes,
    _misdirect_lane_0,
    _run,
    _run_check_cli,
    _shorten_rows,
    _swap_rows,
)
from wsec.backends import sim_resample
from wsec.backends.format import PORT_BITS, Program
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.backends.sim_exec import reference_kernel
from wsec.backends.sim_pe import SramImages
from wsec.run import compare, onnx_reference


@pytest.fixture(scope="module")
def gaps_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("gaps")
    sim_zoo.gaps_model(d / "gaps.onnx")
    _compile_modes(d, d / "gaps.onnx")
    return d


@pytest.fixture(scope="module")
def gaps(gaps_dir: pathlib.Path) -> dict[str, Program]:
    return _load_modes(gaps_dir)


def _inputs(p: Program, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs; int8 over its whole range but -128 (whose negation
    wraps), floats in steps of 1/2 (a pooling window often holds its
    maximum twice, a bool reduction meets rows of one value)."""
    rng = np.random.default_rng(seed)
    x = random_inputs(p, seed)
    for n, v in x.items():
        if np.issubdtype(v.dtype, np.floating):
            x[n] = np.asarray(np.round(v * 2) / 2, v.dtype)  # 0-d stays an array
        elif v.dtype == np.int8:
            x[n] = rng.integers(-127, 128, v.shape).astype(np.int8)
    return x


# key -> the output of its kernel
CASES = {
    "bool_any": "bmax", "bool_all": "bmin", "sum_to_0d": "ssum", "max_of_0d": "smax",
    "int8_maxpool": "p8", "einsum3_first": "e3", "einsum4_const": "e4",
    "layernorm_computed_scale": "lnv", "batchnorm_computed_var": "bnv", "lrn": "lrn",
    "resize_rows": "rz", "deconv_3d": "dc3",
}


def _case(p: Program, key: str) -> int:
    out = CASES[key]
    for ki, k in enumerate(p.kernels):
        if out in k.outputs:
            return ki
    raise AssertionError(f"the gaps model has no kernel for {key}")


def _pair(p: Program, out: str, weight: str) -> int:
    """The kernel of a chain of Einsums that holds `weight` (on the way to `out`)."""
    for ki, k in enumerate(p.kernels):
        if weight in k.weights and k.body[0]["op"] == "Einsum":
            return ki
    raise AssertionError(f"no Einsum kernel of {out} holds %{weight}")


@pytest.mark.parametrize("mode", MODES)
def test_gaps_match_onnxruntime_and_the_reference(gaps: dict[str, Program],
                                                  gaps_dir: pathlib.Path, mode: str) -> None:
    p = gaps[mode]
    assert mode in p.info["mode"]
    x = _inputs(p, 1)
    res = simulate(p, x, keep=True)
    want, _ = onnx_reference(str(gaps_dir / "gaps.onnx"), x)
    assert set(want) == set(res.outputs)
    for n, ref in want.items():
        got = res.outputs[n]
        assert got.shape == ref.shape, n
        if not np.issubdtype(ref.dtype, np.floating):
            assert got.dtype == ref.dtype and np.array_equal(got, ref), n
        else:
            assert compare(n, got, ref).ok, n
    mem = SramImages(p)
    for ki, k in enumerate(p.kernels):
        assert res.kernel_stats[k.name]["whole_tensor_ops"] == 0, k.name
        io = res.kernel_io[k.name]
        ref = reference_kernel(mem, ki, io.inputs)
        for o in k.outputs:
            assert compare(o, io.outputs[o], ref[o]).ok, (k.name, o)
    for key in CASES:
        k = p.kernels[_case(p, key)]
        assert all(o in res.kernel_io[k.name].owner for o in k.outputs), key
    # the bool reductions reduce the bool tensor itself (no casts around them)
    for key in ("bool_any", "bool_all"):
        k = p.kernels[_case(p, key)]
        assert k.kind == "reduce" and p.info["values"][k.inputs[0]].startswith("bool"), key
    # the Einsums of three and four operands run as chains of two-operand ones
    assert sum(k.body[0]["op"] == "Einsum" for k in p.kernels) == 5


@pytest.mark.parametrize("mode", MODES)
def test_gaps_run_check_cli(gaps: dict[str, Program], gaps_dir: pathlib.Path,
                            mode: str) -> None:
    _run_check_cli(gaps[mode], gaps_dir / f"{mode}.bin", gaps_dir / "gaps.onnx")


def test_zero_d_sum_combines_partials_along_a_chain(gaps: dict[str, Program]) -> None:
    """Streamed, the sizing splits the sum to a 0-d tensor over a chain of
    PEs: its one output is the last of the chain's partials."""
    p = gaps["stream"]
    k = p.kernels[_case(p, "sum_to_0d")]
    res = simulate(p, _inputs(p), keep=True)
    assert res.kernel_io[k.name].outputs["ssum"].shape == ()
    assert res.kernel_stats[k.name]["sharded_pes"] > 1


# --- lanes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("key", sorted(CASES))
def test_gaps_misdirected_lane(gaps: dict[str, Program], key: str) -> None:
    p = gaps["pipeline"]
    _misdirect_lane_0(p, _case(p, key), beside=True)


@pytest.mark.parametrize("key", sorted(CASES))
def test_gaps_dropped_lane(gaps: dict[str, Program], key: str) -> None:
    p = gaps["pipeline"]
    _drop_lane_0(p, _case(p, key))


@pytest.mark.parametrize("key,value", [("layernorm_computed_scale", "gr"),
                                       ("batchnorm_computed_var", "va")])
def test_computed_norm_operand_dropped_lane(gaps: dict[str, Program], key: str,
                                            value: str) -> None:
    """The lane carrying the computed scale (variance) into the norm never
    lands: the error names that lane, its edge (the scale's) and the PE."""
    p = gaps["pipeline"]
    ki = _case(p, key)
    b = p.bundles
    bi = next(i for i in range(len(b)) if int(b["sink"][i]) == ki
              and p.edges[int(b["edge"][i])].value == value)
    r = p.routes.copy()
    lane = np.flatnonzero((r["bundle"] == bi) & (r["lane"] == 0))
    r["tx"][lane] &= ~np.uint8(PORT_BITS["RAMP"])
    with pytest.raises(SimError, match=rf"lane 0 of edge #\d+ %{value} .* never reaches "
                                       rf"'{p.kernels[ki].name}'; it ends at PE \("):
        simulate(replace(p, routes=r), random_inputs(p))


# --- halos and row windows -----------------------------------------------------------------
WINDOW_CASES = [("int8_maxpool", "pool"), ("deconv_3d", "deconv")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key,kind", WINDOW_CASES)
def test_shortened_halo_is_an_error_at_its_pe(gaps: dict[str, Program], mode: str, key: str,
                                               kind: str, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    """int8 MaxPool and 3-D ConvTranspose: row group 1 loses a halo row."""
    p = gaps[mode]
    ki = _case(p, key)
    k = p.kernels[ki]
    assert int(k.knobs["s"]) > 1 and (kind != "deconv" or int(k.knobs["c"]) > 1)
    _shorten_rows(monkeypatch, kind, 1, k.dims)
    with pytest.raises(SimError) as ex:
        _run(p, ki)
    msg = str(ex.value)
    assert f"kernel '{k.name}' ({kind}): PE (" in msg
    assert "never arrived" in msg or "row group 1" in msg


@pytest.mark.parametrize("key,kind", WINDOW_CASES)
def test_swapped_row_windows_are_an_error_at_a_pe(gaps: dict[str, Program], key: str,
                                                  kind: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    p = gaps["pipeline"]
    ki = _case(p, key)
    k = p.kernels[ki]
    _swap_rows(monkeypatch, kind, k.dims)
    with pytest.raises(SimError, match=rf"kernel '{k.name}' \({kind}\).* PE \(\d+, \d+\)"):
        _run(p, ki)


def _resize_window(monkeypatch: pytest.MonkeyPatch, group: int, rows: int) -> None:
    """Resize row group `group` holds only the first `rows` rows of its
    window (the rows its taps read: wsec.ir.library_pool.tap_windows)."""
    fn = sim_resample.tap_windows

    def cut(*args: object) -> np.ndarray:
        win = fn(*args).copy()  # type: ignore[arg-type]
        win[group, 1] = min(win[group, 1], win[group, 0] + rows)
        return win

    monkeypatch.setattr(sim_resample, "tap_windows", cut)


@pytest.mark.parametrize("mode", MODES)
def test_resize_row_group_reads_only_its_window(gaps: dict[str, Program], mode: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Row group 1 of the Resize holds one input row of its window: its PE
    raises, naming the element it needed and (routed) the lane carrying it."""
    p = gaps[mode]
    ki = _case(p, "resize_rows")
    k = p.kernels[ki]
    assert int(k.knobs["s"]) > 1
    clean = _run(p, ki)["rz"]
    _resize_window(monkeypatch, 1, 1)
    with pytest.raises(SimError) as ex:
        _run(p, ki)
    msg = str(ex.value)
    assert re.search(rf"kernel '{k.name}' \(resize\): PE \(\d+, \d+\) \(offset \(0, 1\)\) "
                     rf"reads %r\[0, 0, \d+, 0\], which never arrived", msg), msg
    if mode == "pipeline":
        assert " carries it" in msg
    monkeypatch.undo()
    # the whole window is what it needs: held, the answer is as before
    assert np.array_equal(_run(p, ki)["rz"], clean)


def test_resize_swapped_row_windows(gaps: dict[str, Program],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The first and the last row group hold each other's windows (the
    windows of neighbouring groups overlap by the taps' halo)."""
    p = gaps["pipeline"]
    ki = _case(p, "resize_rows")
    k = p.kernels[ki]
    last = int(k.knobs["s"]) - 1
    assert last > 0
    fn = sim_resample.tap_windows

    def swapped(*args: object) -> np.ndarray:
        win = fn(*args).copy()  # type: ignore[arg-type]
        win[[0, last]] = win[[last, 0]]
        return win

    monkeypatch.setattr(sim_resample, "tap_windows", swapped)
    with pytest.raises(SimError, match=rf"kernel '{k.name}' \(resize\): PE \(\d+, \d+\)"):
        _run(p, ki)


def test_resize_rows_held_are_a_window(gaps: dict[str, Program]) -> None:
    """Each row group holds a window of the input rows, not all of them."""
    p = gaps["stream"]
    k = p.kernels[_case(p, "resize_rows")]
    res = simulate(p, _inputs(p), keep=True)
    assert 0 < res.kernel_stats[k.name]["rows_held_max"] < int(k.dims["H"])


# --- SRAM ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_einsum_chain_corrupt_one_pe_shard(gaps: dict[str, Program], mode: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """One PE of the Einsum holding the constant operand of the four-operand
    Einsum has a corrupted shard (resident blob or streamed tile)."""
    p = gaps[mode]
    ki = _pair(p, "e4", "ew")
    k = p.kernels[ki]
    clean = _run(p, ki)
    _corrupt_pe_shard(monkeypatch, ki, k.weights.index("ew"), 0, 0)
    msg = _differs_or_raises(p, ki, clean)
    assert not msg or f"kernel '{k.name}'" in msg


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key,const", [("layernorm_computed_scale", "bb"),
                                       ("batchnorm_computed_var", "bnb")])
def test_computed_norm_corrupt_one_pe_shard(gaps: dict[str, Program], mode: str, key: str,
                                            const: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The norm's constant operand (bias) corrupted on the PE owning the
    output's last element: that element changes, the computed scale is read
    as delivered."""
    p = gaps[mode]
    ki = _case(p, key)
    k = p.kernels[ki]
    x = _inputs(p, 2)
    res = simulate(p, x, keep=True)
    out = k.outputs[0]
    clean = res.kernel_io[k.name].outputs[out]
    owner = np.broadcast_to(res.kernel_io[k.name].owner[out], clean.shape)
    py, px = divmod(int(owner.reshape(-1)[-1]), k.unrotated_shape[0])
    _corrupt_pe_shard(monkeypatch, ki, k.weights.index(const), py, px)
    got = simulate(p, x, keep=True).kernel_io[k.name].outputs[out]
    assert got.reshape(-1)[-1] != clean.reshape(-1)[-1]
    mine = owner == owner.reshape(-1)[-1]
    assert np.array_equal(got[~mine], clean[~mine])  # the other PEs' elements stay


# --- the 3-D transposed conv ---------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_deconv_3d_corrupt_one_pe_shard(gaps: dict[str, Program], mode: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """PE (px, py) holds a corrupted weight shard (resident or streamed): the
    output channels of its column px change, the other columns' do not."""
    p = gaps[mode]
    ki = _case(p, "deconv_3d")
    k = p.kernels[ki]
    clean = _run(p, ki)["dc3"]
    px = int(k.knobs["k"]) - 1
    _corrupt_pe_shard(monkeypatch, ki, k.weights.index("dw"), 0, px)
    got = _run(p, ki)["dc3"]
    kb = -(-clean.shape[1] // int(k.knobs["k"]))
    mine = np.arange(clean.shape[1]) // kb == px
    assert not np.allclose(got[:, mine], clean[:, mine])
    assert np.array_equal(got[:, ~mine], clean[:, ~mine])
