"""The container image definition, checked without a Docker engine.

Each rule is a function that returns the problems it finds in a Dockerfile (or .dockerignore)
text. Every rule is tested twice: clean on the real file, and failing on a broken variant of it,
so no rule can pass by accident. hadolint runs with the committed .hadolint.yaml, and the
entrypoint and GPU smoke scripts run for real on this host. The real build is `make image-test`.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()
DOCKERIGNORE = (REPO / ".dockerignore").read_text()
HADOLINT = REPO / ".venv" / "workflow" / "bin" / "hadolint"
TRAIN_PYTHON = REPO / ".venv" / "train" / "bin" / "python"
WORKFLOW_BIN = REPO / ".venv" / "workflow" / "bin"

REQUIRED_LABELS = {
    f"org.opencontainers.image.{key}"
    for key in ("source", "revision", "created", "version", "licenses", "base.name", "base.digest")
}
MUST_IGNORE = ("results", ".venv", "data", ".git")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
PIP_INSTALL = re.compile(r"\bpip3?\s+install\b")
# Where one shell command ends inside a RUN or a script line.
COMMAND_END = re.compile(r"&&|\|\||;|\n|\bthen\b|\belse\b|\bfi\b")


def parse(text: str) -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO(text.encode()))


def instructions(text: str, name: str) -> list[dict]:
    return [i for i in parse(text).structure if i["instruction"] == name]


def final_stage(text: str) -> list[dict]:
    """The instructions after the last FROM: what the shipped image is made of."""
    structure = parse(text).structure
    last_from = max(n for n, i in enumerate(structure) if i["instruction"] == "FROM")
    return structure[last_from:]


def global_arg_defaults(text: str) -> dict[str, str]:
    """ARG defaults declared before the first FROM (the ones FROM lines can use)."""
    defaults = {}
    for i in parse(text).structure:
        if i["instruction"] == "FROM":
            break
        if i["instruction"] == "ARG" and "=" in i["value"]:
            key, value = i["value"].split("=", 1)
            defaults[key] = value.strip("\"'")
    return defaults


def pip_install_commands(shell_text: str) -> list[str]:
    """Each `pip install ...` command, up to the end of its shell command."""
    joined = shell_text.replace("\\\n", " ")
    return [COMMAND_END.split(joined[m.start() :])[0] for m in PIP_INSTALL.finditer(joined)]


# --- the rules ---------------------------------------------------------------------------------


def unpinned_bases(text: str) -> list[str]:
    """Every external FROM resolves to a digest; BASE_IMAGE is Debian 12 slim, as labelled."""
    stages = {
        i["value"].split()[-1] for i in instructions(text, "FROM") if " as " in i["value"].lower()
    }
    problems = [
        f"FROM {image} is not pinned by @sha256 digest"
        for image in parse(text).parent_images
        if image not in stages and not DIGEST.search(image)
    ]
    base = global_arg_defaults(text).get("BASE_IMAGE", "")
    if not re.fullmatch(r"debian:bookworm-slim@sha256:[0-9a-f]{64}", base):
        problems.append(f"ARG BASE_IMAGE={base!r} is not debian:bookworm-slim@sha256:<digest>")
    labelled = parse(text).labels.get("org.opencontainers.image.base.digest", "")
    if base.partition("@")[2] != labelled:
        problems.append(f"label base.digest {labelled!r} differs from BASE_IMAGE's digest")
    return problems


def read_repo_file(relative: str) -> str:
    return (REPO / relative).read_text()


def unhashed_pip_installs(
    text: str, read_script: Callable[[str], str] = read_repo_file
) -> list[str]:
    """pip installs only from hashed locks; --no-deps (our package) and the documented TORCH_INDEX
    override are the exceptions, and the override is off unless the build asks for it.
    Scripts from containers/ that RUN lines call are checked too: they do the real installs."""
    runs = [i["value"] for i in instructions(text, "RUN")]
    scripts = {m for run in runs for m in re.findall(r"containers/[\w.-]+\.sh", run)}
    sources = runs + [read_script(script) for script in sorted(scripts)]
    problems = []
    for command in (c for source in sources for c in pip_install_commands(source)):
        if "$TORCH_INDEX" in command:
            if global_arg_defaults(text).get("TORCH_INDEX") or any(
                i["value"].startswith("TORCH_INDEX=") and i["value"] != "TORCH_INDEX="
                for i in instructions(text, "ARG")
            ):
                problems.append("ARG TORCH_INDEX has a default: the unhashed install is on")
        elif "--require-hashes" not in command and "--no-deps" not in command:
            problems.append(f"pip install without --require-hashes or --no-deps: {command.strip()}")
    if not any(re.search(r"containers/setup-env\.sh speechbrain /opt/venv/train", r) for r in runs):
        problems.append(
            "the train env is not made from speechbrain.lock (the CUDA lock + SpeechBrain)"
        )
    return problems


def root_final_user(text: str) -> list[str]:
    users = [i["value"].split(":")[0] for i in final_stage(text) if i["instruction"] == "USER"]
    if not users:
        return ["the final stage sets no USER: the image runs as root"]
    return [f"the last USER is {users[-1]}"] if users[-1] in ("root", "0") else []


def shell_form_entrypoint(text: str) -> list[str]:
    entrypoints = [i["value"] for i in final_stage(text) if i["instruction"] == "ENTRYPOINT"]
    if not entrypoints:
        return ["no ENTRYPOINT"]
    try:
        argv = json.loads(entrypoints[-1])
    except json.JSONDecodeError:
        return [f"ENTRYPOINT {entrypoints[-1]} is shell form, not a JSON array"]
    ok = isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)
    return [] if ok else [f"ENTRYPOINT {entrypoints[-1]} is not a list of strings"]


def label_problems(text: str) -> list[str]:
    labels = parse(text).labels
    problems = [f"label {key} is missing" for key in sorted(REQUIRED_LABELS - labels.keys())]
    created = labels.get("org.opencontainers.image.created", "")
    try:
        datetime.fromisoformat(created)
    except ValueError:
        problems.append(f"label created {created!r} is not RFC 3339")
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    if labels.get("org.opencontainers.image.version") != version:
        problems.append(f"label version is not pyproject's {version}")
    return problems


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for what this repository uses: paths and **/ globs, no negation."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in (p.strip("/") for p in patterns):
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            return True
    return False


def dockerignore_patterns(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def missing_copy_sources(text: str, dockerignore: str = DOCKERIGNORE) -> list[str]:
    """Every COPY from the context names a file that exists and .dockerignore lets through."""
    patterns = dockerignore_patterns(dockerignore)
    problems = []
    for copy in instructions(text, "COPY"):
        args = shlex.split(copy["value"])
        if any(a.startswith("--from") for a in args):
            continue
        for source in [a for a in args if not a.startswith("--")][:-1]:
            if not (REPO / source).exists() and not list(REPO.glob(source.rstrip("/"))):
                problems.append(f"COPY source {source} does not exist")
            elif source not in (".", "./") and ignored(source.rstrip("/"), patterns):
                problems.append(f"COPY source {source} is excluded by .dockerignore")
    return problems


def dockerignore_gaps(dockerignore: str) -> list[str]:
    patterns = dockerignore_patterns(dockerignore)
    return [
        f".dockerignore lets {p}/ into the context" for p in MUST_IGNORE if not ignored(p, patterns)
    ]


def env_problems(text: str) -> list[str]:
    """The interface the workflow and the NVIDIA runtime rely on."""
    envs = parse(text).envs
    expected = {
        "REPROHUNT_TRAIN_ENV": "/opt/venv/train",
        "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
        "GIT_PYTHON_REFRESH": "quiet",
    }
    problems = [
        f"ENV {key}={envs.get(key)!r}, expected {value!r}"
        for key, value in expected.items()
        if envs.get(key) != value
    ]
    if not envs.get("PATH", "").startswith("/opt/venv/workflow/bin:"):
        problems.append("the workflow env's bin is not first on PATH")
    return problems


DOCKERFILE_RULES: list[Callable[[str], list[str]]] = [
    unpinned_bases,
    unhashed_pip_installs,
    root_final_user,
    shell_form_entrypoint,
    label_problems,
    missing_copy_sources,
    env_problems,
]


@pytest.mark.parametrize("rule", DOCKERFILE_RULES, ids=lambda r: r.__name__)
def test_real_dockerfile_passes(rule: Callable[[str], list[str]]) -> None:
    assert rule(DOCKERFILE) == []


def test_real_dockerignore_excludes_generated_and_local_files() -> None:
    assert dockerignore_gaps(DOCKERIGNORE) == []


def broken(old: str, new: str) -> str:
    """The real Dockerfile with one edit; the edit must apply, or the test would prove nothing."""
    assert old in DOCKERFILE, f"{old!r} no longer in the Dockerfile: update this test"
    return DOCKERFILE.replace(old, new)


DIGEST_TEXT = re.search(r"@sha256:[0-9a-f]{64}", DOCKERFILE).group(0)
ENTRYPOINT_LINE = next(line for line in DOCKERFILE.splitlines() if line.startswith("ENTRYPOINT"))


@pytest.mark.parametrize(
    ("rule", "text", "expected"),
    [
        (unpinned_bases, broken(f"bookworm-slim{DIGEST_TEXT}", "bookworm-slim"), "not pinned"),
        (unpinned_bases, broken("FROM os AS build", "FROM python:3.11 AS build"), "not pinned"),
        (unpinned_bases, broken("BASE_DIGEST=sha256:", "BASE_DIGEST=sha256:0"), "base.digest"),
        (
            unhashed_pip_installs,
            DOCKERFILE + "RUN /opt/venv/train/bin/python -m pip install --no-cache-dir requests\n",
            "without --require-hashes",
        ),
        (
            unhashed_pip_installs,
            broken("ARG TORCH_INDEX=", "ARG TORCH_INDEX=https://x/cu126"),
            "unhashed install is on",
        ),
        (
            unhashed_pip_installs,
            broken(
                "setup-env.sh speechbrain /opt/venv/train", "setup-env.sh train /opt/venv/train"
            ),
            "speechbrain.lock",
        ),
        (root_final_user, broken("USER 1000:1000", "USER root"), "root"),
        (root_final_user, broken("USER 1000:1000", ""), "no USER"),
        (root_final_user, DOCKERFILE + "USER 0\n", "0"),
        (
            shell_form_entrypoint,
            broken(ENTRYPOINT_LINE, "ENTRYPOINT snakemake --cores all"),
            "shell",
        ),
        (
            label_problems,
            broken('org.opencontainers.image.licenses="Apache-2.0" \\\n', ""),
            "licenses",
        ),
        (label_problems, broken("CREATED=1970-01-01T00:00:00Z", "CREATED=yesterday"), "RFC 3339"),
        (label_problems, broken("VERSION=0.1.0", "VERSION=9.9.9"), "pyproject"),
        (missing_copy_sources, DOCKERFILE + "COPY no-such-file.txt /work/\n", "does not exist"),
        (missing_copy_sources, DOCKERFILE + "COPY .venv/train /opt/x\n", ".dockerignore"),
        (env_problems, broken("REPROHUNT_TRAIN_ENV=/opt/venv/train", "X=1"), "REPROHUNT_TRAIN_ENV"),
        (env_problems, broken("ENV PATH=/opt/venv/workflow/bin:$PATH", "ENV PATH=$PATH"), "PATH"),
    ],
)
def test_broken_dockerfile_is_caught(
    rule: Callable[[str], list[str]], text: str, expected: str
) -> None:
    problems = rule(text)
    assert any(expected in p for p in problems), problems


def test_unhashed_install_in_a_called_script_is_caught() -> None:
    def setup_env_without_hashes(script: str) -> str:
        return read_repo_file(script).replace("--require-hashes", "")

    problems = unhashed_pip_installs(DOCKERFILE, setup_env_without_hashes)
    assert sum("without --require-hashes" in p for p in problems) == 2, problems


@pytest.mark.parametrize("dropped", MUST_IGNORE)
def test_dockerignore_gap_is_caught(dropped: str) -> None:
    text = "\n".join(line for line in DOCKERIGNORE.splitlines() if line.strip() != dropped)
    assert text != DOCKERIGNORE, f"{dropped} is not a line of .dockerignore"
    assert dockerignore_gaps(text) == [f".dockerignore lets {dropped}/ into the context"]


def test_scripts_the_image_runs_are_executable() -> None:
    for script in ("entrypoint.sh", "gpu-smoke.sh", "image-test.sh", "setup-env.sh"):
        assert os.access(REPO / "containers" / script, os.X_OK), script


# --- hadolint with the committed config --------------------------------------------------------

needs_hadolint = pytest.mark.skipif(not HADOLINT.exists(), reason="workflow env not set up")


def hadolint(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(text)
    return subprocess.run(
        [HADOLINT, "--no-color", "--config", REPO / ".hadolint.yaml", dockerfile],
        capture_output=True,
        text=True,
    )


@needs_hadolint
def test_hadolint_passes(tmp_path: Path) -> None:
    result = hadolint(DOCKERFILE, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_hadolint
@pytest.mark.parametrize(
    ("old", "new", "code"),
    [
        ('org.opencontainers.image.revision="${REVISION}" \\\n', "", "DL3049"),
        ("USER 1000:1000", "USER root", "DL3002"),
        ("python3.11-venv=3.11.2-6+deb12u9", "python3.11-venv", "DL3008"),
    ],
)
def test_hadolint_config_catches(old: str, new: str, code: str, tmp_path: Path) -> None:
    result = hadolint(broken(old, new), tmp_path)
    assert result.returncode != 0 and code in result.stdout, result.stdout


# --- the entrypoint, run for real ----------------------------------------------------------------

ENTRYPOINT = REPO / "containers" / "entrypoint.sh"


def run_entrypoint(
    args: list[str], cwd: Path, *, as_nobody: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The entrypoint as the image runs it; `as_nobody` drops to uid 65534 (a `--user` run)."""
    prefix = []
    if as_nobody and os.geteuid() == 0:
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    elif as_nobody:
        pytest.skip("needs root to run as another uid")
    return subprocess.run(
        [*prefix, ENTRYPOINT, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
    )


@pytest.fixture
def world_dir() -> Path:
    """A directory other uids can enter (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="entrypoint-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path)


def test_entrypoint_execs_the_command(world_dir: Path) -> None:
    """exec, not a child: the command's parent is whoever started the entrypoint (tini)."""
    result = run_entrypoint(["sh", "-c", 'echo "$PPID $0"', "named"], world_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(os.getpid()), "named"]


@pytest.mark.skipif(not (WORKFLOW_BIN / "snakemake").exists(), reason="workflow env not set up")
def test_entrypoint_gives_bare_options_to_snakemake(world_dir: Path) -> None:
    path = f"{WORKFLOW_BIN}:{os.environ['PATH']}"
    result = run_entrypoint(["--version"], world_dir, env={"PATH": path})
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"\d+\.\d+\.\d+\n", result.stdout), result.stdout


def test_entrypoint_refuses_unwritable_results_before_running(world_dir: Path) -> None:
    results = world_dir / "results"
    results.mkdir(mode=0o755)
    result = run_entrypoint(["snakemake", "--cores", "1"], world_dir, as_nobody=True)
    assert result.returncode == 2
    assert f"{results} is not writable by uid 65534" in result.stderr
    assert "--user" in result.stderr


def test_entrypoint_gives_a_foreign_uid_a_writable_home(world_dir: Path) -> None:
    result = run_entrypoint(
        ["sh", "-c", 'test -w "$HOME" && test "$XDG_CACHE_HOME" = "$HOME/.cache" && echo "$HOME"'],
        world_dir,
        as_nobody=True,
        env={"HOME": "/root"},
    )
    assert result.returncode == 0, result.stderr
    home = Path(result.stdout.strip())
    assert home.parent == Path("/tmp") and home.name.startswith("reprohunt-home.")
    shutil.rmtree(home)


# --- the GPU smoke script ------------------------------------------------------------------------

GPU_SMOKE = REPO / "containers" / "gpu-smoke.sh"
needs_train_env = pytest.mark.skipif(not TRAIN_PYTHON.exists(), reason="train env not set up")


def has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and (
        subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    )


@needs_train_env
@pytest.mark.skipif(has_gpu(), reason="this host has a GPU: the failure path cannot be shown")
def test_gpu_smoke_fails_clearly_without_a_gpu() -> None:
    result = subprocess.run([GPU_SMOKE], capture_output=True, text=True)
    assert result.returncode == 1
    assert "torch.cuda.is_available() is False" in result.stderr
    assert "driver >= 580" in result.stderr


@needs_train_env
@pytest.mark.slow
def test_gpu_smoke_training_and_ddp_steps_run_on_cpu() -> None:
    """The step and the 2-process DDP step, on the CPU (gloo): the code the GPU run uses."""
    result = subprocess.run([GPU_SMOKE, "--device", "cpu"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    model = "recipes/speaker_id/model.py"
    if not (REPO / model).exists():
        model = "built-in TDNN"
    assert f"one training step of the {model} on cpu" in result.stdout
    assert f"DDP step of the {model}, 2 processes over gloo: gradients agree" in result.stdout
    assert result.stdout.rstrip().endswith("gpu-smoke: OK")


@needs_train_env
@pytest.mark.slow
def test_gpu_smoke_falls_back_to_its_own_tdnn(tmp_path: Path) -> None:
    """Without the recipe's model (a checkout before the recipe exists), the built-in TDNN."""
    (tmp_path / "containers").mkdir()
    shutil.copy2(GPU_SMOKE, tmp_path / "containers")
    result = subprocess.run(
        [tmp_path / "containers" / "gpu-smoke.sh", "--device", "cpu"],
        env={**os.environ, "REPROHUNT_TRAIN_ENV": str(REPO / ".venv" / "train")},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "one training step of the built-in TDNN on cpu" in result.stdout
    assert "DDP step of the built-in TDNN, 2 processes over gloo" in result.stdout
