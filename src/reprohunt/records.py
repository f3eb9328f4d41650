"""A run's records as types: the hunt folder's spec.json, hunt.json, worker records, best.json
and trials.json, the final stage's comparison.json, and provenance.json.

Why one module: each record is read by several steps (hunt, best, provenance, report, audit,
published), and a record read through `document["key"]` lookups spreads its defaults and its
shape over all of them. Here each is a frozen dataclass, loaded and checked in one place (an
unknown or missing key stops the step, naming the file and the key; a nested record is built as
its own type, from the field's annotation), with its defaults on the fields. Written back, a
record gives the same JSON as before, key for key and in the same order: these files are
compared across runs, by the audit and against the published result.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
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
    hints = _field_types(kind)
    built = {
        name: _build(hints[name], value, f"{source}: {name}") for name, value in document.items()
    }
    try:
        return kind(**built)
    except RecordError as error:  # the type's own check (__post_init__) of its values
        raise RecordError(f"{source}: {error}") from error


@functools.cache
def _field_types(kind: type) -> dict[str, Any]:
    """The annotations of `kind`'s fields, resolved (they are strings under `annotations`)."""
    return typing.get_type_hints(kind)


def _build(hint: Any, value: Any, source: str) -> Any:
    """`value` as the annotation `hint` says: a dataclass built (checked) from its object, a list
    or dict of them entry by entry; a container of plain values checked to be that container;
    any other value as it is (a scalar's type is the writer's contract, not checked here)."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_document(hint, value, source)
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        candidates = [argument for argument in arguments if argument is not type(None)]
        return _build(candidates[0], value, source) if len(candidates) == 1 else value
    if origin is list:
        if not isinstance(value, list):
            raise RecordError(f"{source}: not a JSON list")
        return [
            _build(arguments[0], item, f"{source}[{index}]") for index, item in enumerate(value)
        ]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{source}: not a JSON object")
        return {key: _build(arguments[1], item, f"{source}.{key}") for key, item in value.items()}
    return value


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
    def replays(self) -> bool:
        """Whether a re-run must propose the same trials: a seeded search, and one trial at a
        time unless the search does not depend on when trials finish (the `optuna` algorithm,
        whose `batch` fixes what each proposal sees: reprohunt.orion_optuna)."""
        ((name, options),) = self.algorithm.items()
        seeded = (options or {}).get("seed") is not None
        return seeded and (self.trial_slots == 1 or name == "optuna")

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
        return from_document(cls, read_json(path), str(path))


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


COMPARISON_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Objective:
    """The metric the hunt minimised, and on which split (the result contract's `objective`)."""

    split: str
    metric: str


@dataclasses.dataclass(frozen=True)
class Summary:
    """One arm's values over the final seeds (in the seeds' order), their mean and sample
    standard deviation (ddof=1)."""

    values: list[float]
    mean: float
    std: float


@dataclasses.dataclass(frozen=True)
class PairedDifference(Summary):
    """The per-seed differences tuned − untuned, summarised, with their Student-t interval."""

    ci: list[float]


@dataclasses.dataclass(frozen=True)
class SplitComparison:
    """Both arms on one split, their paired difference, and the ratio of their means (None when
    the untuned mean is 0)."""

    tuned: Summary
    untuned: Summary
    difference: PairedDifference
    ratio: float | None

    def arm(self, name: str) -> Summary:
        """The summary of the arm `name` ("tuned" or "untuned")."""
        return {"tuned": self.tuned, "untuned": self.untuned}[name]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """`final/comparison.json`: tuned against untuned over the final seeds, and the verdict
    (built by reprohunt.compare, which says how)."""

    comparison_format: int
    objective: Objective
    metric: str
    direction: str
    verdict_split: str
    seeds: list[int]
    confidence: float
    t_quantile: float
    splits: dict[str, SplitComparison]
    verdict: str
    verdict_text: str

    def __post_init__(self) -> None:
        """Refused when of another format, or without the split its verdict is about."""
        if self.comparison_format != COMPARISON_FORMAT:
            raise RecordError(
                f"comparison_format {self.comparison_format!r}, this code reads {COMPARISON_FORMAT}"
            )
        if self.verdict_split not in self.splits:
            raise RecordError(
                f"splits: no {self.verdict_split!r} split, which the verdict is about"
            )

    @classmethod
    def load(cls, path: Path) -> Comparison:
        return from_document(cls, read_json(path), str(path))

    @property
    def verdict_comparison(self) -> SplitComparison:
        """The split the verdict is about (test)."""
        return self.splits[self.verdict_split]

    def document(self) -> dict[str, Any]:
        """comparison.json's object."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EnvironmentFacts:
    """A venv in provenance.json: the lock it was built from (then and now) and what it holds."""

    python: str
    lock: str | None
    lock_sha256_at_setup: str | None
    lock_sha256_now: str | None
    pip_freeze: list[str]
    pip_freeze_sha256: str


@dataclasses.dataclass(frozen=True)
class Hardware:
    """The machine provenance.json was collected on (`collect_env`: torch's own report)."""

    python: str
    platform: str
    cpu_count: int | None
    torch: str
    torch_cuda: str | None
    cudnn: int | None
    cuda_available: bool
    gpus: list[str]
    nvidia_smi: str | None
    image: dict[str, str | None]
    collect_env: dict[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Seeds:
    """Every seed of the run: the recipe's, the search algorithm's options, the final stage's
    (absent from a record older than the final stage)."""

    recipe: int
    orion_algorithm: dict[str, Any]
    final: list[int] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrionRecord:
    """The Orion experiment in provenance.json, with every trial (`replay`: absent from a record
    older than the replay check)."""

    experiment: str
    version: int
    storage: dict[str, Any]
    space: dict[str, str]
    algorithm: dict[str, Any]
    max_trials: int
    max_broken: int
    n_workers: int
    status_counts: dict[str, int]
    replay: Replay | None = None
    trials: list[TrialRecord]


@dataclasses.dataclass(frozen=True)
class Delivered:
    """Which final run is the delivered model, and its result file."""

    arm: str
    seed: int
    result: str


@dataclasses.dataclass(frozen=True)
class FinalStage:
    """The final stage in provenance.json: its seeds, each run's result document by arm and
    seed (the result contract's, as the recipe wrote it), and the comparison."""

    seeds: list[int]
    delivered: Delivered
    runs: dict[str, dict[str, dict[str, Any]]]
    comparison: Comparison


@dataclasses.dataclass(frozen=True)
class RuleCost:
    """A rule's wall time and peak memory, from its Snakemake benchmark file (None: not
    measured)."""

    wall_s: float
    max_rss_mib: float | None


# Sections a record made by older code lacks: read as None, and left out when written as None.
LATER_PROVENANCE_SECTIONS = (
    "numerics",
    "data_files_sha256",
    "configuration",
    "configuration_sha256",
    "final",
    "scheduler",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Provenance:
    """`results/<exp>/provenance.json` (built by reprohunt.provenance, which says what each part
    is). The sections of LATER_PROVENANCE_SECTIONS are optional, since the audit and the
    published check read records made by older code; free-form parts stay JSON objects: `git`
    (two shapes: a checkout's, an image's), `data` (the recipe's prepared.json), `recipe` (its
    arguments), `numerics` (reprohunt.numerics.in_use's, read by that module), `determinism`,
    `final_metrics` (a result document), `commands` (whose steps changed with the stages),
    `scheduler` and `checklist` (a derived summary for readers)."""

    created: str
    results: str
    git: dict[str, Any]
    environments: dict[str, EnvironmentFacts]
    hardware: Hardware
    numerics: dict[str, Any] | None = None
    data: dict[str, Any]
    data_hashes_sha256: str
    data_files_sha256: dict[str, str] | None = None
    recipe: dict[str, Any]
    configuration: dict[str, Any] | None = None
    configuration_sha256: str | None = None
    seeds: Seeds
    determinism: dict[str, Any]
    orion: OrionRecord
    best: Best
    final_metrics: dict[str, Any]
    final: FinalStage | None = None
    commands: dict[str, Any]
    rule_costs: dict[str, RuleCost]
    scheduler: dict[str, Any] | None = None
    checklist: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> Provenance:
        return from_document(cls, read_json(path), str(path))

    def document(self) -> dict[str, Any]:
        """provenance.json's object: a later section that is None left out, as older code did."""
        document = dataclasses.asdict(self)
        for name in LATER_PROVENANCE_SECTIONS:
            if document[name] is None:
                del document[name]
        if document["seeds"]["final"] is None:
            del document["seeds"]["final"]
        if document["orion"]["replay"] is None:
            del document["orion"]["replay"]
        return document


def write_record(path: Path, record: Any) -> None:
    """A record dataclass (or a list of them) as indented JSON, atomically (hpopt.files)."""
    if isinstance(record, list):
        document: Any = [dataclasses.asdict(item) for item in record]
    else:
        document = dataclasses.asdict(record)
    write_json_atomically(path, document, indent=2)
