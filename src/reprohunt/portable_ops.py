"""The vendor-dependent float32 math of a SpeechBrain recipe, replaced while it runs.

Why: under `numerics: portable` every library is capped at paths all x86-64 CPUs with AVX2 run
alike, but on the CPU torch computes `sqrt`, `log10`, `sin` and `cos` through MKL's vector
math, whose last bit depends on the CPU's vendor whatever the caps say
(../shared/reference/cpu-numerics.md). The default recipe calls IEEE-exact versions itself
(recipes/speaker_id/speaker_data/portable_math.py); a SpeechBrain recipe as it is cannot, and
SpeechBrain calls these ops in its augmentation (`compute_amplitude`'s sqrt, the filters' sin
and cos) and its features (`Filterbank`'s log10). `make numerics-check` on such a recipe named
them, op by op, under emulated Intel and AMD CPUs.

:class:`PortableMath` is a `TorchDispatchMode` that, while active, computes those ops on CPU
float32 tensors from operations IEEE 754 defines to the bit (`+ - * /`, rounding, comparisons,
bit manipulation), so every CPU gives the same bits. It sits below autograd, so the backward
formulas (which use the forward's outputs) stay torch's own. Other dtypes and devices, and every
other op, pass through untouched.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from reprohunt.speechbrain_recipe import SPEAKER_ID_RECIPE

# sqrt and log10 are the default recipe's own (its data package, the embedded corpus's too).
sys.path.insert(0, str(SPEAKER_ID_RECIPE))
from speaker_data.portable_math import log10, sqrt  # noqa: E402

# Cody-Waite reduction by pi/2 in three parts, each with trailing zero bits, so that k * part is
# exact for |k| < 2**20 (|x| below about 1.6e6).
_HALF_PI_PARTS = (1.5707963267341256, 6.077100506506192e-11, 2.0222662487959506e-21)
_TAYLOR_TERMS = 12  # |r| <= pi/4: the 13th term is below 1e-30


def _sin_cos(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sin and cos of float32 values, computed in float64 and rounded once each."""
    wide = x.double()
    quadrant = torch.round(wide * (2.0 / math.pi))
    reduced = wide
    for part in _HALF_PI_PARTS:
        reduced = reduced - quadrant * part
    square = reduced * reduced
    sine = torch.zeros_like(reduced)
    cosine = torch.zeros_like(reduced)
    for n in range(_TAYLOR_TERMS - 1, -1, -1):  # Horner, sin: r - r^3/3! + ...; cos: 1 - r^2/2! ...
        sine = 1.0 / math.factorial(2 * n + 1) * (-1) ** n + square * sine
        cosine = 1.0 / math.factorial(2 * n) * (-1) ** n + square * cosine
    sine = sine * reduced
    turn = torch.remainder(quadrant, 4.0)
    sin_x = torch.where(turn == 0, sine, torch.where(turn == 1, cosine, -sine))
    sin_x = torch.where(turn == 3, -cosine, sin_x)
    cos_x = torch.where(turn == 0, cosine, torch.where(turn == 1, -sine, -cosine))
    cos_x = torch.where(turn == 3, sine, cos_x)
    return sin_x.to(x.dtype), cos_x.to(x.dtype)


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """The recipe's correctly rounded sqrt (0 at 0, NaN below), extended to +inf."""
    infinite = x == math.inf
    return torch.where(infinite, x, sqrt(torch.where(infinite, 1.0, x)))


def _log10(x: torch.Tensor) -> torch.Tensor:
    """The recipe's log10 of positive finite values, with IEEE's -inf at 0, +inf at +inf and
    NaN below 0 or at NaN."""
    usable = (x > 0) & (x < math.inf)
    result = log10(torch.where(usable, x, 1.0))
    special = torch.where(x == 0, -math.inf, torch.where(x == math.inf, math.inf, math.nan))
    return torch.where(usable, result, special.to(x.dtype))


_EXACT: dict[Any, Callable[[torch.Tensor], torch.Tensor]] = {
    torch.ops.aten.sqrt: _sqrt,
    torch.ops.aten.log10: _log10,
    torch.ops.aten.sin: lambda x: _sin_cos(x)[0],
    torch.ops.aten.cos: lambda x: _sin_cos(x)[1],
}
_IN_PLACE = {
    torch.ops.aten.sqrt_: _sqrt,
    torch.ops.aten.log10_: _log10,
    torch.ops.aten.sin_: _EXACT[torch.ops.aten.sin],
    torch.ops.aten.cos_: _EXACT[torch.ops.aten.cos],
}


class PortableMath(TorchDispatchMode):
    """While active: sqrt, log10, sin and cos of CPU float32 tensors from IEEE-exact operations."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        exact = _EXACT.get(packet) or _IN_PLACE.get(packet)
        tensor = args[0] if args else None
        if (
            exact is None
            or kwargs
            or len(args) != 1
            or not isinstance(tensor, torch.Tensor)
            or tensor.dtype != torch.float32
            or tensor.device.type != "cpu"
        ):
            return func(*args, **kwargs)
        result = exact(tensor)
        if packet in _IN_PLACE:
            return tensor.copy_(result)
        return result
