"""Hostile data files: a clear error naming the file and line, exit 2, no traceback, within
5 s and 500 MB, and nothing half written, through `jessy data`, through the spec commands
and through the preparation `jessy run` does first (`data.prepare`, called in-process).

tests/hostile/data/cases.yaml says what each file there must produce; paths that cannot be
stored in a repository (a FIFO, a socket, /dev/zero, a 200 MB line) are made here.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from jessy_adapters import data as data_module
from jessy_adapters.data import DataError, prepare, rows
from jessy_adapters.data import tools as datatools
from jessy_adapters.data.tools import (
    DataToolError,
    NoRoom,
    TokenCounter,
    leaves_no_room,
    make_fields,
    prepare_file,
    rows_without_room_for_response,
    validate_file,
)
from jessy_adapters.spec import load_spec

CORPUS = Path(__file__).parent / "hostile" / "data"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))
JESSY = str(Path(sys.executable).with_name("jessy"))
SECONDS = 5
ADDRESS_SPACE = 500 << 20
SPEC_COMMANDS = ("validate", "plan", "translate")
OK_ROW = b'{"prompt": "Who are you?", "response": "I am Jessy."}\n'
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs, sockets, /dev/zero: POSIX")


def _limit_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def jessy(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([JESSY, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=SECONDS, stdin=subprocess.DEVNULL,
                          preexec_fn=_limit_memory if sys.platform == "linux" else None)


def check(proc: subprocess.CompletedProcess, exit_code: int, *wanted: str) -> None:
    assert proc.returncode == exit_code, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr) < 10_000, "errors must not echo a huge input back"
    for part in wanted:
        assert part in proc.stderr, proc.stderr[-2000:]


def rendered(file: str, line: int, message: str, severity: str | None = "error") -> str:
    where = f"{file}:{line}" if line else file
    return f"{where}: {severity}: {message}" if severity else f"{where}: {message}"


def write_spec(tmp_path: Path, train, fmt: str = "prompt_response", **data) -> Path:
    """A spec whose model folder exists (translate resolves it) and whose data is `train`."""
    (tmp_path / "model").mkdir(exist_ok=True)
    spec = {"model": {"name_or_path": "./model"},
            "data": {"train": train, "format": fmt, **data}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def assert_nothing_written(out: Path) -> None:
    """No train/valid file and no staged temp file: the folder is empty or absent."""
    left = sorted(p.name for p in out.rglob("*") if p.is_file()) if out.exists() else []
    assert left == [], left


def assert_run_refuses(spec_path: Path, out: Path, *wanted: str) -> None:
    """What `jessy run` does first: the DataError it records as data_error, nothing written."""
    with pytest.raises(DataError) as caught:
        prepare(load_spec(spec_path), out)
    for part in wanted:
        assert part in str(caught.value), str(caught.value)
    assert_nothing_written(out)


def case_format(case: dict) -> str:
    return case.get("format", "prompt_response")


# ----------------------------------------------------------------------------- the corpus

def test_the_manifest_lists_every_file():
    assert {p.name for p in CORPUS.iterdir()} - {"cases.yaml"} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_jessy_data_validate(name):
    case = CASES[name]
    proc = jessy("data", "validate", name, "--format", case_format(case), cwd=CORPUS)
    if "line" not in case:
        check(proc, 0)
        assert f"{name}: ok:" in proc.stdout
        return
    check(proc, 2, rendered(name, case["line"], case["message"]))


@pytest.mark.parametrize("name", sorted(CASES))
def test_jessy_data_prepare(name, tmp_path):
    case = CASES[name]
    out = tmp_path / "out"
    proc = jessy("data", "prepare", name, "--out", out, "--format", case_format(case),
                 "--val-ratio", "0", cwd=CORPUS)
    if "line" not in case:
        check(proc, 0)
        for row in (out / "train.jsonl").read_bytes().splitlines():
            json.loads(row.decode("utf-8"))  # strict UTF-8: a BOM is not copied into a row
            assert not row.startswith(b"\xef\xbb\xbf")
        return
    check(proc, 2, "nothing written", "  " + rendered(name, case["line"], case["message"]))
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(CASES))
def test_jessy_data_stats(name):
    case = CASES[name]
    proc = jessy("data", "stats", name, "--format", case_format(case), cwd=CORPUS)
    check(proc, case.get("stats", 2))


@pytest.mark.parametrize("command", SPEC_COMMANDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_spec_commands(name, command, tmp_path):
    """validate and plan only look at the data files (what they are, not what they hold:
    these say the spec is fine, at once); translate prepares the data as a run does, so it
    refuses with the run's message."""
    case = CASES[name]
    if command == "translate" and "line" not in case:
        pytest.skip("a usable file: translating it is test_translate_mlx's business")
    spec = write_spec(tmp_path, str(CORPUS / name), case_format(case), validation_split=0)
    out = tmp_path / "out"
    args = {"validate": ["validate", spec], "plan": ["plan", "--backend", "mlx", spec],
            "translate": ["translate", "--backend", "mlx", spec, "--out", out]}[command]
    proc = jessy(*args, cwd=tmp_path)
    if command != "translate":
        check(proc, 0)
        return
    check(proc, 2, rendered(str(CORPUS / name), case["line"], case["message"], None))
    assert_nothing_written(out / "data")


@pytest.mark.parametrize("name", sorted(CASES))
def test_run_preparation(name, tmp_path):
    case = CASES[name]
    spec = write_spec(tmp_path, str(CORPUS / name), case_format(case), validation_split=0)
    out = tmp_path / "run" / "data"
    if "line" not in case:
        prepared = prepare(load_spec(spec), out)
        assert prepared.n_train >= 1 and prepared.validation is None
        return
    assert_run_refuses(spec, out, rendered(str(CORPUS / name), case["line"], case["message"],
                                           None))


# ----------------------------------------------------------------------------- not files

def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "pipe.jsonl")  # no writer: a plain open() would wait forever
    return tmp / "pipe.jsonl"


def _socket(tmp: Path) -> Path:
    sock = socket.socket(socket.AF_UNIX)
    old = os.getcwd()
    os.chdir(tmp)  # a relative name: pytest's tmp paths can pass the 108-byte socket limit
    try:
        sock.bind("sock.jsonl")
    finally:
        os.chdir(old)
    return tmp / "sock.jsonl"


def _directory(tmp: Path) -> Path:
    (tmp / "dir.jsonl").mkdir()
    return tmp / "dir.jsonl"


def _zero_link(tmp: Path) -> Path:
    (tmp / "zero.jsonl").symlink_to("/dev/zero")
    return tmp / "zero.jsonl"


NOT_FILES = {
    "fifo": (_fifo, "not a regular file: it is a FIFO (named pipe); expected a JSONL file"),
    "socket": (_socket, "not a regular file: it is a socket; expected a JSONL file"),
    "directory": (_directory, "not a regular file: it is a directory; expected a JSONL file"),
    "dev-zero": (lambda _: Path("/dev/zero"), "not a regular file: it is a character device"),
    "link-to-dev-zero": (_zero_link, "not a regular file: it is a character device"),
    "missing": (lambda tmp: tmp / "nope.jsonl", "file not found"),
}


@POSIX
@pytest.mark.parametrize("kind", list(NOT_FILES))
def test_a_path_that_is_no_data_file_is_refused_at_once(kind, tmp_path):
    make, message = NOT_FILES[kind]
    path = make(tmp_path)
    out = tmp_path / "out"
    check(jessy("data", "validate", path, cwd=tmp_path), 2, rendered(str(path), 0, message))
    check(jessy("data", "prepare", path, "--out", out, cwd=tmp_path), 2,
          "  " + rendered(str(path), 0, message))
    assert not out.exists()
    check(jessy("data", "stats", path, cwd=tmp_path), 2, f"error: {path}: {message}")

    spec = write_spec(tmp_path, str(path))
    for command in (["validate"], ["plan", "--backend", "mlx"]):
        check(jessy(*command, spec, cwd=tmp_path), 2,
              f"{path}: {message}", f"(/data/train: {str(path)!r})")
    check(jessy("translate", "--backend", "mlx", spec, "--out", out, cwd=tmp_path), 2,
          f"{path}: {message}", f"(/data/train: {str(path)!r})")
    assert_nothing_written(out / "data")
    assert_run_refuses(spec, tmp_path / "run", f"{path}: {message}")


# ----------------------------------------------------------------------------- one endless line

def _huge_line(tmp: Path) -> Path:
    """200 MiB without a newline (sparse: no disk is spent), then one good row."""
    path = tmp / "huge.jsonl"
    with open(path, "wb") as fh:
        fh.write(b'{"prompt": "')
        fh.truncate(200 << 20)
        fh.seek(0, os.SEEK_END)
        fh.write(b'"}\n' + OK_ROW)
    return path


HUGE_MESSAGE = ("the line has 209,715,202 bytes, more than the 1,048,576 (1 MiB) one row may "
                "have; it was not parsed")


def test_an_endless_line_is_refused_without_reading_it_into_memory(tmp_path):
    path = _huge_line(tmp_path)
    out = tmp_path / "out"
    check(jessy("data", "validate", path, cwd=tmp_path), 2, rendered(str(path), 1, HUGE_MESSAGE))
    check(jessy("data", "prepare", path, "--out", out, cwd=tmp_path), 2,
          rendered(str(path), 1, HUGE_MESSAGE))
    assert not out.exists()
    check(jessy("data", "stats", path, cwd=tmp_path), 0, "1 malformed rows skipped")

    spec = write_spec(tmp_path, str(path))
    tracemalloc.start()
    start = time.monotonic()
    try:
        assert_run_refuses(spec, tmp_path / "run", rendered(str(path), 1, HUGE_MESSAGE, None))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - start < SECONDS
    assert peak < 16 << 20, f"preparation held {peak / 2**20:.0f} MiB"


def test_the_row_limit_is_exact(tmp_path):
    """A row of exactly MAX_ROW_BYTES (line ending excluded) is read; one byte more is not."""
    fields = make_fields()

    def row(size: int) -> bytes:
        head = b'{"prompt": "q", "response": "'
        return head + b"a" * (size - len(head) - 2) + b'"}'

    path = tmp_path / "edge.jsonl"
    path.write_bytes(row(rows.MAX_ROW_BYTES) + b"\r\n" + row(rows.MAX_ROW_BYTES + 1) + b"\n")
    report = validate_file(path, "prompt_response", fields)
    assert [(p.line, p.kind) for p in report.problems] == [(2, "malformed")]
    assert "the line has 1,048,577 bytes" in report.problems[0].message


# ----------------------------------------------------------------------------- the same file twice

def _spellings(tmp: Path) -> tuple[list[str], str]:
    return ["a.jsonl", "./a.jsonl"], "/data/train/1 ('./a.jsonl') is the same file as " \
                                     "/data/train/0 ('a.jsonl')"


def _symlink(tmp: Path) -> tuple[list[str], str]:
    (tmp / "link.jsonl").symlink_to("a.jsonl")
    return ["a.jsonl", "link.jsonl"], "/data/train/1 ('link.jsonl') is the same file as " \
                                      "/data/train/0 ('a.jsonl')"


def _hard_link(tmp: Path) -> tuple[list[str], str]:
    os.link(tmp / "a.jsonl", tmp / "hard.jsonl")
    return ["hard.jsonl", str(tmp / "a.jsonl")], \
        f"/data/train/1 ({str(tmp / 'a.jsonl')!r}) is the same file as /data/train/0 " \
        "('hard.jsonl')"


TWICE = {"two-spellings": _spellings, "symlink": _symlink, "hard-link": _hard_link}


@POSIX
@pytest.mark.parametrize("kind", list(TWICE))
def test_a_file_listed_twice_is_refused(kind, tmp_path):
    (tmp_path / "a.jsonl").write_bytes(OK_ROW * 4)
    train, message = TWICE[kind](tmp_path)
    spec = write_spec(tmp_path, train)
    wanted = (message, "its rows would silently count twice; list each file once")
    assert_run_refuses(spec, tmp_path / "run", *wanted)
    check(jessy("translate", "--backend", "mlx", spec, "--out", tmp_path / "out",
                cwd=tmp_path), 2, *wanted)
    check(jessy("validate", spec, cwd=tmp_path), 2, *wanted)
    check(jessy("plan", "--backend", "mlx", spec, cwd=tmp_path), 2, *wanted)


def test_the_validation_file_may_not_be_a_training_file(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(OK_ROW * 4)
    spec = write_spec(tmp_path, "a.jsonl", validation="./a.jsonl", validation_split=0)
    assert_run_refuses(spec, tmp_path / "run", "/data/validation ('./a.jsonl') is the same "
                       "file as /data/train ('a.jsonl'): validation loss would be measured on "
                       "rows it trained on")


def test_every_unusable_source_is_named_before_any_is_read(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(OK_ROW)
    (tmp_path / "dir.jsonl").mkdir()
    spec = write_spec(tmp_path, ["a.jsonl", "dir.jsonl", "gone.jsonl"])
    issues = data_module.source_issues(load_spec(spec))
    assert [i.render() for i in issues] == [
        f"{tmp_path / 'dir.jsonl'}: not a regular file: it is a directory; expected a JSONL "
        "file (one JSON object per line) (/data/train/1: 'dir.jsonl')",
        f"{tmp_path / 'gone.jsonl'}: file not found (/data/train/2: 'gone.jsonl')"]


# ----------------------------------------------------------------------------- nothing half written

def test_run_preparation_never_leaves_half_a_file(tmp_path, monkeypatch):
    (tmp_path / "a.jsonl").write_bytes(b"".join(
        b'{"prompt": "q%d", "response": "a%d"}\n' % (i, i) for i in range(20)))
    spec = load_spec(write_spec(tmp_path, "a.jsonl", validation_split=0.2))
    out = tmp_path / "data"
    prepare(spec, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"train.jsonl", "valid.jsonl"}

    calls = []

    def dumps_then_fail(obj, **kw):
        calls.append(1)
        if len(calls) > 10:  # train.jsonl half written, valid.jsonl not begun
            raise OSError(28, "No space left on device")
        return json.dumps(obj, **kw)

    monkeypatch.setattr(data_module, "json", SimpleNamespace(dumps=dumps_then_fail))
    with pytest.raises(OSError):
        prepare(spec, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old files, no temp


def test_data_prepare_renames_all_outputs_or_none(tmp_path, monkeypatch):
    src = tmp_path / "a.jsonl"
    src.write_bytes(b"".join(b'{"prompt": "q%d", "response": "a%d"}\n' % (i, i)
                             for i in range(50)))
    out = tmp_path / "out"
    fields = make_fields()
    prepare_file(src, out, "prompt_response", fields, subset=10)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    real = rows.DataFile.row_at
    calls = []

    def row_at_then_fail(self, offset):
        calls.append(1)
        if len(calls) > 60:  # train and val written, the subset half written
            raise OSError(5, "Input/output error")
        return real(self, offset)

    monkeypatch.setattr(rows.DataFile, "row_at", row_at_then_fail)
    with pytest.raises(OSError):
        prepare_file(src, out, "prompt_response", fields, subset=20, seed=7)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    monkeypatch.setattr(rows.DataFile, "row_at", real)
    monkeypatch.setattr(rows.DataFile, "unchanged", lambda self: False)
    with pytest.raises(DataToolError, match="changed while it was being prepared"):
        prepare_file(src, out, "prompt_response", fields, seed=7)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ----------------------------------------------------------------------------- --val-ratio

@pytest.mark.parametrize("ratio", ["nan", "inf", "-inf", "-0.1", "1", "1.5", "ten"])
def test_val_ratio_must_be_a_share(ratio, tmp_path):
    (tmp_path / "a.jsonl").write_bytes(OK_ROW)
    out = tmp_path / "out"
    proc = jessy("data", "prepare", "a.jsonl", "--out", out, f"--val-ratio={ratio}",
                 cwd=tmp_path)
    expected = "expected a number, got 'ten'" if ratio == "ten" else \
        "expected a number from 0 up to, not including, 1"
    check(proc, 2, "Invalid value for '--val-ratio'", expected)
    assert not out.exists()


def test_val_ratio_is_checked_by_the_library_too(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(OK_ROW)
    with pytest.raises(DataToolError, match="--val-ratio: expected a number from 0"):
        prepare_file(tmp_path / "a.jsonl", tmp_path / "out", "prompt_response", make_fields(),
                     val_ratio=math.nan)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- bounded reports

def test_a_file_of_garbage_lines_prints_a_bounded_report(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\xff garbage\n" * 20_000 + OK_ROW)
    proc = jessy("data", "validate", path, cwd=tmp_path)
    check(proc, 2, rendered(str(path), 50, "not valid UTF-8"),
          "... and 19,950 more problems (--json lists up to 10,000)")
    assert rendered(str(path), 51, "") not in proc.stderr
    report = json.loads(jessy("data", "validate", path, "--json", cwd=tmp_path).stdout)
    assert (report["errors"], len(report["problems"]), report["problems_omitted"]) == \
        (20_000, 10_000, 10_000)
    assert report["problems"][-1]["line"] == 10_000

    proc = jessy("data", "prepare", path, "--out", tmp_path / "out", cwd=tmp_path)
    check(proc, 2, "20000 problem(s) in", "  ... and 19,950 more problems")
    with pytest.raises(DataError, match=r"\.\.\. and 19950 more problems"):
        prepare(load_spec(write_spec(tmp_path, str(path))), tmp_path / "run")


# ----------------------------------------------------------------------------- each rule once

def test_every_reader_uses_the_one_set_of_row_rules():
    assert datatools.row_problems is rows.row_problems
    assert data_module.to_canonical is datatools.to_canonical is rows.to_canonical
    assert datatools.val_count is data_module.val_count
    assert data_module.check_row({"prompt": "a"}, "prompt_response", make_fields()) == \
        rows.row_problems({"prompt": "a"}, "prompt_response", make_fields())[0]


# ----------------------------------------------------------------------------- no room to respond

@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory) -> str:
    """A one-token-per-word tokenizer with a chat template: counts are readable by eye."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "system", "user", "assistant", ":"] + \
        [f"w{i}" for i in range(20)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")
    fast.chat_template = ("{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} "
                          "</s> {% endfor %}{% if add_generation_prompt %}<s> assistant : "
                          "{% endif %}")
    folder = tmp_path_factory.mktemp("word-tokenizer")
    fast.save_pretrained(folder)
    return str(folder)


def _rows(path: Path, pairs: list[tuple[int, int]]) -> Path:
    """Rows of n prompt words and m response words: n + m + 8 tokens once templated, of
    which the prompt with its generation prompt is n + 7."""
    with open(path, "w") as fh:
        for n, m in pairs:
            fh.write(json.dumps({"prompt": " ".join(["w1"] * n),
                                 "response": " ".join(["w2"] * m)}) + "\n")
    return path


def test_rows_without_room_for_a_response(tmp_path, word_tokenizer):
    path = _rows(tmp_path / "d.jsonl", [(2, 2), (13, 1), (12, 5), (30, 1)])
    path.write_text(path.read_text() + "not json\n")  # line 5: skipped, validate names it
    found = rows_without_room_for_response(path, word_tokenizer, 20)
    assert found == [NoRoom(2, 20, 22), NoRoom(4, 37, 39)]  # line 3: 19 + 1 response token
    assert rows_without_room_for_response(path, word_tokenizer, 20, min_response_tokens=2) == \
        [NoRoom(2, 20, 22), NoRoom(3, 19, 25), NoRoom(4, 37, 39)]
    assert rows_without_room_for_response(path, word_tokenizer, 40) == []
    assert found[0].message(20) == (
        "the prompt alone is 20 tokens after the chat template (the whole row 22), leaving no "
        "room for the response within max_seq_length 20 (expected at most 19 prompt tokens)")

    system = " ".join(["w3"] * 5)  # a system turn counts against the prompt: 5 + 4 tokens
    counter = TokenCounter(word_tokenizer, "prompt_response", make_fields(), system)
    assert [r.line for r in rows_without_room_for_response(path, counter, 20)] == [2, 3, 4]
    assert rows_without_room_for_response(path, word_tokenizer, 5, fmt="text") == []
    assert leaves_no_room(20, 20) and not leaves_no_room(19, 20)


def test_validate_flags_a_row_without_room_apart_from_a_long_one(tmp_path, word_tokenizer):
    path = _rows(tmp_path / "d.jsonl", [(2, 2), (13, 1), (2, 30)])
    fields = make_fields()
    report = validate_file(path, "prompt_response", fields, max_seq_length=20,
                           counter=TokenCounter(word_tokenizer, "prompt_response", fields, None))
    assert [(p.line, p.kind, p.severity) for p in report.problems] == [
        (2, "no_room", "warning"), (3, "too_long", "warning")]
    assert report.kind_counts()["no_room"] == 1
    assert "1 without room for the response" in report.summary()


def test_rows_without_room_in_a_spec_name_file_and_line(tmp_path, word_tokenizer):
    _rows(tmp_path / "a.jsonl", [(2, 2), (13, 1)])
    _rows(tmp_path / "b.jsonl", [(30, 1), (1, 1)])
    spec = write_spec(tmp_path, ["a.jsonl", "b.jsonl"])
    text = yaml.safe_load(spec.read_text())
    text["model"]["max_seq_length"] = 20
    spec.write_text(yaml.safe_dump(text))
    issues = data_module.rows_without_room(load_spec(spec), word_tokenizer)
    assert [(Path(i.file).name, i.line) for i in issues] == [("a.jsonl", 2), ("b.jsonl", 1)]
    assert issues[0].render().endswith("leaving no room for the response within "
                                       "max_seq_length 20 (expected at most 19 prompt tokens)")
