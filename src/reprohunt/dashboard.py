"""`make dashboard RESULTS=results/<experiment>`: Orion's dashboard over one finished result.

Orion 0.2.7 ships the pieces, not a working whole:
- `orion serve -c FILE` is the REST API (falcon + gunicorn); the file's `storage:` names the
  database, `gunicorn:` its settings (`bind`), and `frontends_uri:` the origins its CORS check
  lets a browser call it from (default `http://localhost:3000` only);
- the dashboard is a React build installed under `<env>/orion-dashboard/build/`; its script
  calls the API at `http://127.0.0.1:8000`, hard-coded (`orion frontend -b` looks for a
  `window.__ORION_BACKEND__` placeholder this build does not contain, so `-b` does nothing).
So here `orion serve` runs on a free port over a copy of the result's `hunt/orion_db.pkl` (the
API's start-up writes indexes into the database it opens, and the result must stay as audited),
and a small static server gives the build, with the API address rewritten, on another port:
the URL it prints is the dashboard (select the experiment on the left; "Database" lists its
trials, "Visualizations" plots them). Ctrl-C (or SIGTERM) stops both.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

import yaml

from reprohunt.orion_storage import DB_FILE

BUILD = Path(sys.prefix) / "orion-dashboard" / "build"
# What the dashboard build calls unless told otherwise (see the module docstring).
BUILT_IN_API = b"http://127.0.0.1:8000"
START_TIMEOUT_S = 60.0


class DashboardError(Exception):
    """Bad input or a server that did not start: the message says which file and the fix."""


def experiment_of(results: Path) -> tuple[str, Path]:
    """The Orion experiment a result's hunt judged, and that result's PickledDB."""
    hunt_json, database = results / "hunt" / "hunt.json", results / "hunt" / DB_FILE
    if not hunt_json.is_file() or not database.is_file():
        raise DashboardError(
            f"{results} is no finished hunt: {hunt_json} or {database} is missing "
            "(give RESULTS=results/<experiment> of a run whose hunt ended)"
        )
    hunt = json.loads(hunt_json.read_text())
    kind = hunt.get("storage", {}).get("type", "pickleddb")
    if kind != "pickleddb":
        raise DashboardError(
            f"{hunt_json}: this hunt used {kind}; make dashboard serves a result's own PickledDB "
            "(for MongoDB, run `orion serve -c FILE` with that database as `storage:`)"
        )
    return hunt["name"], database


def free_port(host: str) -> int:
    """A port nothing listens on now (gunicorn needs a number; bind races are unlikely here)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def serve_config(database: Path, host: str, api_port: int, origins: list[str]) -> dict:
    """The `orion serve -c` file: this database, this address, these dashboard origins."""
    return {
        "storage": {"type": "legacy", "database": {"type": "pickleddb", "host": str(database)}},
        "gunicorn": {"bind": f"{host}:{api_port}", "workers": 1},
        "frontends_uri": origins,
    }


def build_handler(build: Path, api_url: str) -> Callable[..., SimpleHTTPRequestHandler]:
    """Static files of the build, its scripts calling `api_url` (the app's own pages are
    #/… routes, so no other path needs serving)."""

    class Handler(SimpleHTTPRequestHandler):
        def send_head(self) -> io.BytesIO | BinaryIO | None:
            path = Path(self.translate_path(self.path))
            if path.suffix == ".js" and path.is_file():
                body = path.read_bytes().replace(BUILT_IN_API, api_url.encode())
                self.send_response(200)
                self.send_header("Content-Type", "application/javascript")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                return io.BytesIO(body)
            return super().send_head()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the dashboard fetches dozens of files and API results per view."""

    return functools.partial(Handler, directory=str(build))


def wait_for_api(url: str, server: subprocess.Popen, log: Path) -> None:
    """Until the API answers; its log (a temporary file) goes into the error when it does not."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise DashboardError(
                f"`orion serve` exited with {server.returncode}:\n{log.read_text()[-3000:]}"
            )
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError),
            urllib.request.urlopen(url, timeout=2) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.3)
    raise DashboardError(
        f"`orion serve` did not answer at {url} in {START_TIMEOUT_S:.0f} s:\n"
        + log.read_text()[-3000:]
    )


@contextlib.contextmanager
def running(results: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve the result's experiment in Orion's dashboard; yield the dashboard's URL."""
    name, database = experiment_of(results)
    if not (BUILD / "index.html").is_file():
        raise DashboardError(f"no dashboard build at {BUILD}: reinstall orion in this env")
    with tempfile.TemporaryDirectory(prefix="orion-dashboard-") as scratch:
        copy = Path(scratch) / DB_FILE
        shutil.copyfile(database, copy)
        api_url = f"http://{host}:{free_port(host)}"
        ui = ThreadingHTTPServer((host, port), build_handler(BUILD, api_url))
        ui_port = ui.server_address[1]
        origins = [f"http://{host}:{ui_port}", f"http://localhost:{ui_port}"]
        config = Path(scratch) / "serve.yaml"
        api_port = int(api_url.rsplit(":", 1)[1])
        config.write_text(yaml.safe_dump(serve_config(copy, host, api_port, origins)))
        log = Path(scratch) / "orion-serve.log"
        orion = Path(sys.executable).parent / "orion"
        with log.open("wb") as out:
            api = subprocess.Popen(
                [str(orion), "serve", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        thread = threading.Thread(target=ui.serve_forever, daemon=True)
        try:
            wait_for_api(api_url + "/", api, log)
            thread.start()
            yield f"http://{host}:{ui_port}/"
        finally:
            if thread.is_alive():
                ui.shutdown()
            ui.server_close()
            api.terminate()
            try:
                api.wait(timeout=10)
            except subprocess.TimeoutExpired:
                api.kill()
                api.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="results/<experiment>")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (local only)")
    parser.add_argument("--port", type=int, default=0, help="dashboard port (default: a free one)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with running(args.results, args.host, args.port) as url:
            name, _ = experiment_of(args.results)
            print(f"Orion dashboard of {args.results}: {url}", flush=True)
            print(f"select experiment {name} on the left; stop with Ctrl-C", flush=True)
            stop.wait()
    except DashboardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
