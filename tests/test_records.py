"""The comparison and provenance records (reprohunt.records): loaded, checked, written back as
the same JSON, byte for byte; provenance records of older code still load. No workflow runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from reprohunt import compare
from reprohunt.records import Comparison, Provenance, RecordError, from_document
from reprohunt.result import Result

REPO = Path(__file__).resolve().parents[1]
# final/comparison.json as reprohunt.compare wrote it before the comparison was typed: three
# seeds of the hand-made results below (test_compare.py's first case).
COMPARISON = Path(__file__).parent / "fixtures" / "comparison.json"
SEEDS = [1986, 1987, 1988]
TUNED = [(0.10, 0.20), (0.12, 0.21), (0.11, 0.19)]
UNTUNED = [(0.20, 0.30), (0.21, 0.30), (0.23, 0.31)]


def write_results(folder: Path, arm: str, values: list[tuple[float, float]]) -> list[str]:
    """Per-seed result files of `arm` (test, valid error), as the final stage writes them."""
    paths = []
    for seed, (test, valid) in zip(SEEDS, values, strict=True):
        path = compare.arm_result(folder, arm, seed)
        path.parent.mkdir(parents=True)
        document = {
            "result_format": 1,
            "objective": {"split": "valid", "metric": "error"},
            "metrics": {"valid": {"error": valid}, "test": {"error": test, "loss": 1.0}},
        }
        path.write_text(json.dumps(document))
        paths.append(str(path))
    return paths


def test_compare_writes_the_comparison_as_before_byte_for_byte(tmp_path: Path) -> None:
    tuned = write_results(tmp_path, "tuned", TUNED)
    untuned = write_results(tmp_path, "untuned", UNTUNED)
    out = tmp_path / "comparison.json"
    seeds = [str(seed) for seed in SEEDS]
    argv = ["--seeds", *seeds, "--tuned", *tuned, "--untuned", *untuned, "--out", str(out)]
    assert compare.main(argv) == 0
    assert out.read_bytes() == COMPARISON.read_bytes()


def test_a_comparison_round_trips_key_for_key_in_order() -> None:
    loaded = Comparison.load(COMPARISON)
    assert loaded.verdict == compare.HELPED
    assert loaded.verdict_comparison.arm("untuned").values == [0.2, 0.21, 0.23]
    text = json.dumps(loaded.document(), indent=2) + "\n"
    assert text == COMPARISON.read_text()


def test_a_comparison_of_another_shape_is_refused_naming_the_key() -> None:
    document = json.loads(COMPARISON.read_text())
    broken = copy.deepcopy(document)
    del broken["splits"]["test"]["difference"]["ci"]
    with pytest.raises(RecordError, match=r"x\.json: splits\.test: difference: missing key .ci."):
        from_document(Comparison, broken, "x.json")
    with pytest.raises(RecordError, match="comparison_format 2, this code reads 1"):
        from_document(Comparison, document | {"comparison_format": 2}, "x.json")
    with pytest.raises(RecordError, match="no 'test' split"):
        from_document(Comparison, document | {"splits": {}}, "x.json")


def test_the_published_verdict_is_the_comparison_of_its_per_seed_metrics() -> None:
    """published/speaker_id.json keeps each seed's metrics and the verdict line, not the whole
    comparison: the comparison recomputed from those metrics gives the same line, and a
    comparison written from them loads back as itself."""
    document = json.loads((REPO / "published" / "speaker_id.json").read_text())
    objective = {"split": "valid", "metric": "error"}
    runs = {
        arm: [
            Result(Path(f"{arm}/seed{seed}"), {"objective": objective, "metrics": metrics})
            for seed, metrics in by_seed.items()
        ]
        for arm, by_seed in document["final"].items()
    }
    seeds = [int(seed) for seed in document["final"]["tuned"]]
    comparison = compare.compare(seeds, runs["tuned"], runs["untuned"])
    assert comparison.verdict_text == document["verdict"]
    written = json.loads(json.dumps(comparison.document()))
    assert from_document(Comparison, written, "recomputed") == comparison


def full_record() -> dict[str, Any]:
    """A provenance record of today's shape (values made up, every section present)."""
    comparison = json.loads(COMPARISON.read_text())
    return {
        "created": "2025-01-01T00:00:00+00:00",
        "results": "results/speaker_id",
        "git": {"commit": "abc", "dirty": False},
        "environments": {
            "train": {
                "python": "python",
                "lock": "train.txt",
                "lock_sha256_at_setup": None,
                "lock_sha256_now": None,
                "pip_freeze": ["torch==2.0"],
                "pip_freeze_sha256": "0" * 64,
            }
        },
        "hardware": {
            "python": "3.11.0",
            "platform": "Linux",
            "cpu_count": 2,
            "torch": "2.0",
            "torch_cuda": None,
            "cudnn": None,
            "cuda_available": False,
            "gpus": [],
            "nvidia_smi": None,
            "image": {"REPROHUNT_IMAGE": None},
            "collect_env": {"os": "Linux"},
        },
        "numerics": {"profile": "portable", "cpu": {"model": "Test CPU"}},
        "data": {"counts": {"train": 10}},
        "data_hashes_sha256": "1" * 64,
        "data_files_sha256": {"features/train.npy": "2" * 64},
        "recipe": {"seed": 1986, "numerics": "portable"},
        "configuration": {"space": {"lr": "loguniform(1e-4, 1e-1)"}},
        "configuration_sha256": "3" * 64,
        "seeds": {"recipe": 1986, "orion_algorithm": {"random": {"seed": 1}}, "final": SEEDS},
        "determinism": {"torch.use_deterministic_algorithms": True},
        "orion": {
            "experiment": "speaker_id-0123abcd",
            "version": 1,
            "storage": {"type": "pickleddb"},
            "space": {"lr": "loguniform(1e-4, 1e-1)"},
            "algorithm": {"random": {"seed": 1}},
            "max_trials": 1,
            "max_broken": 1,
            "n_workers": 1,
            "status_counts": {"completed": 1},
            "replay": {"expected": True, "intact": True, "departures": []},
            "trials": [
                {
                    "id": "t1",
                    "status": "completed",
                    "params": {"lr": 0.001},
                    "objective": 0.3,
                    "statistics": {},
                    "submit_time": None,
                    "start_time": None,
                    "end_time": None,
                    "duration_s": 1.5,
                    "working_dir": None,
                }
            ],
        },
        "best": {
            "experiment": "speaker_id-0123abcd",
            "version": 1,
            "trial_id": "t1",
            "objective": 0.3,
            "params": {"lr": 0.001},
            "selection_rule": "lowest objective",
            "trials_completed": 1,
            "working_dir": "/tmp/t1",
        },
        "final_metrics": {"result_format": 1, "metrics": {"test": {"error": 0.1}}},
        "final": {
            "seeds": SEEDS,
            "delivered": {"arm": "tuned", "seed": 1986, "result": "final/metrics.json"},
            "runs": {"tuned": {"1986": {"metrics": {"test": {"error": 0.1}}}}},
            "comparison": comparison,
        },
        "commands": {"hunt": ["python", "-m", "reprohunt.hunt"], "retrain": {}},
        "rule_costs": {"hunt": {"wall_s": 10.0, "max_rss_mib": None}},
        "scheduler": {"type": "local"},
        "checklist": {"selection_criterion": "lowest objective"},
    }


def test_a_provenance_record_round_trips_with_its_sections_typed(tmp_path: Path) -> None:
    path = tmp_path / "provenance.json"
    text = json.dumps(full_record(), indent=2) + "\n"
    path.write_text(text)
    record = Provenance.load(path)
    assert record.final is not None
    assert record.final.comparison == Comparison.load(COMPARISON)
    assert record.orion.replay is not None and record.orion.replay.intact
    assert record.orion.trials[0].duration_s == 1.5
    assert record.environments["train"].lock == "train.txt"
    assert record.rule_costs["hunt"].max_rss_mib is None
    assert json.dumps(record.document(), indent=2) + "\n" == text


def test_a_record_of_older_code_loads_without_its_later_sections(tmp_path: Path) -> None:
    """The audit and the published check read results made before the final stage, the
    numerics profiles, the replay check, SLURM records and configuration records."""
    document = full_record()
    for section in ("final", "numerics", "configuration", "configuration_sha256"):
        del document[section]
    del document["data_files_sha256"], document["scheduler"]
    del document["seeds"]["final"]
    del document["orion"]["replay"]
    path = tmp_path / "provenance.json"
    path.write_text(json.dumps(document))
    record = Provenance.load(path)
    assert (record.final, record.numerics, record.configuration, record.orion.replay) == (
        None,
        None,
        None,
        None,
    )
    assert record.document() == document


def test_a_provenance_record_of_another_shape_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "provenance.json"
    document = full_record()
    document["hardware"]["cpu_model"] = "extra"
    path.write_text(json.dumps(document))
    with pytest.raises(RecordError) as raised:
        Provenance.load(path)
    assert f"{path}: hardware: unknown key 'cpu_model'" in str(raised.value)
    document = full_record()
    del document["orion"]["trials"][0]["status"]
    path.write_text(json.dumps(document))
    with pytest.raises(RecordError, match=r"orion: trials\[0\]: missing key 'status'"):
        Provenance.load(path)
