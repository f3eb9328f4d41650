"""Give each concurrent trial its own GPU(s) with kernel file locks, and free them on any death.

``orion hunt --n-workers N`` starts N trials at once, and nothing in Orion decides which GPU a
trial may use: without a lease every trial lands on ``cuda:0``. Here each device has one lock
file, and a trial holds ``fcntl.flock`` on the lock files of the devices it uses. The kernel
drops a flock when the last descriptor closes, so a trial that crashes or is SIGKILLed frees
its devices with no stale state to clean up (unlike pid files).

Configuration (environment, so it passes unchanged through ``orion hunt`` to every trial):

``HPOPT_GPUS``            comma-separated device ids as ``nvidia-smi`` lists them
                          (e.g. ``0,1,2,3``); unset or empty: leasing is off (a no-op)
``HPOPT_GPUS_PER_TRIAL``  devices per trial, default 1
``HPOPT_LEASE_DIR``       folder of the lock files, default ``$TMPDIR/hpopt-gpu-leases-<uid>``;
                          lock names include the host name, so a folder on shared storage
                          does not make two machines' ``GPU 0`` collide

A lease sets ``CUDA_VISIBLE_DEVICES`` to the leased ids (and ``CUDA_DEVICE_ORDER=PCI_BUS_ID``
so ids mean what ``nvidia-smi`` shows) and ``HPOPT_LEASED_GPUS``, which tells child processes
that their parent already holds the lease. When all devices are taken, the trial waits, saying
so once in the log.

Two ways to take it:

* in-process, done by ``hp_ctx.parse_arguments`` before the recipe can touch CUDA (one process
  per trial);
* ``python -m hpopt.gpu_lease [--gpus 0,1] [--per-trial 2] [--lease-dir DIR] -- CMD ARGS...``
  leases, then ``exec``s CMD holding the locks, for multi-GPU trials where the parent must
  lease before ``torchrun`` starts its workers. The locks live as long as CMD (torchrun's
  agent); CMD's exit status is the command's own.
"""

import argparse
import fcntl
import logging
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hpopt.distributed import is_distributed
from hpopt.errors import HpoptError

logger = logging.getLogger("hpopt")

ENV_GPUS = "HPOPT_GPUS"
ENV_PER_TRIAL = "HPOPT_GPUS_PER_TRIAL"
ENV_LEASE_DIR = "HPOPT_LEASE_DIR"
ENV_LEASED = "HPOPT_LEASED_GPUS"
POLL_SECONDS = 1.0
_DEVICE_ID = re.compile(r"[\w.\-]+")

# The in-process lease: kept referenced so its descriptors (and locks) live as long as the process.
_process_lease: "GpuLease | None" = None


@dataclass(frozen=True)
class LeaseConfig:
    """Which devices exist for trials, how many each trial takes, and where the locks live."""

    devices: tuple[str, ...]
    per_trial: int
    lease_dir: Path

    @classmethod
    def from_values(
        cls, gpus: str, per_trial: str | int | None, lease_dir: str | None
    ) -> "LeaseConfig":
        devices = tuple(device.strip() for device in gpus.split(","))
        bad = [device for device in devices if not _DEVICE_ID.fullmatch(device)]
        if bad:
            raise HpoptError(f"{ENV_GPUS}={gpus!r}: invalid device id(s) {bad}; write e.g. 0,1,2")
        if len(set(devices)) != len(devices):
            raise HpoptError(f"{ENV_GPUS}={gpus!r} lists a device twice")
        try:
            count = int(per_trial if per_trial not in (None, "") else 1)
        except ValueError as error:
            raise HpoptError(f"{ENV_PER_TRIAL}={per_trial!r} is not an integer") from error
        if not 1 <= count <= len(devices):
            raise HpoptError(
                f"{ENV_PER_TRIAL}={count} must be between 1 and the {len(devices)} "
                f"device(s) of {ENV_GPUS}={gpus!r}"
            )
        folder = (
            Path(lease_dir)
            if lease_dir
            else Path(tempfile.gettempdir()) / f"hpopt-gpu-leases-{os.getuid()}"
        )
        return cls(devices, count, folder)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> "LeaseConfig | None":
        """The configuration in ``environ``, or None when ``HPOPT_GPUS`` is unset (no leasing)."""
        gpus = environ.get(ENV_GPUS, "").strip()
        if not gpus:
            return None
        return cls.from_values(gpus, environ.get(ENV_PER_TRIAL), environ.get(ENV_LEASE_DIR))

    def lock_path(self, device: str) -> Path:
        return self.lease_dir / f"{socket.gethostname()}-gpu-{device}.lock"


@dataclass
class GpuLease:
    """Devices held through open, flock'ed descriptors; closing them frees the devices."""

    devices: tuple[str, ...]
    descriptors: tuple[int, ...]

    def release(self) -> None:
        for descriptor in self.descriptors:
            os.close(descriptor)
        self.descriptors = ()

    def export(self, environ: MutableMapping[str, str] = os.environ) -> None:
        """Point CUDA (and any child process) at the leased devices."""
        visible = ",".join(self.devices)
        environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        environ["CUDA_VISIBLE_DEVICES"] = visible
        environ[ENV_LEASED] = visible


def _try_lock(path: Path) -> int | None:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def _write_holder(descriptor: int) -> None:
    """Record who holds the device, only for the "waiting" log line of other trials."""
    note = f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)}\n"
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, note.encode(), 0)


def _holders(config: LeaseConfig) -> str:
    notes = []
    for device in config.devices:
        try:
            note = config.lock_path(device).read_text().strip()
        except OSError:
            note = ""
        notes.append(f"GPU {device}: {note or 'unknown holder'}")
    return "; ".join(notes)


def acquire(config: LeaseConfig, inheritable: bool = False) -> GpuLease:
    """Block until ``config.per_trial`` devices are free, and lock them.

    A partial set is never kept while waiting (take all or release all), so two multi-GPU trials
    cannot deadlock each holding half of what the other needs.
    """
    config.lease_dir.mkdir(parents=True, exist_ok=True)
    announced = False
    while True:
        taken: list[tuple[str, int]] = []
        for device in config.devices:
            descriptor = _try_lock(config.lock_path(device))
            if descriptor is not None:
                taken.append((device, descriptor))
                if len(taken) == config.per_trial:
                    break
        if len(taken) == config.per_trial:
            for _, descriptor in taken:
                _write_holder(descriptor)
                os.set_inheritable(descriptor, inheritable)
            devices = tuple(device for device, _ in taken)
            logger.info("hpopt: leased GPU(s) %s (pid %d)", ",".join(devices), os.getpid())
            return GpuLease(devices, tuple(descriptor for _, descriptor in taken))
        for _, descriptor in taken:
            os.close(descriptor)
        if not announced:
            logger.warning(
                "hpopt: waiting for %d free GPU(s) of %s (locks in %s); held: %s",
                config.per_trial,
                ",".join(config.devices),
                config.lease_dir,
                _holders(config),
            )
            announced = True
        time.sleep(POLL_SECONDS)


def lease_from_environment() -> tuple[str, ...] | None:
    """Take this process's lease as configured by the environment; the leased ids, or None.

    A no-op when ``HPOPT_GPUS`` is unset, and when a parent already leased for this process
    (``HPOPT_LEASED_GPUS`` set, e.g. by ``python -m hpopt.gpu_lease`` around torchrun).
    """
    global _process_lease
    if _process_lease is not None:
        return _process_lease.devices
    inherited = os.environ.get(ENV_LEASED, "").strip()
    if inherited:
        return tuple(inherited.split(","))
    config = LeaseConfig.from_environment()
    if config is None:
        return None
    if is_distributed():
        raise HpoptError(
            f"{ENV_GPUS} is set but this is one rank of a distributed trial, and ranks must not "
            "lease separately: lease in the parent with "
            "'python -m hpopt.gpu_lease -- torchrun ...'"
        )
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise HpoptError(
            "CUDA was initialised before the GPU lease, so CUDA_VISIBLE_DEVICES can no longer "
            "take effect: call hp_ctx.parse_arguments before any CUDA use"
        )
    _process_lease = acquire(config)
    _process_lease.export()
    return _process_lease.devices


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hpopt.gpu_lease [options] -- CMD ARGS...``: lease, then exec CMD."""
    parser = argparse.ArgumentParser(
        prog="python -m hpopt.gpu_lease",
        description="Lease GPUs with kernel file locks, then exec CMD holding them.",
    )
    parser.add_argument("--gpus", default=os.environ.get(ENV_GPUS, ""), help=f"default ${ENV_GPUS}")
    parser.add_argument(
        "--per-trial", default=os.environ.get(ENV_PER_TRIAL), help=f"default ${ENV_PER_TRIAL} or 1"
    )
    parser.add_argument(
        "--lease-dir", default=os.environ.get(ENV_LEASE_DIR), help=f"default ${ENV_LEASE_DIR}"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given: python -m hpopt.gpu_lease -- CMD ARGS...")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.gpus.strip() and not os.environ.get(ENV_LEASED):
        try:
            config = LeaseConfig.from_values(args.gpus.strip(), args.per_trial, args.lease_dir)
        except HpoptError as error:
            parser.error(str(error))
        acquire(config, inheritable=True).export()
    try:
        os.execvp(command[0], command)
    except OSError as error:
        print(f"hpopt.gpu_lease: cannot run {command[0]!r}: {error}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
