"""Warnings of Orion 0.2.7 that concern no user of this pipeline, filtered where they arise.

Every hunt log began with setuptools' `pkg_resources` deprecation (orion.core.utils imports it;
setuptools<81 is pinned on purpose) and Orion's "`profet` extras … No module named 'GPy'" (its
benchmark tasks, which no hunt uses). They buried the lines that matter. Each is filtered by
category, message and the module that triggers it, so any other warning, of Orion or of a recipe,
still shows. `install()` covers this process (call it before orion is imported);
`python_warnings()` gives the same filters to a child process (`orion hunt`) through
PYTHONWARNINGS.
"""

from __future__ import annotations

import re
import warnings

# (category, start of the message, module the warning is attributed to)
NOISE: tuple[tuple[type[Warning], str, str], ...] = (
    (UserWarning, "pkg_resources is deprecated as an API", "orion.core.utils"),
    (
        RuntimeWarning,
        "The `profet` extras needs to be installed",
        "orion.benchmark.task.profet.model_utils",
    ),
)


def install() -> None:
    """Ignore the NOISE warnings in this process, and nothing else."""
    for category, message, module in NOISE:
        warnings.filterwarnings(
            "ignore",
            message=re.escape(message),
            category=category,
            module=re.escape(module) + r"\Z",
        )


def python_warnings(existing: str | None) -> str:
    """PYTHONWARNINGS for a child process: the caller's own filters, then the NOISE ones.

    PYTHONWARNINGS matches the message as a literal prefix and the module exactly, as install().
    """
    ours = [f"ignore:{message}:{category.__name__}:{module}" for category, message, module in NOISE]
    return ",".join([existing, *ours] if existing else ours)
