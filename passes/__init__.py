"""wsec passes: one module per pass, listed lazily so importing the package
costs nothing until a pass is used."""

from __future__ import annotations

import importlib

from .base import LayoutInfeasible, Pass, PassContext, PassError, PassOptionError

# name -> "module:Class", in default pipeline order
REGISTRY: dict[str, str] = {
    "canonicalize": "canonicalize:Canonicalize",
    "form-kernels": "form_kernels:FormKernels",
    "size": "size:Size",
    "place": "place:Place",
    "route": "route:Route",
    "allocate": "allocate:Allocate",
    # weight-streaming back end (run instead of size..allocate in stream mode)
    "schedule-phases": "schedule_phases:SchedulePhases",
    # the same for a training step (forward, backward, the optimizer off the wafer)
    "schedule-train": "schedule_train:ScheduleTrain",
    # training (`--train`): derives the training step before canonicalize
    "autodiff": "autodiff:Autodiff",
}

STREAM_ONLY = ("schedule-phases", "schedule-train")
TRAIN_ONLY = ("autodiff",)
DEFAULT_PIPELINE: tuple[str, ...] = tuple(p for p in REGISTRY
                                          if p not in STREAM_ONLY + TRAIN_ONLY)
TRAIN_PIPELINE: tuple[str, ...] = TRAIN_ONLY + DEFAULT_PIPELINE


def pass_class(name: str) -> type[Pass]:
    """The Pass class registered under `name`."""
    if name not in REGISTRY:
        import difflib

        near = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise PassOptionError(f"unknown pass '{name}' ({hint}known: {', '.join(REGISTRY)})")
    mod, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{mod}"), cls)


__all__ = ["DEFAULT_PIPELINE", "REGISTRY", "TRAIN_PIPELINE", "LayoutInfeasible", "Pass",
           "PassContext", "PassError", "PassOptionError", "pass_class"]
