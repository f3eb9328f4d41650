"""Trial ids: the name a trial's output folder gets through ``<trial_id>`` in the hpopt YAML.

Every rank of a distributed trial must compute the same id, otherwise ranks write to different
folders and files the main rank creates (label encoders, checkpoints) are missing on the others.
So the generic id comes from something all ranks share, never from the process's own clock when
several ranks exist.
"""

import os
import re
from datetime import datetime

from hpopt.distributed import is_distributed
from hpopt.errors import HpoptError

# SpeechBrain's names and values (speechbrain.utils.hpopt).
DEFAULT_TRIAL_ID = "hpopt"
FORMAT_TIMESTAMP = "%Y%m%d%H%M%S%f"
ORION_TRIAL_ID_ENV = ["ORION_EXPERIMENT_NAME", "ORION_EXPERIMENT_VERSION", "ORION_TRIAL_ID"]
# Set by a parent launcher (or by the first generic context of a process) so that every process
# of one trial, including spawned children, agrees on the id.
TRIAL_ID_ENV = "HPOPT_TRIAL_ID"
_UNSAFE_FOR_PATHS = re.compile(r"[^\w.\-]")


def orion_trial_id() -> str:
    """``<experiment name>-<experiment version>-<trial id>`` from the variables Orion sets."""
    return "-".join(os.environ.get(name, "") for name in ORION_TRIAL_ID_ENV)


def generic_trial_id() -> str:
    """A process-stable id, shared by all ranks of a trial and by its child processes.

    Order: ``$HPOPT_TRIAL_ID`` (a launcher decided), torchrun's ``$TORCHELASTIC_RUN_ID``
    (a fresh uuid with ``--standalone``; ``none`` means "not given" and is skipped), else a
    timestamp plus pid for a single process. The result is exported as ``$HPOPT_TRIAL_ID`` so
    later contexts and children of this process reuse it.
    """
    trial_id = os.environ.get(TRIAL_ID_ENV, "").strip()
    if not trial_id:
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "").strip()
        if run_id and run_id != "none":
            trial_id = f"torchrun-{run_id}"
        elif is_distributed():
            raise HpoptError(
                "generic hpopt mode in a distributed run needs an id all ranks share: set "
                f"{TRIAL_ID_ENV} in the launcher, or run torchrun with --standalone or --rdzv-id"
            )
        else:
            trial_id = f"{datetime.now().strftime(FORMAT_TIMESTAMP)}-{os.getpid()}"
    trial_id = _UNSAFE_FOR_PATHS.sub("_", trial_id)
    os.environ[TRIAL_ID_ENV] = trial_id
    return trial_id
