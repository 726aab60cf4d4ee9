"""The dashboard's routes: four pages and the JSON (and event-stream) API they are drawn from.

Read-only by construction: every route is GET, anything else is refused (405) before routing;
every key and file path goes through folders.Roots / file_inside, which serve nothing outside
the given roots (404, never the file). Pages are static HTML filled in by the bundled scripts,
so the API is the one place data comes from (and what the tests check).
"""

from __future__ import annotations

import ipaddress
import json
import re

from flask import Flask, Response, abort, render_template, request

from .documents import Documents
from .folders import COMPARE, RUN, SWEEP, Roots, file_inside
from .reading import clean, read_events, tail_bytes
from .stream import run_stream

MAX_FILE = 2 * 1024 * 1024
"""A file larger than this is sent as its last MAX_FILE bytes (logs grow; tails matter)."""
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def send(doc, status: int = 200) -> Response:
    return Response(json.dumps(clean(doc), allow_nan=False), status=status,
                    mimetype="application/json")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(roots, poll_seconds: float = 0.5, heartbeat_seconds: float = 10.0,
               bind_host: str = "127.0.0.1") -> Flask:
    """ROOTS: folders holding run folders (--runs). Bound to a loopback address (the
    default), requests must name a loopback host too, so a web page that rebinds its own
    domain to 127.0.0.1 cannot read the dashboard from the browser."""
    app = Flask(__name__)
    app.url_map.merge_slashes = False  # "0//etc" is a bad key, not a redirect to "0/etc"
    docs = Documents(roots if isinstance(roots, Roots) else Roots(roots))
    app.config.update(UI_POLL_SECONDS=poll_seconds, UI_HEARTBEAT_SECONDS=heartbeat_seconds,
                      UI_LOOPBACK_ONLY=is_loopback(bind_host))
    app.extensions["jessy_ui"] = docs

    @app.before_request
    def guard():
        if request.method not in ("GET", "HEAD"):
            return send({"error": "the dashboard is read-only"}, 405)
        if app.config["UI_LOOPBACK_ONLY"]:
            host = re.sub(r":\d+$", "", request.host or "").strip("[]").lower()
            if not is_loopback(host):
                return send({"error": f"host {host!r} refused (the dashboard answers on "
                                      "localhost only)"}, 403)
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(404)
    def not_found(_):
        if request.path.startswith("/api/"):
            return send({"error": "not found"}, 404)
        return render_template("missing.html"), 404

    @app.errorhandler(400)
    def bad_request(_):
        return send({"error": "bad request (an offset is a byte count)"}, 400)

    @app.errorhandler(405)
    def not_allowed(_):
        return send({"error": "the dashboard is read-only"}, 405)

    @app.errorhandler(500)
    def failed(_):
        return send({"error": "the dashboard failed on this request; see its console"}, 500)

    def located(key: str, kind: str):
        path = docs.roots.resolve(key, kind)
        if path is None:
            abort(404)
        return path

    # ---- pages ---------------------------------------------------------------------------

    @app.get("/")
    def index_page():
        return render_template("index.html")

    @app.get("/run/<path:key>")
    def run_page(key):
        located(key, RUN)
        return render_template("run.html", key=key)

    @app.get("/compare/<path:key>")
    def compare_page(key):
        located(key, COMPARE)
        return render_template("compare.html", key=key)

    @app.get("/sweep/<path:key>")
    def sweep_page(key):
        located(key, SWEEP)
        return render_template("sweep.html", key=key)

    # ---- API -----------------------------------------------------------------------------

    @app.get("/api/runs")
    def api_runs():
        return send(docs.listing(request.args.get("status"), request.args.get("backend")))

    @app.get("/api/run/<path:key>")
    def api_run(key):
        return send(docs.run(key, located(key, RUN)))

    @app.get("/api/compare/<path:key>")
    def api_compare(key):
        return send(docs.compare(key, located(key, COMPARE)))

    @app.get("/api/sweep/<path:key>")
    def api_sweep(key):
        return send(docs.sweep(key, located(key, SWEEP)))

    def offset_arg() -> int:
        raw = request.headers.get("Last-Event-ID") or request.args.get("offset") or "0"
        if not re.fullmatch(r"[0-9]{1,15}", raw.strip()):
            abort(400)
        return int(raw)

    @app.get("/api/metrics/<path:key>")
    def api_metrics(key):
        path = located(key, RUN)
        chunk = read_events(path / "metrics.jsonl", offset_arg())
        return send({"events": chunk.events, "offset": chunk.offset, "size": chunk.size,
                     "skipped": chunk.skipped, "reset": chunk.reset})

    @app.get("/api/events/<path:key>")
    def api_events(key):
        path = located(key, RUN)
        stream = run_stream(docs, key, path, offset_arg(), app.config["UI_POLL_SECONDS"],
                            app.config["UI_HEARTBEAT_SECONDS"])
        return Response(stream, mimetype="text/event-stream",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/api/file/<path:key>")
    def api_file(key):
        folder = None
        for kind in (RUN, COMPARE, SWEEP):
            folder = docs.roots.resolve(key, kind)
            if folder is not None:
                break
        if folder is None:
            abort(404)
        file = file_inside(folder, request.args.get("path", ""))
        if file is None:
            abort(404)
        data, cut = tail_bytes(file, MAX_FILE)
        if b"\0" in data[:8192]:
            return send({"error": "not a text file"}, 415)
        response = Response(data, mimetype="text/plain")
        response.charset = "utf-8"
        if cut:
            response.headers["X-Jessy-Truncated"] = f"last {MAX_FILE} bytes"
        return response

    return app
