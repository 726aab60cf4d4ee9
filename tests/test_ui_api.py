"""`jessy ui`'s JSON API, event stream, refusals and command, on run folders made in tmp_path:
real ones from the Runner with fake backends, hand-made ones for states a runner leaves only
by accident (half a metrics line, a broken run.json) and for compare and sweep folders."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ui_runs

pytest.importorskip("flask")

from jessy_adapters.ui import create_app  # noqa: E402
from jessy_adapters.ui.folders import Roots  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One root with every kind of folder; keys by name."""
    base = tmp_path_factory.mktemp("ui")
    root = base / "runs"
    fallback = ui_runs.real_run(root, "fellback", "crash", "ok")
    succeeded = ui_runs.real_run(root, "plain", "ok")
    ui_runs.add_eval_and_export(succeeded)
    running = ui_runs.running_run(root)
    broken = ui_runs.broken_run(root)
    compare = ui_runs.compare_folder(root, succeeded)
    sweep = ui_runs.sweep_folder(root, succeeded)
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("root:x:0:0:secret\n")
    (outside / "run.json").write_text(json.dumps({"run_id": "outside", "status": "succeeded"}))
    (root / "escape").symlink_to(outside, target_is_directory=True)
    attempt = fallback / "attempts" / "01-fake0"
    (attempt / "leak.yaml").symlink_to(outside / "secret.txt")
    (attempt / "inside.txt").symlink_to(attempt / "stderr.log")
    key = lambda p: "0/" + p.relative_to(root).as_posix()  # noqa: E731
    return {"root": root, "base": base, "outside": outside, "paths": {
        "fallback": fallback, "succeeded": succeeded, "running": running, "broken": broken},
        "fallback": key(fallback), "succeeded": key(succeeded), "running": key(running),
        "broken": key(broken), "compare": key(compare), "sweep": key(sweep),
        "compare_run": key(compare / "runs" / "fake0" / succeeded.name)}


@pytest.fixture(scope="module")
def client(folders):
    app = create_app([folders["root"]], poll_seconds=0.05, heartbeat_seconds=0.2)
    return app.test_client()


def get(client, url, status=200, **kw):
    resp = client.get(url, **kw)
    assert resp.status_code == status, (url, resp.status_code, resp.data[:300])
    return resp


def strict_json(resp):
    """The body as a browser's JSON.parse would take it (no NaN, no Infinity)."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(resp.data, parse_constant=refuse)


def test_runs_list_newest_first_with_fallbacks_and_unreadable(client, folders):
    doc = strict_json(get(client, "/api/runs"))
    rows = {r["key"]: r for r in doc["runs"]}
    assert {folders[k] for k in ("fallback", "succeeded", "running", "broken",
                                 "compare_run")} <= set(rows)
    started = [r["started_at"] for r in doc["runs"]]
    assert started == sorted(started, reverse=True)
    fb = rows[folders["fallback"]]
    assert fb["status"] == "succeeded" and fb["winner"] == "fake1" and fb["name"] == "fellback"
    assert fb["fallbacks"] == [{"backend": "fake0", "status": "failed", "kind": "crashed",
                                "reason": "exit code 1: RuntimeError: fake trainer exploded"}]
    assert fb["steps_done"] == 5 and fb["steps_planned"] == 8 and fb["final_loss"] == 0.4
    assert fb["wall_s"] is not None and fb["started"]
    live = rows[folders["running"]]
    assert live["status"] == "running" and live["steps_done"] == 4
    assert live["steps_planned"] == 20 and live["stale"] is True  # no process holds it
    broken = rows[folders["broken"]]
    assert broken["status"] == "unreadable" and "not valid JSON" in broken["error"]
    assert rows[folders["compare_run"]]["group"] == folders["compare"]
    assert "pruned" in doc["statuses"]
    assert [c["key"] for c in doc["compares"]] == [folders["compare"]]
    assert doc["compares"][0]["winner"] == "fake0"
    assert doc["sweeps"][0]["key"] == folders["sweep"] and doc["sweeps"][0]["trials"] == 3
    assert doc["sweeps"][0]["states"] == {"COMPLETE": 1, "PRUNED": 1, "unknown": 1}
    assert "escape" not in json.dumps(doc["runs"])  # a symlink out of the root is not followed


def test_runs_list_filters(client, folders):
    failed = strict_json(get(client, "/api/runs?status=running"))["runs"]
    assert [r["key"] for r in failed] == [folders["running"]]
    by_backend = strict_json(get(client, "/api/runs?backend=fake1"))["runs"]
    assert folders["fallback"] in [r["key"] for r in by_backend]
    assert all("fake1" in r["backends"] for r in by_backend)
    assert strict_json(get(client, "/api/runs?status=succeeded,pruned"))["runs"]
    version = strict_json(get(client, "/api/runs"))["version"]
    assert version == strict_json(get(client, "/api/runs"))["version"]  # nothing changed


def test_run_with_a_fallback_shows_both_attempts_reason_stderr_and_native_config(client,
                                                                                folders):
    doc = strict_json(get(client, f"/api/run/{folders['fallback']}"))
    first, second = doc["attempts"]
    assert first["backend"] == "fake0" and first["status"] == "failed"
    assert first["failure"] == {"kind": "crashed",
                                "reason": "exit code 1: RuntimeError: fake trainer exploded"}
    assert "RuntimeError: fake trainer exploded" in first["stderr_tail"]
    names = [f["name"] for f in first["files"]]
    assert "fake.json" in names and "command.txt" in names
    assert "leak.yaml" not in names  # a symlink out of the root is never read
    native = next(f for f in first["files"] if f["name"] == "fake.json")
    assert json.loads(native["text"])["behaviour"] == "crash"
    assert second["status"] == "succeeded" and second["failure"] is None
    assert doc["spec"]["text"].startswith("name: fellback")
    assert doc["progress"]["steps_done"] == 5 and doc["progress"]["backend"] == "fake1"
    assert doc["progress"]["eta_s"] is None  # finished
    assert doc["manifest"]["winner"] == "fake1"
    assert doc["eval"] is None and doc["export"] is None


def test_run_with_eval_and_export(client, folders):
    doc = strict_json(get(client, f"/api/run/{folders['succeeded']}"))
    ev = doc["eval"]
    assert ev["models"]["tuned"]["held_out_accuracy"] == 0.5
    assert ev["examples"]["held_out"][0]["base"] == "I am an AI assistant."
    assert ev["examples"]["held_out"][0]["tuned"] == "I'm Jessy."
    files = {f["name"]: f for f in doc["export"]["files"]}
    assert files["model-q8_0.gguf"]["kind"] == "gguf" and files["model-q8_0.gguf"]["bytes"] == 64
    assert files["merged/"]["kind"] == "folder"
    assert doc["export"]["modelfile"].startswith("FROM ./model-q8_0.gguf")
    assert doc["export"]["info"]["gguf"][0]["answer"] == "I'm Jessy."


def test_running_run_partial_last_line_is_skipped_then_read(client, folders):
    run = folders["paths"]["running"]
    size = (run / "metrics.jsonl").stat().st_size
    chunk = strict_json(get(client, f"/api/metrics/{folders['running']}"))
    assert [e["step"] for e in chunk["events"]] == [1, 2, 3, 4]
    assert chunk["offset"] < size == chunk["size"] and chunk["skipped"] == 0
    again = strict_json(get(client, f"/api/metrics/{folders['running']}?offset={chunk['offset']}"))
    assert again["events"] == [] and again["offset"] == chunk["offset"]
    doc = strict_json(get(client, f"/api/run/{folders['running']}"))
    assert doc["status"] == "running" and doc["stale"] is True
    assert doc["progress"]["steps_done"] == 4 and doc["progress"]["steps_planned"] == 20
    assert doc["progress"]["eta_s"] is None  # no process: no time left to promise
    assert doc["attempts"][0]["files"][0]["name"] == "native.yaml"
    assert doc["progress"]["peak_rss_gb"] == 1.25
    assert doc["progress"]["trained_tokens_per_second"] == 50.0


def test_eta_from_the_schedule_and_event_times_while_a_process_holds_the_run(folders,
                                                                            tmp_path):
    run = ui_runs.running_run(tmp_path, steps_done=5, planned=25)
    (run / "metrics.jsonl").write_text("")
    now = time.time()
    ui_runs.append_events(run, [ui_runs.event(s, t0=now - 5 * 2.0) for s in range(1, 6)])
    # events 1 s apart, 20 steps left -> finishes 20 s after the last event
    fd = ui_runs.hold_lock(run)
    try:
        client = create_app([tmp_path]).test_client()
        doc = strict_json(get(client, f"/api/run/0/{run.name}"))
    finally:
        os.close(fd)
    progress = doc["progress"]
    assert doc["stale"] is False
    assert progress["seconds_per_step"] == pytest.approx(1.0)
    assert progress["finish_at"] == pytest.approx(now - 10 + 5 + 20, abs=0.01)
    assert progress["fraction"] == pytest.approx(0.2)
    assert 0 <= progress["eta_s"] <= 16


def test_broken_run_json_is_a_row_and_a_page_never_a_500(client, folders):
    doc = strict_json(get(client, f"/api/run/{folders['broken']}"))
    assert doc["status"] == "unreadable" and doc["manifest"] is None
    assert "not valid JSON" in doc["error"]
    chunk = strict_json(get(client, f"/api/metrics/{folders['broken']}"))
    assert chunk["events"][0]["loss"] is None  # NaN in the file -> null on the wire
    assert chunk["skipped"] == 1  # "not json"
    get(client, f"/run/{folders['broken']}")


def test_run_json_of_the_wrong_shape_is_shown_not_a_500(tmp_path):
    """Valid JSON, wrong types everywhere (a hand-edited or future run.json)."""
    run = tmp_path / "20260101-000000-odd-0000"
    (run / "attempts" / "01-x").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({
        "run_id": 7, "status": None, "created": 12, "plan": "mlx", "winner": ["x"],
        "summary": [1], "schedule": {"optimizer_steps": "many"}, "timings": [],
        "attempts": [1, {"number": "one", "backend": None, "status": "exploded",
                         "failure": "bad", "notes": "a note", "dir": "../../etc",
                         "phases": 3}, {"dir": "attempts/01-x", "failure": {"kind": 5}}]}))
    (run / "eval.json").write_text(json.dumps({"models": {"base": 1}, "examples": {"a": 3}}))
    (run / "export").mkdir()
    (run / "export" / "export.json").write_text(json.dumps({"gguf": {"a": 1},
                                                            "modelfile": "x"}))
    client = create_app([tmp_path]).test_client()
    row = strict_json(get(client, "/api/runs"))["runs"][0]
    assert row["status"] == "unknown" and row["readable"] and row["winner"] is None
    doc = strict_json(get(client, f"/api/run/0/{run.name}"))
    odd = doc["attempts"][0]
    assert odd["notes"] == [] and odd["phases"] is None and odd["failure"] is None
    assert odd["files"] == [] and odd["stderr_tail"] is None  # "../../etc" is never read
    assert doc["attempts"][1]["failure"] == {"kind": 5, "reason": None}
    assert doc["summary"] is None and doc["progress"]["steps_planned"] is None
    assert doc["eval"]["models"] == {} and doc["eval"]["examples"] == {}
    assert doc["export"]["info"]["gguf"] == [] and doc["export"]["info"]["modelfile"] == {}


def test_compare_folder(client, folders):
    doc = strict_json(get(client, f"/api/compare/{folders['compare']}"))
    rows = {r["backend"]: r for r in doc["backends"]}
    assert rows["fake0"]["run_key"] == folders["compare_run"]
    assert rows["fake0"]["live_status"] == "succeeded"
    assert rows["fake1"]["status"] == "not_run" and rows["fake1"]["run_key"] is None
    assert doc["report"]["scoring"]["verdict"].startswith("fake0 wins")
    assert doc["markdown"].startswith("# Comparison")
    run = strict_json(get(client, f"/api/run/{folders['compare_run']}"))
    assert run["group"] == folders["compare"]
    md = get(client, f"/api/file/{folders['compare']}?path=compare.md").text
    assert md.startswith("# Comparison")
    get(client, f"/compare/{folders['compare']}")


def test_sweep_folder_read_defensively(client, folders):
    doc = strict_json(get(client, f"/api/sweep/{folders['sweep']}"))
    trials = {t["number"]: t for t in doc["trials"]}
    assert set(trials) == {0, 1, 2}
    assert trials[0]["params"] == {"/lora/r": 8, "/training/learning_rate": 1e-4}
    assert trials[0]["run_key"] and trials[0]["run_status"] == "succeeded"
    assert trials[1]["run_status"] == "pruned"  # an absolute run_dir inside the root
    assert trials[2]["run_key"] is None and trials[2]["params"] == {}
    assert doc["sweep"]["directions"] == ["maximize"]
    get(client, f"/sweep/{folders['sweep']}")


def test_sweep_json_of_any_shape_is_not_a_500(tmp_path):
    for n, text in enumerate(['{"trials": {"0": 1}}', "[1, 2]", '{"trials": [{"values": 3,'
                              ' "params": [1], "run_dir": "../../etc"}]}', "{"]):
        folder = tmp_path / f"sweep-{n}"
        folder.mkdir()
        (folder / "sweep.json").write_text(text)
    client = create_app([tmp_path]).test_client()
    doc = strict_json(get(client, "/api/runs"))
    assert len(doc["sweeps"]) == 4
    for n in range(4):
        strict_json(get(client, f"/api/sweep/0/sweep-{n}"))


def test_pages_and_assets_are_served_and_need_no_network(client, folders):
    pages = ["/", f"/run/{folders['fallback']}", f"/compare/{folders['compare']}",
             f"/sweep/{folders['sweep']}"]
    assets = set()
    for page in pages:
        html = get(client, page).text
        refs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert refs and all(r.startswith("/") or r.startswith("data:") for r in refs), refs
        assets |= {r for r in refs if r.startswith("/static/")}
    assert {"/static/chart.js", "/static/run.js", "/static/ui.css"} <= assets
    for asset in assets:
        body = get(client, asset).text
        assert "cdn" not in body.lower() and "https://" not in body
    resp = get(client, "/")
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    get(client, "/run/0/no-such-run", 404)


def test_read_only(client, folders):
    for url in ("/", "/api/runs", f"/api/run/{folders['fallback']}",
                f"/api/file/{folders['fallback']}?path=spec.yaml"):
        for method in ("post", "put", "delete", "patch"):
            assert getattr(client, method)(url).status_code == 405, (method, url)


@pytest.mark.parametrize("url", [
    "/api/run/0/..", "/api/run/0/../..", "/api/run/0/../outside", "/api/run/0/%2e%2e/outside",
    "/api/run/0/%2E%2E%2Foutside", "/api/run//etc", "/api/run/0//etc", "/api/run/%2Fetc",
    "/api/run/0/%2Fetc/passwd", "/api/run/1/x", "/api/run/-1/x", "/api/run/0/escape",
    "/api/run/0/.lock", "/api/run/0/..%5C..", "/api/run/%EF%BC%90/x", "/run/0/escape",
    "/api/metrics/0/escape", "/api/events/0/escape", "/api/file/0/escape?path=secret.txt",
    "/api/file/0/escape?path=run.json",
])
def test_keys_outside_the_roots_are_not_found(client, url):
    resp = client.get(url)
    assert resp.status_code in (400, 403, 404), (url, resp.status_code)
    assert b"secret" not in resp.data and b"root:" not in resp.data


@pytest.mark.parametrize("path", [
    "../../outside/secret.txt", "%2e%2e/%2e%2e/outside/secret.txt", "/etc/passwd",
    "attempts/../../../outside/secret.txt", "attempts/01-fake0/leak.yaml", ".lock",
    "attempts/01-fake0/../../../outside/secret.txt", "", "attempts", "attempts//stderr.log",
    "..\\..\\outside\\secret.txt", "attempts/01-fake0/stderr.log\x00.txt",
])
def test_files_outside_a_run_are_not_found(client, folders, path):
    from urllib.parse import quote

    key = folders["fallback"]
    for query in (path, quote(path, safe="")):
        resp = client.get(f"/api/file/{key}?path={query}")
        assert resp.status_code in (400, 403, 404), (path, resp.status_code)
        assert b"secret" not in resp.data


def test_files_inside_a_run_are_served_as_text(client, folders):
    key = folders["fallback"]
    resp = get(client, f"/api/file/{key}?path=attempts/01-fake0/stderr.log")
    assert resp.mimetype == "text/plain" and "fake trainer exploded" in resp.text
    assert "fake trainer exploded" in get(
        client, f"/api/file/{key}?path=attempts/01-fake0/inside.txt").text  # link inside: ok
    get(client, f"/api/file/{folders['succeeded']}?path=export/model-q8_0.gguf", 415)


def test_a_web_page_rebinding_its_name_to_localhost_is_refused(folders):
    local = create_app([folders["root"]]).test_client()
    assert local.get("/api/runs", headers={"Host": "evil.example:8765"}).status_code == 403
    assert local.get("/api/runs", headers={"Host": "127.0.0.1:8765"}).status_code == 200
    lan = create_app([folders["root"]], bind_host="0.0.0.0").test_client()
    assert lan.get("/api/runs", headers={"Host": "box.lan:8765"}).status_code == 200


class Stream:
    """Reads an event stream of the Flask test client in a thread: next() with a timeout."""

    def __init__(self, client, url, headers=None):
        self.resp = client.get(url, buffered=False, headers=headers or {})
        assert self.resp.status_code == 200 and self.resp.mimetype == "text/event-stream"
        self.queue: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.buffer = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for chunk in self.resp.response:
                self.queue.put(chunk.decode() if isinstance(chunk, bytes) else chunk)
                if self.stop.is_set():
                    break
        finally:
            self.queue.put(None)

    def messages(self, timeout=5.0):
        """Parsed messages (event, data) until the stream ends or TIMEOUT passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while "\n\n" in self.buffer:
                block, self.buffer = self.buffer.split("\n\n", 1)
                fields = dict(line.split(": ", 1) for line in block.splitlines()
                              if ": " in line and not line.startswith(":"))
                if "event" in fields:
                    yield fields["event"], json.loads(fields["data"]), fields.get("id")
            try:
                chunk = self.queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return
            if chunk is None:
                return
            self.buffer += chunk

    def until(self, wanted, timeout=5.0):
        for event, data, ident in self.messages(timeout):
            if wanted(event, data):
                return event, data, ident
        raise AssertionError("the stream did not say it in time")

    def close(self):
        self.stop.set()


def test_event_stream_sends_lines_appended_after_connect(tmp_path):
    run = ui_runs.running_run(tmp_path, steps_done=3)
    client = create_app([tmp_path], poll_seconds=0.05, heartbeat_seconds=0.2).test_client()
    stream = Stream(client, f"/api/events/0/{run.name}")
    try:
        _, first, ident = stream.until(lambda e, d: e == "metrics")
        assert [e["step"] for e in first["events"]] == [1, 2, 3] and int(ident) == first["offset"]
        _, progress, _ = stream.until(lambda e, d: e == "progress")
        assert progress["steps_done"] == 3
        # the half-written line is finished, and two more come
        ui_runs.finish_partial(run, then=[ui_runs.event(5)])
        _, more, _ = stream.until(lambda e, d: e == "metrics")
        assert [e["step"] for e in more["events"]] == [4, 5]
        ui_runs.append_events(run, [ui_runs.event(6)])
        _, last, _ = stream.until(lambda e, d: e == "metrics")
        assert [e["step"] for e in last["events"]] == [6]
        # the run ends: run.json changes, then the stream says so and closes
        manifest = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**manifest, "status": "succeeded"}))
        stream.until(lambda e, d: e == "run" and d["status"] == "succeeded")
        _, end, _ = stream.until(lambda e, d: e == "end")
        assert end["status"] == "succeeded"
    finally:
        stream.close()


def test_event_stream_resumes_from_last_event_id(client, folders):
    first = strict_json(get(client, f"/api/metrics/{folders['fallback']}"))
    lines = (folders["paths"]["fallback"] / "metrics.jsonl").read_bytes().split(b"\n")
    offset = sum(len(line) + 1 for line in lines[:3])
    stream = Stream(client, f"/api/events/{folders['fallback']}",
                    headers={"Last-Event-ID": str(offset)})
    try:
        _, data, _ = stream.until(lambda e, d: e == "metrics")
        assert data["events"] == first["events"][3:]
        stream.until(lambda e, d: e == "end")
    finally:
        stream.close()
    get(client, f"/api/events/{folders['fallback']}?offset=abc", 400)


# ---- the command -----------------------------------------------------------------------

def start(*args, env=None):
    """The real command in its own process, Ctrl-C-able even where this one ignores it."""
    return subprocess.Popen([sys.executable, "-c",
                             "from jessy_adapters.ui.command import ui; ui()", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, **(env or {})},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_command_prints_the_url_serves_and_exits_130_on_ctrl_c(folders):
    proc = start("--runs", str(folders["root"]), "--port", "0")
    try:
        line = proc.stdout.readline()
        match = re.fullmatch(r"jessy ui: (http://127\.0\.0\.1:(\d+)/)\n", line)
        assert match, line
        from urllib.request import urlopen

        with urlopen(match.group(1) + "api/runs", timeout=10) as resp:
            assert json.loads(resp.read())["runs"]
        # a second one on the same port is refused, clearly
        busy = subprocess.run([sys.executable, "-c",
                               "from jessy_adapters.ui.command import ui; ui()",
                               "--runs", str(folders["root"]), "--port", match.group(2)],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert busy.returncode == 2 and "in use" in busy.stderr, busy.stderr
        assert "Traceback" not in busy.stderr
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 130 and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_command_refuses_a_file_as_runs_folder(tmp_path):
    file = tmp_path / "file"
    file.write_text("")
    proc = subprocess.run([sys.executable, "-c", "from jessy_adapters.ui.command import ui; "
                           "ui()", "--runs", str(file)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and "is a file" in proc.stderr, proc.stderr


def test_help_has_an_example():
    from click.testing import CliRunner

    from jessy_adapters.ui.command import ui

    result = CliRunner().invoke(ui, ["--help"])
    assert result.exit_code == 0 and "Example" in result.output
    assert "--port" in result.output and "8765" in result.output


def test_roots_resolve_rejects_bad_keys(tmp_path):
    roots = Roots([tmp_path])
    (tmp_path / "a").mkdir()
    assert roots.resolve("0/a") == (tmp_path / "a").resolve()
    for bad in ("", "0/", "0/a/", "0/../a", "0/./a", "x/a", "00/a", "0/a\\b", "0/.a",
                "0/a\x00", "1/a", "²/a"):
        assert roots.resolve(bad) is None, bad
