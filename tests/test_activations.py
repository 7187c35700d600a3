"""Issue 12 deliverable 2: a weight-streaming phase reads its activations
from where earlier phases left them in SRAM. The binary records each
value's span in the activation area (META `activations`); the loader
checks the spans fit the area and never share a byte while alive; the
simulator keeps a value only where and while its span says, so a wrong
offset, a span ending early or a missing span is an error at the phase
that reads the lost value."""

from __future__ import annotations

import copy
import pathlib
import re

import numpy as np
import pytest
import wsec
from conftest import ROOT
from wsec.backends.activations import area_bytes, spans
from wsec.backends.loader import BinaryError, load_binary, validate_program
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.passes.schedule_phases import place_activations

MODEL = ROOT / "tests" / "fixtures" / "vit_o17.onnx"


@pytest.fixture(scope="module")
def stream_bin(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("acts") / "vit.bin"
    wsec.compile(str(MODEL), mode="stream", embed_weights=True).save(str(out))
    return out


def _alive_together(a, b) -> bool:  # noqa: ANN001
    return a.first <= b.last and b.first <= a.last


def test_place_activations_never_shares_a_byte_between_live_spans() -> None:
    rng = np.random.default_rng(0)
    sp = []
    for i in range(60):
        a = int(rng.integers(0, 40))
        sp.append((f"v{i}", a, a + int(rng.integers(0, 8))))
    sizes = {name: 16 * int(rng.integers(1, 5)) for name, _, _ in sp}
    placed, peak = place_activations(sp, sizes.__getitem__)
    assert sorted((n, a, b) for n, a, b, _, _ in placed) == sorted(sp)
    for i, (n, a, b, off, size) in enumerate(placed):
        assert size == sizes[n] and off + size <= peak
        for m, c, d, off2, size2 in placed[i + 1:]:
            if a <= d and c <= b:  # alive in a common phase
                assert off + size <= off2 or off2 + size2 <= off, (n, m)
    # room is reused once a span is over: far less than every value side by side
    assert peak < sum(sizes.values())


def test_a_stream_binary_records_where_every_activation_lives(stream_bin: pathlib.Path
                                                              ) -> None:
    p = load_binary(str(stream_bin))
    ss = spans(p)
    area = area_bytes(p)
    assert ss and area == p.info["attrs"]["activation_bytes_per_pe"]
    for i, a in enumerate(ss):
        assert 0 <= a.offset and a.offset + a.size <= area
        for b in ss[i + 1:]:
            if _alive_together(a, b):
                assert not a.overlaps(b), (a, b)
    # every activation a phase reads lives in the area from its producer to that phase
    made = {o: i for i, ph in enumerate(p.info["phases"]) for o in p.kernels[ph["kernel"]].outputs}
    made.update({v: 0 for v in p.info["inputs"]})
    for i, ph in enumerate(p.info["phases"]):
        k = p.kernels[ph["kernel"]]
        for v in k.inputs:
            if v and v not in k.weights:
                assert any(s.value == v and s.first == made[v] and s.last >= i for s in ss), v


def _rejected(p, mutate) -> str:  # noqa: ANN001
    q = copy.deepcopy(p)
    mutate(q.info["activations"])
    with pytest.raises(BinaryError) as e:
        validate_program(q)
    return str(e.value)


def _pair(p):  # noqa: ANN001, ANN202
    """Indices of two spans alive in a common phase at different offsets."""
    ss = spans(p)
    for i, a in enumerate(ss):
        for j, b in enumerate(ss):
            if i < j and _alive_together(a, b) and a.offset != b.offset:
                return i, j
    raise AssertionError("no two spans alive together")


def test_the_loader_rejects_spans_that_do_not_fit(stream_bin: pathlib.Path) -> None:
    p = load_binary(str(stream_bin))
    i, j = _pair(p)
    recs = p.info["activations"]
    a, b = recs[i], recs[j]
    msg = _rejected(p, lambda r: r[j].update(offset=a["offset"]))
    for s in (a, b):
        assert f"%{s['value']} (phases {s['first']}-{s['last']})" in msg
    assert "both take bytes" in msg and "of every PE's activation area in phase" in msg
    area = area_bytes(p)
    assert f"outside the {area} B the phases reserve for activations" in _rejected(
        p, lambda r: r[i].update(offset=area))
    assert "spread over the" in _rejected(p, lambda r: r[i].update(bytes=0))
    n = len(p.info["phases"])
    assert f"outside the {n} phases" in _rejected(p, lambda r: r[i].update(last=n + 1))
    assert "no value of the binary" in _rejected(p, lambda r: r[i].update(value="nope"))
    q = copy.deepcopy(p)
    del q.info["activations"]
    with pytest.raises(BinaryError, match="needs a META 'activations' list"):
        validate_program(q)


def _overwrite_fault(p):  # noqa: ANN001, ANN202
    """Spans a, b: b starts while a is alive, and a is read after b's start."""
    ss = spans(p)
    for a in ss:
        for j, b in enumerate(ss):
            if a.first < b.first < a.last and b.value != a.value:
                return a, j, b
    raise AssertionError("no span starts inside another")


def test_a_value_overwritten_in_the_area_is_an_error_where_it_is_read(
        stream_bin: pathlib.Path) -> None:
    p = load_binary(str(stream_bin))
    x = random_inputs(p, 0)
    simulate(p, x)  # the binary as written runs
    a, j, b = _overwrite_fault(p)
    p.info["activations"][j]["offset"] = a.offset  # b's value lands on a's bytes (no loader)
    with pytest.raises(SimError, match=rf"phase \d+ \(kernel '[^']*', \w+\) reads %\S+ from "
                       rf"the activation area, but it is not there: phase {b.first} \(kernel "
                       rf"'[^']*', \w+\) wrote %{re.escape(b.value)} over it \(bytes "):
        simulate(p, x)


def test_a_span_ending_before_its_last_reader_is_an_error(stream_bin: pathlib.Path) -> None:
    p = load_binary(str(stream_bin))
    ss = spans(p)
    i = next(i for i, s in enumerate(ss) if s.last > s.first and s.last < len(p.info["phases"]))
    p.info["activations"][i]["last"] = ss[i].first  # gone before its readers run
    with pytest.raises(SimError, match=rf"reads %{re.escape(ss[i].value)} from the activation "
                       rf"area, but it is not there: its span ends at phase {ss[i].first}"):
        simulate(p, random_inputs(p, 0))


def test_a_value_with_no_span_is_an_error_where_it_is_read(stream_bin: pathlib.Path) -> None:
    p = load_binary(str(stream_bin))
    ss = spans(p)
    i = next(i for i, s in enumerate(ss) if s.last > s.first and s.first > 0)
    del p.info["activations"][i]
    with pytest.raises(SimError, match=rf"needs %{re.escape(ss[i].value)}, which no earlier "
                       r"phase left in SRAM \(phase \d+ \(kernel '[^']*', \w+\) leaves it "
                       r"nowhere in the activation area"):
        simulate(p, random_inputs(p, 0))
