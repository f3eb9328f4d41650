"""The hunt folder's records as types: spec.json, hunt.json, a worker's record and best.json.

Why one module: each record is read by several steps (hunt, best, provenance, report, audit), and
a record read through `document["key"]` lookups spreads its defaults and its shape over all of
them. Here each is a frozen dataclass, loaded and checked in one place (an unknown or missing key
stops the step, naming the file and the key), with its defaults on the fields. Written back, a
record gives the same JSON as before, key for key and in the same order: these files are
compared across runs, by the audit and against the published result.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hpopt.files import write_json_atomically

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Record = TypeVar("Record", bound="DataclassInstance")


class RecordError(ValueError):
    """A record file of another shape than its type; the message names the file and the key."""


def from_document(kind: type[Record], document: Any, source: str) -> Record:
    """`kind` built from a JSON object, refused (naming `source` and the key) when the object
    has a key `kind` lacks or lacks a key without a default."""
    if not isinstance(document, dict):
        raise RecordError(f"{source}: not a JSON object")
    fields = {field.name: field for field in dataclasses.fields(kind)}
    unknown = sorted(set(document) - set(fields))
    missing = [
        name
        for name, field in fields.items()
        if name not in document
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if unknown or missing:
        found = [f"unknown key {key!r}" for key in unknown]
        found += [f"missing key {key!r}" for key in missing]
        raise RecordError(f"{source}: {'; '.join(found)}")
    return kind(**document)


def read_json(path: Path) -> Any:
    """A record file's JSON, or a RecordError naming the file."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise RecordError(f"{path}: not found") from error
    except ValueError as error:
        raise RecordError(f"{path}: not valid JSON ({error})") from error


@dataclasses.dataclass(frozen=True)
class HuntSpec:
    """`hunt/spec.json`: everything the hunt depends on, as the workflow's `hunt_spec` writes it
    (workflow/rules/common.smk). A changed spec reruns the hunt."""

    experiment: str
    results: str
    train_env: str
    storage: dict[str, Any]
    algorithm: dict[str, Any]
    max_trials: int
    max_broken: int
    n_workers: int
    heartbeat: int
    space: dict[str, str]
    recipe: dict[str, Any]
    data_folder: str
    config_file: str = "the config"
    parallel_hunts: int = 1
    trial_timeout: int | None = None
    min_free_mb: int | None = None
    # device ids, or "visible": the job's CUDA_VISIBLE_DEVICES (reprohunt.preflight.trial_gpus)
    gpus: list[int | str] | str = dataclasses.field(default_factory=list)
    warm_launcher: bool = False
    start_with_train_yaml: bool = False
    # Absent from spec.json at 1, so that the spec (and so the hunt) of 1-process trials stays
    # as it was before DDP trials existed.
    gpus_per_trial: int = 1

    @classmethod
    def load(cls, path: Path) -> HuntSpec:
        return from_document(cls, read_json(path), str(path))

    @property
    def trial_slots(self) -> int:
        """How many trials may run at once: workers per hunt process times hunt processes."""
        return self.n_workers * self.parallel_hunts

    @property
    def sequential(self) -> bool:
        """One trial at a time: what a seeded search needs to replay its trial sequence."""
        return self.trial_slots == 1

    @property
    def pickled(self) -> bool:
        """Whether the storage is a PickledDB file in the hunt folder (not a MongoDB server)."""
        return self.storage["type"] == "pickleddb"

    def document(self) -> dict[str, Any]:
        """spec.json's object: every field, `gpus_per_trial` only when it is not 1."""
        document = dataclasses.asdict(self)
        if self.gpus_per_trial == 1:
            del document["gpus_per_trial"]
        return document


@dataclasses.dataclass(frozen=True)
class Replay:
    """Whether re-running a hunt must give the same trials, and what made it depart."""

    expected: bool
    intact: bool
    departures: list[str]


@dataclasses.dataclass(frozen=True)
class ExperimentState:
    """Orion's own account of an experiment: counts by status and the broken trials' logs."""

    name: str
    version: int
    is_done: bool
    is_broken: bool
    status_counts: dict[str, int]
    completed: int
    broken_trial_logs: list[str]


@dataclasses.dataclass(frozen=True)
class HuntSummary(ExperimentState):
    """`hunt/hunt.json`: the judged experiment, how to replay it, and how it was run."""

    replay: Replay
    storage: dict[str, Any]
    command: list[str]
    orion_config: str
    max_trials: int
    trial_slots: int

    @classmethod
    def load(cls, path: Path) -> HuntSummary:
        document = read_json(path)
        summary = from_document(cls, document, str(path))
        replay = from_document(Replay, document["replay"], f"{path}: replay")
        return dataclasses.replace(summary, replay=replay)


@dataclasses.dataclass(frozen=True)
class WorkerRecord:
    """`hunt/workers/<I>.json`: one of `parallel_hunts` hunt processes, as it ended."""

    worker: int
    host: str
    pid: int
    experiment: str
    status_counts_at_exit: dict[str, int]


@dataclasses.dataclass(frozen=True)
class Best:
    """`hunt/best.json`: the trial the hunt chose, and by which rule."""

    experiment: str
    version: int
    trial_id: str
    objective: float
    params: dict[str, Any]
    selection_rule: str
    trials_completed: int
    working_dir: str

    @classmethod
    def load(cls, path: Path) -> Best:
        return from_document(cls, read_json(path), str(path))


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One entry of `hunt/trials.json`: a trial of the experiment, whatever its status."""

    id: str
    status: str
    params: dict[str, Any]
    objective: float | None
    statistics: dict[str, Any]
    submit_time: str | None
    start_time: str | None
    end_time: str | None
    duration_s: float | None
    working_dir: str | None


def load_trials(path: Path) -> list[TrialRecord]:
    """`hunt/trials.json`, each entry checked."""
    document = read_json(path)
    if not isinstance(document, list):
        raise RecordError(f"{path}: not a JSON list of trials")
    return [
        from_document(TrialRecord, trial, f"{path}: trial #{number}")
        for number, trial in enumerate(document, start=1)
    ]


def write_record(path: Path, record: Any) -> None:
    """A record dataclass (or a list of them) as indented JSON, atomically (hpopt.files)."""
    if isinstance(record, list):
        document: Any = [dataclasses.asdict(item) for item in record]
    else:
        document = dataclasses.asdict(record)
    write_json_atomically(path, document, indent=2)
