"""Reference interpreter: run a whole Module with the op semantics of `opsem`.

Why: every stage of the compiler must keep computing what the ONNX model
computes. This interpreter is the yardstick the tests (and later the device
simulator's checks) compare against: it evaluates the graph-level ops in
order, and a kernel by evaluating the graph ops in its body, so the same
function checks a freshly imported module, a canonicalized one and one
whose ops have been grouped into kernels.
"""

from __future__ import annotations

import numpy as np

from .errors import WsecError
from .graph import Kernel, Module, Node
from .opsem import evaluate


class InterpError(WsecError):
    """The module cannot be evaluated as given (missing input, bad shape, ...)."""


def evaluate_module(module: Module, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate `module` on `inputs` (name -> array); return its outputs by name.

    Inputs are cast to the declared element type and must have the declared
    shape. Each op's result is checked against the IR's declared type, so a
    frontend or pass that mistypes a value is caught where it happens.
    """
    env: dict[str, np.ndarray] = {}
    unknown = sorted(set(inputs) - set(module.inputs))
    if unknown:
        raise InterpError(f"inputs {unknown} are not inputs of module '{module.name}' "
                          f"(its inputs are {module.inputs})")
    for name in module.inputs:
        if name not in inputs:
            raise InterpError(f"module '{module.name}' needs input '{name}' "
                              f"({module.values[name].type}), which was not given")
        t = module.values[name].type
        arr = np.asarray(inputs[name])
        if tuple(arr.shape) != t.shape:
            raise InterpError(f"input '{name}' has shape {list(arr.shape)}, but the module "
                              f"declares {t}")
        env[name] = arr.astype(t.np_dtype, copy=False)
    for n in module.nodes:
        if isinstance(n, Kernel):
            for b in n.body:
                _run(module, b, env)
        else:
            _run(module, n, env)
    missing = [o for o in module.outputs if o not in env and _const(module, o) is None]
    if missing:
        raise InterpError(f"outputs {missing} of module '{module.name}' are never computed")
    return {o: env[o] if o in env else _const(module, o) for o in module.outputs}  # type: ignore


def _const(m: Module, name: str) -> np.ndarray | None:
    v = m.values.get(name)
    return None if v is None or v.const is None else np.asarray(v.const.array())


def _fetch(m: Module, name: str, env: dict[str, np.ndarray], node: Node) -> np.ndarray:
    if name in env:
        return env[name]
    arr = _const(m, name)
    if arr is None:
        raise InterpError(f"node '{node.name}' ({node.op}) reads '{name}', which is neither "
                          f"an input, a constant nor computed before it")
    return arr


def _run(m: Module, n: Node, env: dict[str, np.ndarray]) -> None:
    args = [_fetch(m, i, env, n) if i else None for i in n.inputs]
    try:
        with np.errstate(all="ignore"):  # NaN/inf results are values like any other
            outs = evaluate(n, args)
    except (ValueError, TypeError, IndexError, KeyError) as e:
        shapes = [None if a is None else list(a.shape) for a in args]
        raise InterpError(f"node '{n.name}' ({n.op}) failed on input shapes {shapes}: "
                          f"{e}") from e
    for o, arr in zip(n.outputs, outs, strict=False):
        if not o:
            continue
        v = m.values.get(o)
        if v is not None:
            if tuple(arr.shape) != v.type.shape:
                raise InterpError(f"node '{n.name}' ({n.op}) computed {list(arr.shape)} for "
                                  f"'{o}', but the IR declares {v.type}")
            arr = arr.astype(v.type.np_dtype, copy=False)
        env[o] = arr
