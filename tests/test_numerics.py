"""The numerics profile: refused where it cannot hold, recorded, audited, and the same numbers on
other CPUs.

Other CPUs come from Debian's qemu-user (installed by containers/ensure-packages.sh when
missing): `qemu-x86_64 -cpu Haswell-v4` is an Intel AVX2 CPU, `-cpu EPYC-Rome-v2` an AMD one,
`-cpu Nehalem` one without AVX2. The emulator computes approximate instructions (rsqrt, rcp)
exactly, unlike either vendor's tables, so any path that depends on them shows up as a
difference: a strict detector of vendor-specific numerics.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from test_audit import EXPERIMENT, WORKFLOW_PYTHON, audit, copy_run
from workflow_run import REPO, TINY, merge, snakemake, without_coverage, write_config

from reprohunt import numerics
from reprohunt import numerics_check as numerics_check_module
from reprohunt.optrace import Stage, read_records

CROSS_CPU_STEPS = REPO / "tests" / "fixtures" / "cross_cpu_steps.py"
CPU_DEPENDENT = REPO / "tests" / "fixtures" / "cpu_dependent_recipe"
ENSURE = REPO / "containers" / "ensure-packages.sh"
EMULATED = ("Haswell-v4", "EPYC-Rome-v2")


@pytest.fixture(scope="module")
def qemu(tmp_path_factory: pytest.TempPathFactory) -> str:
    log = tmp_path_factory.mktemp("qemu") / "apt.log"
    ensured = subprocess.run(
        [str(ENSURE), str(log), "qemu-user:qemu-x86_64"], capture_output=True, text=True
    )
    if ensured.returncode == 3:
        pytest.skip(ensured.stderr.strip())
    assert ensured.returncode == 0, ensured.stderr
    return shutil.which("qemu-x86_64") or "qemu-x86_64"


def no_avx2(model: str = "Nehalem") -> dict[str, object]:
    return {"machine": "x86_64", "vendor": "GenuineIntel", "model": model, "flags": ["sse4_2"]}


def test_portable_is_refused_on_a_cpu_it_cannot_serve_naming_the_fix() -> None:
    with pytest.raises(numerics.NumericsError) as refused:
        numerics.check(numerics.PORTABLE, "my.yaml: numerics", no_avx2())
    message = str(refused.value)
    assert message.startswith("my.yaml: numerics:")
    assert "lacks avx2, fma" in message and "`numerics: native`" in message
    arm = {"machine": "aarch64", "vendor": None, "model": None, "flags": []}
    with pytest.raises(numerics.NumericsError, match="is not x86-64"):
        numerics.check(numerics.PORTABLE, "my.yaml: numerics", arm)
    numerics.check(numerics.NATIVE, "my.yaml: numerics", arm)  # native runs anywhere
    with pytest.raises(numerics.NumericsError, match="use one of portable, native"):
        numerics.check("fast", "my.yaml: numerics")


def test_native_clears_an_inherited_cap_and_portable_sets_every_variable() -> None:
    inherited = {"ATEN_CPU_CAPABILITY": "default", "PATH": "/bin"}
    numerics.apply(numerics.NATIVE, "test", inherited)
    assert inherited == {"PATH": "/bin"}
    numerics.apply(numerics.PORTABLE, "test", inherited)
    assert inherited == {"PATH": "/bin", **numerics.PORTABLE_ENV}


def test_a_cpu_without_avx2_is_refused_before_the_command_runs(qemu: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    command = [qemu, "-cpu", "Nehalem", sys.executable, "-m", "reprohunt.logged", "--numerics"]
    touch = ["--", "touch", str(marker)]
    refused = subprocess.run(
        [*command, "portable", str(tmp_path / "log"), *touch], capture_output=True, text=True
    )
    assert refused.returncode == 2, refused.stderr
    assert "numerics `portable` needs an x86-64 CPU with AVX2" in refused.stderr
    assert "Set `numerics: native`" in refused.stderr
    assert not marker.exists()
    native = subprocess.run(
        [*command, "native", str(tmp_path / "log"), *touch], capture_output=True, text=True
    )
    assert native.returncode == 0, native.stderr
    assert marker.exists()


@pytest.mark.slow
def test_every_computing_step_gives_the_same_bits_on_intel_and_amd(
    qemu: str, tmp_path: Path
) -> None:
    """The default workflow's computing steps on the tiny corpus (tests/fixtures/
    cross_cpu_steps.py: prepare, a trial, the default sampler's proposals from a trial history, a
    retrain), under the portable profile on the host and emulated Intel and AMD CPUs, traced as
    the numerics check traces a recipe: every tensor op agrees, and so do the prepared data's
    hashes, the trial's objective, the proposals and the retrain's metrics."""
    environment = dict(os.environ)
    numerics.apply(numerics.PORTABLE, "test", environment)
    runner = numerics_check_module.Runner(sys.executable, qemu, environment, tmp_path)
    emulated = numerics_check_module.Runner(
        sys.executable, qemu, without_coverage(environment), tmp_path
    )

    def stages(cpu: str) -> list[Stage]:
        record = str(tmp_path / cpu / "steps.ops.jsonl")
        return [Stage("steps", str(CROSS_CPU_STEPS), [str(tmp_path / cpu / "work")], record)]

    runner.run("host", "run", stages("host"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(emulated.run, cpu, "run", stages(cpu)) for cpu in EMULATED]:
            future.result()
    results = {
        cpu: json.loads((tmp_path / cpu / "work" / "steps.json").read_text())
        for cpu in ("host", *EMULATED)
    }
    # Each ran on the CPU it was meant to (no AVX-512 under emulation, whatever the host has).
    for cpu in EMULATED:
        assert results[cpu].pop("cpu_flags") == ["sse4_2", "avx", "avx2", "fma"], cpu
    host = results["host"]
    host.pop("cpu_flags")
    assert set(host) == {"data_hashes_sha256", "trial", "proposals", "retrain"}
    assert host["trial"][0]["type"] == "objective" and host["retrain"]["test"]["loss"] > 0
    ops = read_records(tmp_path / "host" / "steps.ops.jsonl")
    assert len(ops) > 3000  # prepare, two trainings with validation and test
    for cpu in EMULATED:
        index = numerics_check_module.first_op_difference(
            ops, read_records(tmp_path / cpu / "steps.ops.jsonl")
        )
        assert index is None, f"op #{index} ({ops[min(index, len(ops) - 1)]}) differs on {cpu}"
        for step, value in host.items():
            assert results[cpu][step] == value, f"{step} differs on {cpu}"


def numerics_check(
    tmp_path: Path,
    config: dict,
    *options: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str, dict]:
    """The check's command line, in process (so measured), its runs unmeasured: exit status,
    what it printed, the report."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    for name in os.environ.keys() - without_coverage(dict(os.environ)).keys():
        monkeypatch.delenv(name)
    monkeypatch.chdir(REPO)
    code = numerics_check_module.main(["--config", str(config_file), "--work", str(work), *options])
    report = json.loads((work / "report.json").read_text()) if code < 2 else {}
    return code, capsys.readouterr().out, report


@pytest.mark.slow
def test_the_numerics_check_names_a_cpu_dependent_op_its_line_and_the_file_it_changed(
    qemu: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The emulated AMD CPU is enough: its float32 sqrt differs from an Intel host's (correctly
    # rounded) and from an AMD host's (another approximation) alike.
    config = {
        "experiment": "probe",
        "recipe": {"dir": str(CPU_DEPENDENT), "prepare": "probe_prepare.py"},
        "data": {},
    }
    code, out, report = numerics_check(
        tmp_path, config, "--cpus", EMULATED[1], monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 1, out
    assert out.startswith("numerics check: NOT portable")
    prepare_op, train_op = report["op_differences"]
    assert prepare_op["stage"] == "prepare" and prepare_op["op"] == "aten.sqrt.default"
    assert prepare_op["where"].endswith("probe_prepare.py:21 (<module>)")
    assert train_op["stage"] == "train" and train_op["op"] == "aten.sqrt.default"
    assert train_op["where"].endswith("cpu_dependent_recipe/train.py:12 (<module>)")
    for found in (prepare_op, train_op):
        values = found["values"]
        assert 0 < values["differing"] < values["total"] == 4096
        assert 0 < values["largest"] < 1e-4
    (changed,) = report["file_differences"]  # labels.txt is the same on every CPU
    assert changed["path"] == "features.npy" and changed["values"]["differing"] > 0
    assert f"op #{train_op['index']} aten.sqrt.default at " in out


@pytest.mark.slow
def test_the_mlp_recipe_passes_the_numerics_check(
    qemu: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The speaker-id recipe's ops are compared, through the same tracing, by the test of every
    # computing step above (its preparation, a trial and a retrain: more than this check runs).
    tiny = ["data.synthetic.n_speakers=4", "data.synthetic.utts_per_speaker=8"]
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    mlp = {"dir": str(REPO / "recipes" / "speaker_mlp"), "prepare": "speaker_mlp_prepare.py"}
    config["recipe"] |= mlp
    options = [item for value in [*tiny, "recipe.args.steps=5"] for item in ("--set", value)]
    code, out, report = numerics_check(
        tmp_path, config, *options, monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 0, out
    assert report["agree"] and report["cpus"] == ["host", *EMULATED]
    assert report["ops"]["prepare"] > 100 and report["ops"]["train"] > 100 and report["files"] > 10
    assert out.startswith(f"numerics check: all {sum(report['ops'].values())} ops")


@pytest.mark.slow
def test_provenance_and_report_record_the_numerics_in_use(tiny_run: Path) -> None:
    results = tiny_run / EXPERIMENT
    record = json.loads((results / "provenance.json").read_text())
    facts = record["numerics"]
    assert record["recipe"]["numerics"] == facts["profile"] == numerics.PORTABLE
    assert facts["environment"] == numerics.PORTABLE_ENV
    assert facts["torch_cpu_capability"] == "AVX2"
    assert facts["cpu"] == numerics.cpu() and facts["cpu"]["model"]
    assert "AVX512_SPR" not in facts["numpy_dispatch_enabled"]
    assert facts["mkl"] and facts["onednn"] and facts["openblas"]
    html = (results / "report.html").read_text()
    assert numerics.describe(facts) in html
    assert "ATEN_CPU_CAPABILITY=avx2" in html


@pytest.mark.slow
def test_a_portable_result_audits_bit_identical_whatever_the_auditor_sets(
    tiny_run: Path, tmp_path: Path
) -> None:
    # An auditor whose environment lets torch pick AVX-512 still retrains under the record's
    # profile: the audit sets it, so the retrained numbers are the recorded bits.
    workdir = copy_run(tiny_run, tmp_path)
    env = os.environ | {"ATEN_CPU_CAPABILITY": "avx512", "DNNL_MAX_CPU_ISA": "AVX512_CORE"}
    argv = [sys.executable, "-m", "reprohunt.audit", "--results", EXPERIMENT]
    argv += ["--workflow-python", str(WORKFLOW_PYTHON)]
    run = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    checks = json.loads((workdir / EXPERIMENT / "audit/audit.json").read_text())["checks"]
    retraining = next(c for c in checks if c["check"].startswith("retraining"))
    assert retraining["status"] == "PASS" and retraining["strength"] == "bit-identical"
    assert "bit-identity required" in retraining["details"][-1]


def as_native_from_another_cpu(results: Path) -> None:
    """Make the copy's record say what a native run on an AMD machine would have recorded."""
    path = results / "provenance.json"
    record = json.loads(path.read_text())
    record["recipe"]["numerics"] = numerics.NATIVE
    record["numerics"] |= {
        "profile": numerics.NATIVE,
        "environment": {},
        "torch_cpu_capability": "AVX512",
        "cpu": {
            "machine": "x86_64",
            "vendor": "AuthenticAMD",
            "model": "AMD EPYC 9R14 96-Core Processor",
            "flags": ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl"],
        },
    }
    path.write_text(json.dumps(record, indent=2))


@pytest.fixture(scope="module")
def native_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_run with its final stage made again under `numerics: native` on this CPU (data and
    hunt kept: --rerun-triggers mtime), so that an audit here retrains its numbers bit for bit.

    Why not tiny_run itself: at tiny size one utterance moves an error rate by 0.125, and
    portable vs native on some CPUs moved a retrained value outside its 2 seeds' spread (AMD
    EPYC, 2026-12-03), so an honest record could fail the weaker check by chance.
    """
    workdir = tmp_path_factory.mktemp("native_run")
    shutil.copytree(tiny_run, workdir, symlinks=True, dirs_exist_ok=True)
    write_config(workdir, merge(TINY, {"numerics": numerics.NATIVE}))
    run = snakemake(workdir, "--forcerun", "final_recipe", "--rerun-triggers", "mtime")
    assert run.returncode == 0, run.stderr[-4000:]
    final_recipe = json.loads((workdir / EXPERIMENT / "final/recipe.json").read_text())
    assert final_recipe["numerics"] == numerics.NATIVE
    return workdir


@pytest.mark.slow
def test_a_native_result_from_another_cpu_gets_the_weaker_check_which_can_fail(
    native_run: Path, tmp_path: Path
) -> None:
    """The record says another CPU, so the audit may not require bit identity; its numbers are
    this CPU's native ones, so the honest retraining lies within any spread."""
    workdir = copy_run(native_run, tmp_path / "honest")
    results = workdir / EXPERIMENT
    as_native_from_another_cpu(results)
    run = audit(workdir)
    checks = json.loads((results / "audit/audit.json").read_text())["checks"]
    retraining = next(c for c in checks if c["check"].startswith("retraining"))
    assert retraining["strength"] == "weaker", run.stdout
    assert retraining["status"] == "PASS", run.stdout
    note = retraining["details"][-1]
    assert "made with native numerics on AMD EPYC 9R14" in note
    assert "bit-identity is not expected here" in note and "standard deviations" in note
    assert "weaker" in run.stdout
    # The same record whose untuned seeds all claim a test error of 0: the honest retraining
    # lies outside their spread, and the weaker check says so.
    workdir = copy_run(native_run, tmp_path / "claimed")
    results = workdir / EXPERIMENT
    as_native_from_another_cpu(results)
    for path in (results / "final" / "untuned").glob("seed*/metrics.json"):
        document = json.loads(path.read_text())
        document["metrics"]["test"]["error"] = 0.0
        path.write_text(json.dumps(document))
    run = audit(workdir)
    assert run.returncode == 1
    checks = json.loads((results / "audit/audit.json").read_text())["checks"]
    retraining = next(c for c in checks if c["check"].startswith("retraining"))
    assert retraining["status"] == "FAIL"
    assert any(
        "test.error: recorded 0.0" in line and "3 std" in line for line in retraining["details"]
    )


@pytest.mark.slow
def test_handed_over_files_are_readable_by_others(tiny_run: Path) -> None:
    # Written atomically (temp file + rename), yet with the mode a plain open gives under the
    # test's umask (022): readable by another account or a web server.
    results = tiny_run / EXPERIMENT
    trial_metrics = sorted(results.glob("hunt/*/trials/*/metrics.json"))
    assert trial_metrics
    for path in [results / "report.html", results / "provenance.json", *trial_metrics]:
        assert path.stat().st_mode & 0o777 == 0o644, path


def published(results: Path, *extra: str) -> str:
    command = [sys.executable, "-m", "reprohunt.published", "--results", str(results), *extra]
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    return run.stdout.strip()


@pytest.mark.slow
def test_a_run_says_whether_it_reproduced_the_published_result(
    tiny_run: Path, tmp_path: Path
) -> None:
    results = tiny_run / EXPERIMENT
    path = tmp_path / "published.json"
    published(results, "--published", str(path), "--write")
    assert published(results, "--published", str(path)).startswith(
        "reproduced the published result bit for bit"
    )
    document = json.loads(path.read_text())
    seed = sorted(document["final"]["tuned"])[1]
    document["final"]["tuned"][seed]["test"]["error"] += 0.0025
    path.write_text(json.dumps(document))
    line = published(results, "--published", str(path))
    assert line.startswith("did NOT reproduce the published result: same best, another final stage")
    assert f"first difference: final.tuned.{seed}.test.error" in line
    document["configuration"]["recipe"]["seed"] += 1
    path.write_text(json.dumps(document))
    assert published(results, "--published", str(path)).startswith(
        "another configuration, nothing to compare: first at configuration.recipe.seed"
    )
    # The repository's own published file names the default configuration's experiment.
    shipped = json.loads((REPO / "published" / "speaker_id.json").read_text())
    assert shipped["numerics"] == numerics.PORTABLE
    assert shipped["verdict"].startswith("tuning ")
