"""The `Backend` interface every inference engine implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np


class BackendError(RuntimeError):
    """A model cannot be loaded or run; the message names the file or the input at fault."""


class Backend(Protocol):
    """Runs the exported network: pre-processed inputs (xkd_ros.preprocess names) in, named outputs out."""

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def check_inputs(
    inputs: Mapping[str, np.ndarray], expected: Mapping[str, tuple[np.dtype, int]], model: str
) -> None:
    """Every input present with the dtype and rank the model takes; the error names the input."""
    for name, (dtype, rank) in expected.items():
        if name not in inputs:
            raise BackendError(f"{model}: input {name!r} missing (given: {sorted(inputs)})")
        array = inputs[name]
        if array.dtype != dtype or array.ndim != rank:
            got = f"{array.ndim}-d {array.dtype}"
            raise BackendError(f"{model}: input {name!r} must be {rank}-d {np.dtype(dtype)}, got {got}")
