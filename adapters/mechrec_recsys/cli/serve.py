"""``mechrec serve``: the genre equalizer in a local web page.

``mechrec serve RUN_DIR --sae SAE [--port 8765] [--host 127.0.0.1] [--k 10] [--no-browser]``
binds the port first (a port in use is reported at once), opens the run and the SAE, picks
each genre's SAE feature, fits the probes (on at most ``--probe-rows`` SAE-training rows,
default 50,000), prints the page's URL and serves until Ctrl-C.
Bad input (a missing run or SAE folder, an SAE from another model, an unknown genre, a bad
port) prints one line ``error: ...`` to stderr and exits with code 2.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import sys
import threading
import webbrowser
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mechrec_recsys.cli._common import (
    AllowOtherModelOption,
    DataDirOption,
    DeviceOption,
    DownloadOption,
    SAEHookOption,
    fail,
)
from mechrec_recsys.cli.params import NAME_LIST, parsed

if TYPE_CHECKING:
    from mechrec_recsys.equalizer import EqualizerServer


def _is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_command(
    run_dir: Path = typer.Argument(..., help="run folder written by 'mechrec train'"),
    sae: Path = typer.Option(..., "--sae", help="SAE folder, or its name under RUN_DIR/saes"),
    port: int = typer.Option(8765, "--port", help="port to listen on (0: any free port)"),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="address to bind; the page has no login, so keep the "
                             "default (this machine only) unless the network is trusted"),
    k: int = typer.Option(10, "--k", help="length of the recommendation lists"),
    genres: Sequence[str] | None = typer.Option(None, "--genres", **parsed(NAME_LIST),
                                                help="comma-separated slider genres (default: "
                                                "every genre of the dataset)"),
    max_value: float = typer.Option(10.0, "--max-value",
                                    help="sliders run from -MAX to +MAX (paper: 10)"),
    probes: bool = typer.Option(True, "--probes/--no-probes",
                                help="fit logistic probes for the 'probe direction' method"),
    probe_rows: int = typer.Option(50_000, "--probe-rows",  # equalizer.DEFAULT_PROBE_ROWS
                                   help="fit each probe on at most this many SAE-training "
                                   "rows drawn at random (0: every row)"),
    browser: bool = typer.Option(True, "--browser/--no-browser",
                                 help="open the page in the default web browser"),
    verbose: bool = typer.Option(False, "--verbose", help="log every HTTP request"),
    allow_other_model: AllowOtherModelOption = False,
    hook: SAEHookOption = None,
    data_dir: DataDirOption = None,
    download: DownloadOption = True,
    device: DeviceOption = "cpu",
) -> None:
    """Serve a web page with one slider per genre that steers a user's recommendations."""
    from mechrec_recsys.equalizer import make_server

    if not 0 <= port <= 65535:
        fail(f"--port must be in 0..65535, got {port}")
    if k < 1:
        fail(f"--k must be >= 1, got {k}")
    if not (max_value > 0 and max_value != float("inf")):
        fail(f"--max-value must be a positive finite number, got {max_value}")
    if probe_rows < 0:
        fail(f"--probe-rows must be >= 0 (0: every row), got {probe_rows}")
    genre_list = list(genres) if genres is not None else None
    try:
        server = make_server(None, host, port, verbose=verbose)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            other = port + 1 if port < 65535 else 8765
            fail(f"port {port} on {host} is already in use (another 'mechrec serve'?): stop "
                 f"that program or pass another port, e.g. --port {other} (--port 0 picks a "
                 "free one)")
        if exc.errno == errno.EACCES:
            fail(f"not allowed to listen on port {port} of {host}: ports below 1024 need "
                 "administrator rights; use e.g. --port 8765")
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc} (check --host)")
    try:
        _load_and_serve(server, run_dir, sae, data_dir=data_dir, download=download,
                        device=device, genres=genre_list, probes=probes,
                        probe_rows=probe_rows or None, max_value=max_value, k=k, host=host,
                        browser=browser, allow_other_model=allow_other_model,
                        sae_hook=hook)
    except KeyboardInterrupt:
        server.server_close()
        typer.echo("stopped", err=True)
        _exit_promptly()
    finally:
        server.server_close()


def _exit_promptly() -> None:
    """End the process now that the server is closed: there is nothing left to save, and the
    interpreter's normal teardown of torch / sae-lens modules took 3-4 s on a 2-core machine,
    which made Ctrl-C feel ignored."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _load_and_serve(server: EqualizerServer, run_dir: Path, sae: Path, *,
                    data_dir: Path | None, download: bool, device: str,
                    genres: list[str] | None, probes: bool, probe_rows: int | None,
                    max_value: float, k: int, host: str, browser: bool,
                    allow_other_model: bool = False, sae_hook: str | None = None) -> None:
    """Open the run and the SAE into ``server.session``, print the URL, serve until Ctrl-C."""
    from mechrec_recsys.equalizer import EqualizerSession

    typer.echo(f"loading {run_dir} and SAE {sae} ...", err=True)
    session = EqualizerSession.open(
        run_dir, sae, data_dir=data_dir, download=download, device=device,
        genres=genres, probes=probes, probe_rows=probe_rows, max_value=max_value, k=k,
        allow_other_model=allow_other_model, sae_hook=sae_hook)
    server.session = session
    for note in session.notes:
        typer.echo(f"note: {note}", err=True)
    if not _is_loopback(host):
        typer.echo(f"warning: listening on {host}: anyone who can reach this address can "
                   "use the page (it has no login)", err=True)
    url = server.url
    typer.echo(f"equalizer for {len(session.equalizer.genres)} genres at {url} "
               "(Ctrl-C to stop)")
    if browser:
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    server.serve_forever()


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the ``mechrec`` application."""
    app.command("serve")(serve_command)
