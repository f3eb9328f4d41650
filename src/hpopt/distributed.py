"""Which process of a distributed (torchrun / DDP) trial this is, read from the environment.

Only the environment is consulted, never ``torch.distributed``: the answer is needed before the
recipe initialises its process group (to decide who reports), and ``import hpopt`` must stay
stdlib-only.
"""

import os


def get_rank() -> int:
    """Global rank from ``RANK`` (set by torchrun for every worker); 0 when not distributed."""
    raw = os.environ.get("RANK", "").strip()
    return int(raw) if raw else 0


def is_main_process() -> bool:
    """True on global rank 0 or when not distributed: the one process that reports and prints."""
    return get_rank() == 0


def is_distributed() -> bool:
    """True when launched as one of several workers (``WORLD_SIZE`` > 1)."""
    raw = os.environ.get("WORLD_SIZE", "").strip()
    return bool(raw) and int(raw) > 1
