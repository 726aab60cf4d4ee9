"""`jessy ui`: serve the dashboard until Ctrl-C.

Exit codes as the other commands': 2 for bad input (a --runs that is a file, a port in use, a
host that cannot be bound, Flask missing), 130 on Ctrl-C.
"""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path

import click

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound here rather than by werkzeug, whose own bind failure prints
    its advice and exits 1 (a port in use is bad input: exit 2, with our message)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0][4]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


@click.command("ui")
@click.option("--runs", "roots", multiple=True, default=("runs",), show_default=True,
              type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="A folder of run folders (compare and sweep folders in it are found too); "
                   "repeat for several. Nothing outside these folders is served.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address shows your runs "
                   "(logs, specs, paths) to the network.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on; 0 picks a free one.")
def ui(roots, host, port):
    """A local, read-only dashboard of the runs under --runs, live while they train.

    The runs list (status, winning backend, fallbacks, steps, loss, time); each run's loss,
    validation loss and learning-rate curves growing as metrics.jsonl does, progress and ETA,
    tokens/s and memory, every attempt with its failure and stderr tail, the resolved spec,
    the native configs, eval answers and export files; compare and sweep folders side by
    side. The URL is printed on start; Ctrl-C stops it.

    \b
    Example:
      jessy ui
      jessy ui --runs runs --runs /data/old-runs --port 0
    """
    try:
        from werkzeug.serving import WSGIRequestHandler, make_server

        from .app import create_app
    except ImportError as exc:
        click.echo(f"jessy ui needs Flask ({exc.name} is missing): "
                   "pip install 'jessy-adapters[ui]'", err=True)
        sys.exit(EXIT_BAD_INPUT)

    for root in roots:
        if not root.is_dir():
            click.echo(f"jessy ui: {root} does not exist yet; its runs appear once it does",
                       err=True)

    class QuietHandler(WSGIRequestHandler):
        """Errors still reach the console; one line per request (the pages poll) do not."""

        def log_request(self, code="-", size="-"):
            if str(code).isdigit() and int(code) >= 500:
                super().log_request(code, size)

    app = create_app(list(roots), bind_host=host)
    try:
        listener = _listen(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = f"port {port} on {host} is in use (another jessy ui?); try --port 0"
        else:
            why = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        click.echo(f"jessy ui: {why}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except (ValueError, UnicodeError) as exc:  # e.g. a host name that is not one
        click.echo(f"jessy ui: cannot listen on {host!r}: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    server = make_server(host, port, app, threaded=True, request_handler=QuietHandler,
                         fd=listener.fileno())
    listener.close()  # the server holds its own duplicate
    server.daemon_threads = True  # an open event stream never holds up the exit
    try:
        click.echo(f"jessy ui: {_url(host, server.port)}")
        sys.stdout.flush()
        server.serve_forever()  # werkzeug's returns on Ctrl-C (it swallows the interrupt)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    click.echo("jessy ui: stopped", err=True)
    sys.exit(EXIT_INTERRUPTED)
