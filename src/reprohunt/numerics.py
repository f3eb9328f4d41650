"""The numerics profile: which CPU code paths torch, oneDNN, MKL, numpy and OpenBLAS may take.

Why: each library picks its kernels from the CPU it finds (ISA, and for MKL the vendor), so the
same seed, code and data train to other numbers on another machine, and a search then picks
other hyperparameters (../shared/reference/cpu-numerics.md). ``portable`` caps every library at
a path that every x86-64 CPU with AVX2 and FMA runs alike: ATen's AVX2 kernels, oneDNN's AVX2
ISA, MKL's vendor-independent COMPATIBLE path, numpy without its AVX-512 dispatch, OpenBLAS's
Haswell kernels. ``native`` lets each library choose (faster on some CPUs; results belong to
the CPU they were made on). The libraries read these variables once, when they load, so the
profile is applied to a process's environment before it starts the one that computes:
:func:`apply` is the one place that sets them, called by ``reprohunt.logged`` (every rule),
the audit (from the profile recorded in provenance) and the benchmarks.

What no variable can pin: a library routine that uses approximate instructions whose tables
differ by vendor (float32 ``torch.sqrt`` through MKL's VML is 1 ULP off on AMD CPUs whatever
MKL_CBWR says). A recipe stays portable only where it avoids them; the speaker-id recipe does
(its square roots in float64, fused Adam), and the cross-CPU test runs it under emulated Intel
and AMD CPUs. Stdlib only: the workflow env checks the profile before any job.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

PORTABLE, NATIVE = "portable", "native"
PROFILES = (PORTABLE, NATIVE)
# Read by the libraries at load time; the same values on every CPU the profile serves.
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",  # oneDNN's older name, still read
    "MKL_CBWR": "COMPATIBLE",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_SKX AVX512_ICL AVX512_SPR",
    "OPENBLAS_CORETYPE": "Haswell",
}
# What the portable paths execute: a CPU without them cannot run the profile.
REQUIRED_FLAGS = ("avx2", "fma")
# The CPU flags that decide which paths the libraries would pick natively (recorded).
RELEVANT_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl")
REPORTED_FLAGS = (*RELEVANT_FLAGS, "avx512_vnni", "avx512_bf16")
# /proc/cpuinfo's flag names -> numpy's CPU feature names.
NUMPY_FLAG_NAMES = {
    "sse4_2": "SSE42",
    "avx": "AVX",
    "avx2": "AVX2",
    "fma": "FMA3",
    "avx512f": "AVX512F",
    "avx512bw": "AVX512BW",
    "avx512vl": "AVX512VL",
    "avx512_vnni": "AVX512VNNI",
    "avx512_bf16": "AVX512BF16",
}
CPUINFO = Path("/proc/cpuinfo")


class NumericsError(Exception):
    """This CPU cannot run the profile asked for; the message says the fix."""


def cpu() -> dict[str, Any]:
    """Vendor, model and the ISA flags that matter, of the CPU this process runs on.

    The flags come from CPUID through numpy's runtime detection where numpy is installed (the
    train env, which runs every computing process): /proc/cpuinfo describes the host even to a
    process that an emulator runs on another CPU. Elsewhere (the workflow env) from /proc."""
    fields: dict[str, str] = {}
    if CPUINFO.is_file():
        for line in CPUINFO.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if not line.strip():
                break  # the first processor's block is enough
            fields.setdefault(key.strip(), value.strip())
    try:
        # numpy's private module (no stubs): what its dispatcher found on this CPU.
        detected = importlib.import_module("numpy._core._multiarray_umath").__cpu_features__
    except ImportError:
        flags, source = set(fields.get("flags", "").split()), str(CPUINFO)
    else:
        flags = {flag for flag, name in NUMPY_FLAG_NAMES.items() if detected.get(name)}
        source = "cpuid (numpy)"
    return {
        "machine": platform.machine(),
        "vendor": fields.get("vendor_id"),
        "model": fields.get("model name"),
        "flags": [flag for flag in REPORTED_FLAGS if flag in flags],
        "flags_from": source,
    }


def check(profile: str, where: str, facts: dict[str, Any] | None = None) -> None:
    """Refuse a profile this CPU cannot serve, naming `where` it is set and the fix."""
    if profile not in PROFILES:
        raise NumericsError(f"{where}: numerics is {profile!r}; use one of {', '.join(PROFILES)}")
    if profile == NATIVE:
        return
    facts = facts or cpu()
    missing = [flag for flag in REQUIRED_FLAGS if flag not in facts["flags"]]
    if facts["machine"] not in ("x86_64", "AMD64") or missing:
        lacks = f"lacks {', '.join(missing)}" if facts["machine"] == "x86_64" else "is not x86-64"
        raise NumericsError(
            f"{where}: numerics `portable` needs an x86-64 CPU with AVX2 and FMA, and this CPU "
            f"({facts['model'] or facts['machine']}) {lacks}. Set `numerics: native` there: "
            "results are then this CPU's own, and an audit on another CPU checks them more weakly"
        )


def environment(profile: str) -> dict[str, str]:
    """The variables the profile sets (none for `native`)."""
    return dict(PORTABLE_ENV) if profile == PORTABLE else {}


def apply(profile: str, where: str, environ: MutableMapping[str, str] | None = None) -> None:
    """Check the CPU, then set the profile in `environ` (os.environ): the variables of
    `portable`; for `native`, none of them, so that an inherited cap cannot leak in."""
    check(profile, where)
    environ = os.environ if environ is None else environ
    for name in PORTABLE_ENV:
        environ.pop(name, None)
    environ.update(environment(profile))


def in_use(profile: str) -> dict[str, Any]:
    """What this process runs with (imports torch and numpy: call after :func:`apply` took effect
    for it): the profile, the variables set, the CPU, torch's capability and library versions."""
    import numpy
    import torch

    config = torch.__config__.show()
    blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
    umath = importlib.import_module("numpy._core._multiarray_umath")
    features, dispatch = umath.__cpu_features__, umath.__cpu_dispatch__
    return {
        "profile": profile,
        "environment": {name: os.environ[name] for name in PORTABLE_ENV if name in os.environ},
        "cpu": cpu(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl": _library_line(config, "Math Kernel Library"),
        "onednn": _library_line(config, "MKL-DNN"),
        "numpy": numpy.__version__,
        "numpy_dispatch_enabled": [name for name in dispatch if features.get(name)],
        "openblas": f"{blas.get('name')} {blas.get('version')}",
        "python": sys.version.split()[0],
        # GPU kernels are outside the profile (the audit keeps its GPU tolerance there).
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }


def _library_line(config: str, name: str) -> str | None:
    """The line of torch's build configuration that names a library (its version)."""
    return next((line.strip(" -") for line in config.splitlines() if name in line), None)


def same_cpu(recorded: dict[str, Any], here: dict[str, Any]) -> bool:
    """Whether two CPU records describe the same vendor, model and relevant flags."""
    keys = ("machine", "vendor", "model")
    relevant = [flag for flag in recorded.get("flags", []) if flag in RELEVANT_FLAGS]
    return all(recorded.get(key) == here.get(key) for key in keys) and relevant == [
        flag for flag in here.get("flags", []) if flag in RELEVANT_FLAGS
    ]


def describe(facts: dict[str, Any]) -> str:
    """One line for a person: the CPU and what the libraries ran."""
    machine = facts["cpu"]
    return (
        f"{facts['profile']} numerics on {machine['model'] or machine['machine']} "
        f"({machine['vendor'] or 'unknown vendor'}), torch CPU capability "
        f"{facts['torch_cpu_capability']}"
    )
