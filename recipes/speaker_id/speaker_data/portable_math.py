"""Square root and log10 that give the same bits on every CPU, for the recipe's float32 tensors.

Why: on CPU, ``torch.sqrt`` and ``torch.log10`` go through MKL's vector math, whose last bit
depends on the CPU (its vendor, and approximate instructions whose tables differ between Intel
and AMD), in float32 and in float64 alike, whatever MKL_CBWR or ATen's capability cap say:
measured on an AMD EPYC against emulated Intel and AMD CPUs, float32 ``sqrt`` differed on 757
thousand of 4 million values, float64 ``sqrt`` on 9 of a batch's 40, float32 ``log10`` on 14 of
the corpus's 3.3 million features. No library offers a CPU-independent version, so these two are
written here from operations that IEEE 754 defines to the bit (``+ - * /``, comparisons, and bit
manipulation: ``frexp``, ``nextafter``, shifts), which every machine computes alike; the
numerics check (``make numerics-check``) verifies it op by op under emulated CPUs.
"""

from __future__ import annotations

import math

import torch

# ln(m) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...) with s = (m - 1) / (m + 1), |s| < 0.172 for m
# in [sqrt(1/2), sqrt(2)): after 12 terms the next is below 2**-60 of the first (s^2 < 0.0295).
_ATANH_TERMS = 12
_SQRT_HALF = math.sqrt(0.5)
# Newton's iteration for sqrt(m), m in [0.5, 2), from (1 + m) / 2 (at most 6 % off): the error
# squares at each step, 6e-2, 2e-3, 2e-6, 1e-12, then float64's own rounding; 5 steps to spare.
_NEWTON_STEPS = 5
_FLOAT64_BIAS, _FLOAT64_MANTISSA_BITS = 1023, 52


def log10(x: torch.Tensor) -> torch.Tensor:
    """log10 of positive values, computed in float64 and rounded once to ``x``'s dtype."""
    mantissa, exponent = torch.frexp(x.double())  # x = mantissa * 2**exponent, in [0.5, 1)
    low = mantissa < _SQRT_HALF
    mantissa = torch.where(low, mantissa * 2.0, mantissa)
    exponent = exponent.double() - low.double()
    s = (mantissa - 1.0) / (mantissa + 1.0)
    s2 = s * s
    series = torch.full_like(s, 1.0 / (2 * _ATANH_TERMS - 1))
    for k in range(_ATANH_TERMS - 2, -1, -1):
        series = series * s2 + 1.0 / (2 * k + 1)
    natural = (s * series) * 2.0 + exponent * math.log(2.0)
    return (natural / math.log(10.0)).to(x.dtype)


def _power_of_two(exponent: torch.Tensor) -> torch.Tensor:
    """2**exponent in float64, built from its bits (``torch.pow`` is vector math again)."""
    biased = exponent.long() + _FLOAT64_BIAS
    return torch.bitwise_left_shift(biased, _FLOAT64_MANTISSA_BITS).view(torch.float64)


def _float64_root(x: torch.Tensor) -> torch.Tensor:
    """sqrt of positive float64 values to within a few float64 ULPs, by Newton's iteration."""
    mantissa, exponent = torch.frexp(x)
    odd = exponent.remainder(2) != 0
    mantissa = torch.where(odd, mantissa * 2.0, mantissa)  # now in [0.5, 2), exponent even
    half = torch.div(exponent - odd.int(), 2, rounding_mode="floor")
    root = (mantissa + 1.0) * 0.5
    for _ in range(_NEWTON_STEPS):
        root = (root + mantissa / root) * 0.5
    return root * _power_of_two(half)


class _Sqrt(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        exact = x.double()  # a float32 is exact in float64
        positive = _float64_root(torch.where(exact > 0, exact, 1.0))
        root = torch.where(exact > 0, positive, torch.where(exact == 0, 0.0, torch.nan)).float()
        # The float32 root is now at most one ULP from the correctly rounded one. The midpoint
        # between two neighbouring float32 values has 25 bits and its square 50: both exact in
        # float64, and that square is never a float32 (no ties), so these comparisons decide it.
        for towards, beyond in ((torch.inf, torch.lt), (0.0, torch.gt)):
            step = torch.nextafter(root, torch.full_like(root, towards))
            midpoint = (root.double() + step.double()) * 0.5
            root = torch.where(beyond(midpoint * midpoint, exact), step, root)
        ctx.save_for_backward(root)
        return root

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (root,) = ctx.saved_tensors
        return grad / (2 * root)  # what torch's own sqrt backward computes


def sqrt(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded square root of a non-negative float32 tensor, differentiable."""
    if x.dtype != torch.float32:
        raise TypeError(f"portable sqrt takes float32, got {x.dtype}")
    return _Sqrt.apply(x)
