"""Per-PE execution of the anchors the executors once rejected, in both
modes: integer reductions, MaxPool's Indices, LayerNormalization's Mean and
InvStdDev, 3-D pooling with auto_pad SAME_UPPER / SAME_LOWER, Resize with
antialias=1 (tests/sim_zoo.py `cases_model`).

Each is checked against onnxruntime (integer outputs exactly) and, kernel
by kernel, against the reference semantics on the same inputs; the faults
of test_sim_faults (a lane dropped or misdirected, a row group's halo
shortened or two row groups' windows swapped, one PE's SRAM shard or
streamed tile corrupted) change the answer or raise at that PE.
"""

from __future__ import annotations

import pathlib

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
from wsec.backends.format import Program
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.backends.sim_exec import reference_kernel
from wsec.backends.sim_pe import SramImages
from wsec.run import compare, onnx_reference


@pytest.fixture(scope="module")
def cases_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("cases")
    sim_zoo.cases_model(d / "cases.onnx")
    _compile_modes(d, d / "cases.onnx")
    return d


@pytest.fixture(scope="module")
def cases(cases_dir: pathlib.Path) -> dict[str, Program]:
    return _load_modes(cases_dir)


def _inputs(p: Program, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs; integers +-1 and, rarely, +-2: products neither
    vanish nor overflow (where onnxruntime saturates and the reference
    semantics wrap), arg reductions meet ties; floats in steps of 1/2, so
    a pooling window often holds its maximum twice."""
    rng = np.random.default_rng(seed)
    x = random_inputs(p, seed)
    for n, v in x.items():
        if np.issubdtype(v.dtype, np.floating):
            x[n] = np.round(v * 2) / 2
        elif np.issubdtype(v.dtype, np.integer):
            x[n] = rng.choice(np.array([-1, 1, -2, 2], v.dtype), v.shape,
                              p=[0.4, 0.4, 0.1, 0.1])
    return x


# key -> (anchor op, what else picks the kernel)
CASES = {
    "int_sum": ("ReduceSum", lambda k: True),
    "int_prod": ("ReduceProd", lambda k: True),
    "int_mean": ("ReduceMean", lambda k: "q_mean" in k.outputs),
    "int64_l2": ("ReduceL2", lambda k: True),
    "argmax_last": ("ArgMax", lambda k: True),
    "maxpool_indices": ("MaxPool", lambda k: "mp_i" in k.outputs),
    "maxpool_indices_cols": ("MaxPool", lambda k: "mpc_i" in k.outputs),
    "maxpool_indices_1d": ("MaxPool", lambda k: "m1_i" in k.outputs),
    "maxpool_3d_same_upper": ("MaxPool", lambda k: "m3_i" in k.outputs),
    "avgpool_3d_same_lower": ("AveragePool", lambda k: "a3" in k.outputs),
    "avgpool_3d_same_pad_counted": ("AveragePool", lambda k: "a3c" in k.outputs),
    "layernorm_stats": ("LayerNormalization", lambda k: True),
    "resize_antialias_linear": ("Resize", lambda k: "rz" in k.outputs),
    "resize_antialias_cubic": ("Resize", lambda k: "rzc" in k.outputs),
}
WINDOWED = ("maxpool_indices_cols", "maxpool_3d_same_upper", "avgpool_3d_same_lower",
            "avgpool_3d_same_pad_counted")


def _case(p: Program, key: str) -> int:
    op, pick = CASES[key]
    for ki, k in enumerate(p.kernels):
        if k.body and k.body[0]["op"] == op and pick(k):
            return ki
    raise AssertionError(f"the cases model has no kernel for {key}")


@pytest.mark.parametrize("mode", MODES)
def test_cases_match_onnxruntime_and_the_reference(cases: dict[str, Program],
                                                   cases_dir: pathlib.Path, mode: str) -> None:
    p = cases[mode]
    assert mode in p.info["mode"]
    x = _inputs(p, 1)
    res = simulate(p, x, keep=True)
    want, _ = onnx_reference(str(cases_dir / "cases.onnx"), x)
    assert set(want) == set(res.outputs)
    for n, ref in want.items():
        got = res.outputs[n]
        if np.issubdtype(ref.dtype, np.integer):
            assert got.dtype == ref.dtype and np.array_equal(got, ref), n
        else:
            assert compare(n, got, ref).ok, n
    mem = SramImages(p)
    for key in CASES:
        ki = _case(p, key)
        k = p.kernels[ki]
        assert res.kernel_stats[k.name]["whole_tensor_ops"] == 0, key
        io = res.kernel_io[k.name]
        ref = reference_kernel(mem, ki, io.inputs)
        for o in k.outputs:  # every output (Indices, Mean, InvStdDev too) has its PEs
            assert compare(o, io.outputs[o], ref[o]).ok, (key, o)
            assert o in io.owner, (key, o)


@pytest.mark.parametrize("mode", MODES)
def test_cases_run_check_cli(cases: dict[str, Program], cases_dir: pathlib.Path,
                             mode: str) -> None:
    _run_check_cli(cases[mode], cases_dir / f"{mode}.bin", cases_dir / "cases.onnx")


def test_reductions_combine_partials_along_chains(cases: dict[str, Program]) -> None:
    """In both modes the sizing splits some integer reductions over chains
    of PEs, so the checks above combine partials PE to PE (not one PE per
    output)."""
    for mode, p in cases.items():
        res = simulate(p, _inputs(p), keep=True)
        chained = []
        for key in ("int_sum", "int_prod", "int_mean", "int64_l2"):
            k = p.kernels[_case(p, key)]
            out = res.kernel_io[k.name].outputs[k.outputs[0]]
            if res.kernel_stats[k.name]["sharded_pes"] > out.size:
                chained.append(key)
        assert chained, mode


# --- lanes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("key", sorted(CASES))
def test_cases_misdirected_lane(cases: dict[str, Program], key: str) -> None:
    """Lane 0 turns North where it should land in the kernel's core: the
    error names that lane and that PE, or (where the lane then runs into a
    multicast branch of the same edge) the PE next to it."""
    p = cases["pipeline"]
    _misdirect_lane_0(p, _case(p, key), beside=True)


@pytest.mark.parametrize("key", sorted(CASES))
def test_cases_dropped_lane(cases: dict[str, Program], key: str) -> None:
    p = cases["pipeline"]
    _drop_lane_0(p, _case(p, key))


# --- halos and row windows -----------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key", WINDOWED)
def test_cases_shortened_halo(cases: dict[str, Program], key: str, mode: str,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Row group 1 keeps one padded input row less: the PE that reads it
    raises, naming the element and the lane that carried it (or the zero
    row of the padding)."""
    p = cases[mode]
    ki = _case(p, key)
    k = p.kernels[ki]
    assert int(k.knobs["s"]) > 1
    _shorten_rows(monkeypatch, "pool", 1, k.dims)
    with pytest.raises(SimError) as ex:
        _run(p, ki)
    msg = str(ex.value)
    assert f"kernel '{k.name}' (pool): PE (" in msg
    assert "never arrived" in msg or "row group 1" in msg
    if "never arrived" in msg and mode == "pipeline":
        assert " carries it" in msg


@pytest.mark.parametrize("key", WINDOWED)
def test_cases_swapped_row_windows(cases: dict[str, Program], key: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    p = cases["pipeline"]
    ki = _case(p, key)
    k = p.kernels[ki]
    _swap_rows(monkeypatch, "pool", k.dims)
    with pytest.raises(SimError, match=rf"kernel '{k.name}' \(pool\).* PE \(\d+, \d+\)"):
        _run(p, ki)


# --- SRAM: LayerNormalization's scale on one PE ----------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_layernorm_stats_corrupt_one_pe_shard(cases: dict[str, Program], mode: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The PE owning the normalised output's last element holds a wrong
    scale shard (a resident blob, or a streamed tile): that output changes,
    while Mean and InvStdDev, which use no constant, stay as they were."""
    p = cases[mode]
    ki = _case(p, "layernorm_stats")
    k = p.kernels[ki]
    x = _inputs(p, 2)
    res = simulate(p, x, keep=True)
    clean = res.kernel_io[k.name].outputs
    out = k.outputs[0]
    owner = np.broadcast_to(res.kernel_io[k.name].owner[out], clean[out].shape)
    py, px = divmod(int(owner.reshape(-1)[-1]), k.unrotated_shape[0])
    _corrupt_pe_shard(monkeypatch, ki, k.weights.index("lg"), py, px)
    got = simulate(p, x, keep=True).kernel_io[k.name].outputs
    assert not compare(out, got[out], clean[out]).ok
    assert got[out].reshape(-1)[-1] != clean[out].reshape(-1)[-1]
    for o in k.outputs[1:]:
        assert np.array_equal(got[o], clean[o]), o


def test_an_index_one_off_is_caught(cases: dict[str, Program],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A pooling executor that returned the maximum's position one element
    off would be caught: the Indices output alone differs."""
    from wsec.backends import sim_rows

    p = cases["pipeline"]
    ki = _case(p, "maxpool_3d_same_upper")
    clean = _run(p, ki)
    orig = sim_rows._first_max
    monkeypatch.setattr(sim_rows, "_first_max", lambda *a: orig(*a) + 1)
    _differs_or_raises(p, ki, clean)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key", ["resize_antialias_linear", "resize_antialias_cubic"])
def test_resize_antialias_corrupt_one_pe_copy(cases: dict[str, Program], key: str, mode: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Every PE of a Resize holds the scales; one PE's copy corrupted (a
    resident blob or a streamed tile) is an error naming the kernel."""
    p = cases[mode]
    ki = _case(p, key)
    k = p.kernels[ki]
    clean = _run(p, ki)
    _corrupt_pe_shard(monkeypatch, ki, k.weights.index(k.body[0]["inputs"][2]), -1, -1)
    msg = _differs_or_raises(p, ki, clean)
    assert f"kernel '{k.name}'" in msg
