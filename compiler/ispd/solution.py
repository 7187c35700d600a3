"""ISPD 2020 contest solution files: writer and reader.

Why: wsec writes the contest's solution format and reads any solution file
(ours or another solver's) back onto a loaded kernel graph, so the scorer
(wsec.ispd.score) can judge it. Every shape and memory figure comes from
the `cs1` kernel kinds (wsec.ir.library_cs1).

Solution lines (formal arguments, then knobs; position = lower-left corner):

    k1 = dblock( H W F  h w  c1 c2 c3  k1 k2 k3 )
    k3 = conv( H W C K R S T U  h w c k )
    k1 : place(X Y R0)          (R90 when rotated)
"""

from __future__ import annotations

import re

from wsec.ir.errors import WsecError
from wsec.ir.graph import Kernel, Module, Rect
from wsec.ir.library_cs1 import ISPD_KINDS, ConvGroupKind
from wsec.ir.target import Target, module_target

KIND_TO_WORD = {k.name: word for word, k in ISPD_KINDS.items()}
_DEF = re.compile(r"^(\S+)\s*=\s*(\w+)\s*\(([^()]*)\)\s*;?$")
_PLACE = re.compile(r"^(\S+)\s*:\s*place\s*\(\s*(-?\d+)\s*,?\s*(-?\d+)\s*,?\s*(R0|R90)\s*\)\s*;?$",
                    re.IGNORECASE)


def ispd_kind(k: Kernel) -> ConvGroupKind:
    """The cs1 kind of a contest kernel."""
    return ISPD_KINDS[KIND_TO_WORD[k.kind]]


class SolutionError(WsecError):
    """A solution file that cannot be read onto the module; names the line."""


def contest_kernels(module: Module) -> list[Kernel]:
    ks = list(module.kernels())
    for k in ks:
        if k.kind not in KIND_TO_WORD:
            raise SolutionError(f"kernel '{k.name}' has kind '{k.kind}', which is not an ISPD "
                                f"2020 kind ({', '.join(sorted(KIND_TO_WORD))})")
    return sorted(ks, key=lambda k: (int(k.attrs.get("ispd_index", 0)), k.name))


def write_solution(module: Module) -> str:
    """The module's sized and placed kernels in the contest's solution format."""
    kernels = contest_kernels(module)
    defs, places = [], []
    for k in kernels:
        kind = ispd_kind(k)
        if k.knobs is None or k.rect is None:
            missing = "knobs (run size)" if k.knobs is None else "a position (run place)"
            raise SolutionError(f"kernel '{k.name}' ({k.kind}) has no {missing}; a contest "
                             "solution needs every kernel sized and placed")
        formals = [int(k.dims[n]) for n in kind.formal_names()]
        knobs = [int(k.knobs[n]) for n in kind.knob_names]
        defs.append(f"{k.name} = {KIND_TO_WORD[k.kind]}( {' '.join(map(str, formals))} "
                    f"{' '.join(map(str, knobs))} )")
        places.append(f"{k.name} : place({k.rect.x} {k.rect.y} {'R90' if k.rotated else 'R0'})")
    return "\n".join(defs + places) + "\n"


def read_solution(text: str, module: Module, source: str = "<solution>") -> None:
    """Set knobs, rect, rotated and cost of the module's kernels from a solution.

    Syntax and identity errors (unknown kernel, wrong kind or formal
    arguments) raise SolutionError; knob values, memory, positions and
    missing kernels are left for `score` to judge and report.
    """
    kernels = {k.name: k for k in contest_kernels(module)}
    for k in kernels.values():
        k.knobs, k.rect, k.cost, k.rotated = None, None, None, False
    places: dict[str, tuple[int, int, bool, int]] = {}
    seen_def: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("//") or (
                line.startswith("(*") and line.endswith("*)")):
            continue
        where = f"{source}:{lineno}"
        m = _PLACE.match(line)
        if m:
            name = m.group(1)
            _known(kernels, name, where)
            if name in places:
                raise SolutionError(f"{where}: kernel '{name}' is placed twice (first on line "
                                    f"{places[name][3]})")
            places[name] = (int(m.group(2)), int(m.group(3)), m.group(4).upper() == "R90", lineno)
            continue
        m = _DEF.match(line)
        if not m:
            raise SolutionError(f"{where}: cannot read '{line}': expected 'NAME = KIND( args )' "
                                "or 'NAME : place(X Y R0|R90)'")
        name, word = m.group(1), m.group(2)
        k = _known(kernels, name, where)
        if name in seen_def:
            raise SolutionError(f"{where}: kernel '{name}' is defined twice (first on line "
                                f"{seen_def[name]})")
        seen_def[name] = lineno
        k.knobs = _parse_args(k, word, m.group(3), where)
    target = module_target(module.attrs)
    for name, (x, y, rot, _) in places.items():
        k = kernels[name]
        k.rotated = rot
        shape = shape_or_none(k, target)
        if shape is not None:
            w, h = shape
            k.rect = Rect(x, y, h, w) if rot else Rect(x, y, w, h)
    for k in kernels.values():
        shape = shape_or_none(k, target)
        if shape is not None:
            kind = ispd_kind(k)
            k.cost = {"cycles": kind.cycles(k.dims, k.knobs, target), "w": shape[0],
                      "h": shape[1], "sram": kind.sram(k.dims, k.knobs, target)}
    for prop, attr in (("sized", "knobs"), ("placed", "rect")):
        if all(getattr(k, attr) is not None for k in kernels.values()):
            module.properties.add(prop)
        else:
            module.properties.discard(prop)
    module.properties -= {"routed", "allocated"}


def _known(kernels: dict[str, Kernel], name: str, where: str) -> Kernel:
    if name not in kernels:
        near = ", ".join(sorted(kernels)[:8])
        raise SolutionError(f"{where}: kernel '{name}' is not in the kernel graph "
                            f"(kernels: {near}{', ...' if len(kernels) > 8 else ''})")
    return kernels[name]


def _parse_args(k: Kernel, word: str, args: str, where: str) -> dict[str, int]:
    kind = ispd_kind(k)
    if word != KIND_TO_WORD[k.kind]:
        raise SolutionError(f"{where}: kernel '{k.name}' is a {KIND_TO_WORD[k.kind]} in the "
                            f"kernel graph, not a {word}")
    formals = list(kind.formal_names())
    names = formals + list(kind.knob_names)
    try:
        vals = [int(v) for v in args.replace(",", " ").split()]
    except ValueError:
        raise SolutionError(f"{where}: arguments of '{k.name}' must be integers, got "
                            f"'{args.strip()}'") from None
    if len(vals) != len(names):
        raise SolutionError(f"{where}: {word} '{k.name}' takes {len(names)} arguments "
                            f"({' '.join(names)}), got {len(vals)}")
    for n, v in zip(formals, vals, strict=False):
        if int(k.dims[n]) != v:
            raise SolutionError(f"{where}: '{k.name}' has {n}={k.dims[n]} in the kernel graph "
                                f"but the solution says {n}={v}")
    return dict(zip(kind.knob_names, vals[len(formals):], strict=True))


def shape_or_none(k: Kernel, target: Target) -> tuple[int, int] | None:
    if k.knobs is None or ispd_kind(k).knob_errors(k.dims, k.knobs):
        return None
    return ispd_kind(k).shape(k.dims, k.knobs, target)
