"""Every result and record is written through the atomic helper (hpopt.files), never in place.

Why: a step killed half-way through a plain write leaves a truncated record that the next step,
the audit or a comparison with the published result then reads as if whole. The scan reads the
code (src/ and the recipes) for the ways a file is written in place: `.write_text(`,
`.write_bytes(`, `open(…)`/`Path.open(…)` with a writing mode, `json.dump(` to a handle. What
may write so is listed below, each with why: logs and streams (appended while a process runs;
a reader wants what is there so far), lock files, and the helper itself.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from hpopt.files import atomic_path, write_json_atomically, write_text_atomically

REPO = Path(__file__).resolve().parents[1]
SCANNED = [REPO / "src", REPO / "recipes"]

OPEN = "open(…, writing mode)"
PATH_OPEN = ".open(writing mode)"
# (file, enclosing function, what) -> why it may write in place.
ALLOWED = {
    ("src/hpopt/files.py", "write_text_atomically", OPEN): "the helper: fills the temp file",
    ("src/reprohunt/hunt.py", "note_departures", PATH_OPEN): "an append-only list of lines",
    ("src/reprohunt/recovery.py", "hunt_membership", PATH_OPEN): "a lock file: held, not written",
    ("src/reprohunt/runlock.py", "hold", PATH_OPEN): "a lock file: holds its holder's line",
    ("src/reprohunt/logged.py", "run", OPEN): "the rule's log, streamed while the step runs",
    ("src/reprohunt/trial.py", "main", PATH_OPEN): "the trial's log, appended while it runs",
    ("src/reprohunt/audit.py", "final_run_problems", PATH_OPEN): "a retraining's log, streamed",
    ("src/reprohunt/numerics_check.py", "run", PATH_OPEN): "a stage's log, streamed",
    ("src/reprohunt/optrace.py", "run", OPEN): "the op trace, streamed op by op as it runs",
    ("src/reprohunt/dashboard.py", "running", ".write_text("): (
        "orion serve's config in the dashboard's own scratch folder, read once at its start"
    ),
    ("src/reprohunt/dashboard.py", "running", PATH_OPEN): "orion serve's log, streamed",
    ("src/warmexec/client.py", "_start_server", OPEN): "the warm server's log, appended",
    ("src/warmexec/server.py", "_stop_listening", OPEN): "a lock file: opened to hold a lock",
    ("src/warmexec/trial.py", "text", OPEN): "a trial's standard streams (file descriptors)",
    ("recipes/speaker_id/train.py", "run", OPEN): "the training log, appended epoch by epoch",
    ("recipes/speaker_id/speaker_data/download.py", "_download_resumable", OPEN): (
        "a download's .part file, resumed in place; renamed once its hash checks"
    ),
    ("recipes/speaker_id_sb/speaker_id_sb_prepare.py", "_write_json", OPEN): (
        "a SpeechBrain recipe's manifests, written as SpeechBrain's recipes do; the prepare rule"
        " builds a fresh data folder and writes prepared.json, the mark of a whole one, last"
    ),
    ("recipes/speaker_id_sb/speaker_id_sb_prepare.py", "_write_json", "json.dump("): (
        "the same manifests"
    ),
    ("recipes/speaker_id/speaker_data/featstore.py", "reserve", OPEN): (
        "r+b: allocates the disk blocks of a memory-mapped file the step is building"
    ),
}


def writing_mode(node: ast.Call, position: int) -> bool:
    """Whether the call's mode argument (at `position`, or `mode=`) writes or appends."""
    mode = node.args[position] if len(node.args) > position else None
    mode = next((k.value for k in node.keywords if k.arg == "mode"), mode)
    if mode is None:
        return False
    if not isinstance(mode, ast.Constant):
        return True  # a computed mode: assume the worst, list it if it is meant
    return any(flag in str(mode.value) for flag in "wax+")


def in_place_writes(tree: ast.AST) -> list[tuple[str, int, str]]:
    """(enclosing function, line, what) for each way `tree` writes a file in place."""
    found = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Call):
            callee = node.func
            what = None
            if isinstance(callee, ast.Attribute) and callee.attr in ("write_text", "write_bytes"):
                what = f".{callee.attr}("
            elif isinstance(callee, ast.Name) and callee.id == "open" and writing_mode(node, 1):
                what = OPEN
            elif isinstance(callee, ast.Attribute) and callee.attr == "open":
                # Path.open(mode); tarfile.open(path, mode) and the like take no mode first.
                first = node.args[0] if node.args else None
                mode_first = isinstance(first, ast.Constant) and isinstance(first.value, str)
                if (mode_first or not node.args) and writing_mode(node, 0):
                    what = PATH_OPEN
            elif (
                isinstance(callee, ast.Attribute)
                and callee.attr == "dump"
                and isinstance(callee.value, ast.Name)
                and callee.value.id == "json"
            ):
                what = "json.dump("
            if what:
                found.append((function, node.lineno, what))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "<module>")
    return found


def scanned_files() -> list[Path]:
    # A symlinked module (a recipe sharing another's code) is scanned where it lives.
    return sorted(
        path for folder in SCANNED for path in folder.rglob("*.py") if not path.is_symlink()
    )


def test_no_module_writes_a_record_in_place() -> None:
    offenders, used = [], set()
    for path in scanned_files():
        relative = str(path.relative_to(REPO))
        for function, line, what in in_place_writes(ast.parse(path.read_text(), str(path))):
            if (relative, function, what) in ALLOWED:
                used.add((relative, function, what))
            else:
                offenders.append(f"{relative}:{line} ({function}): {what}")
    assert not offenders, (
        "written in place instead of through hpopt.files (write_text_atomically, "
        "write_json_atomically, atomic_path), or add it to ALLOWED with why:\n  "
        + "\n  ".join(offenders)
    )
    stale = sorted(set(ALLOWED) - used)
    assert not stale, f"ALLOWED lists writers that are gone: {stale}"


def test_the_scan_finds_each_way_of_writing_in_place() -> None:
    source = """
def f(path, handle):
    path.write_text("x")
    path.write_bytes(b"x")
    open(path, "w")
    open(path, mode="ab")
    path.open("a")
    json.dump({}, handle)
    open(path)
    path.open()
    json.dumps({})
"""
    found = [what for _, _, what in in_place_writes(ast.parse(source))]
    assert found == [
        ".write_text(",
        ".write_bytes(",
        "open(…, writing mode)",
        "open(…, writing mode)",
        ".open(writing mode)",
        "json.dump(",
    ]


@pytest.mark.parametrize("write", ["text", "json", "path"])
def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path: Path, write: str) -> None:
    target = tmp_path / "record.json"
    target.write_text('{"old": true}\n')

    class Unserialisable:
        pass

    with pytest.raises((TypeError, RuntimeError)):
        if write == "text":
            write_text_atomically(target, Unserialisable())  # type: ignore[arg-type]
        elif write == "json":
            write_json_atomically(target, {"new": Unserialisable()}, indent=2)
        else:
            with atomic_path(target) as temp:
                temp.write_text('{"new": tru')
                raise RuntimeError("killed half-way")
    assert target.read_text() == '{"old": true}\n'
    assert os.listdir(tmp_path) == ["record.json"], "a temp file was left behind"
