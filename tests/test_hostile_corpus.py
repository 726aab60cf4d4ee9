"""Hostile specs through the real command line: a clear error, exit 2, no traceback, within
5 s and bounded memory, for every file in tests/hostile/ (cases.yaml says what each must
answer) and for paths that are not files at all (a FIFO, /dev/zero, a directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HOSTILE = Path(__file__).with_name("hostile")
CASES = yaml.safe_load((HOSTILE / "cases.yaml").read_text(encoding="utf-8"))
JESSY = str(Path(sys.executable).with_name("jessy"))
COMMANDS = {"validate": ["validate"], "plan": ["plan", "--backend", "mlx"],
            "translate": ["translate", "--backend", "mlx", "--out", "{out}"]}
SECONDS = 5
ADDRESS_SPACE = 1 << 30  # a bomb that expanded would need far more


def _limit_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def jessy(command: str, spec: str, cwd: Path, out: Path) -> subprocess.CompletedProcess:
    args = [a.format(out=out) for a in COMMANDS[command]]
    if command == "translate":
        args = [*args[:-2], spec, *args[-2:]]  # the documented order: SPEC --out DIR
    else:
        args.append(spec)
    return subprocess.run([JESSY, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=SECONDS, stdin=subprocess.DEVNULL,
                          preexec_fn=_limit_memory if sys.platform == "linux" else None)


def check(proc: subprocess.CompletedProcess, exit_code: int, wanted: str | list[str]) -> None:
    said = proc.stdout if exit_code == 0 else proc.stderr
    assert proc.returncode == exit_code, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr) < 10_000, "errors must not echo a huge input back"
    for part in [wanted] if isinstance(wanted, str) else wanted:
        assert part in said, said[-2000:]


def test_the_manifest_lists_every_file():
    # data.jsonl: the rows every case's spec names, so a spec that loads gets past the data
    # check (validate and plan check the data files as a run does)
    files = {p.name for p in HOSTILE.iterdir() if p.is_file()} - {"cases.yaml", "data.jsonl"}
    assert files == set(CASES)


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_spec(name, command, tmp_path):
    case = CASES[name]
    if command not in case.get("commands", COMMANDS):
        pytest.skip(f"{name} is only run through {case['commands']}")
    check(jessy(command, name, HOSTILE, tmp_path / "out"), case["exit"], case["message"])
    assert not (tmp_path / "out").exists() or case["exit"] == 0, "nothing is written"


def _fifo(tmp_path: Path) -> str:
    os.mkfifo(tmp_path / "pipe.yaml")  # no writer: an ordinary open() would wait forever
    return "pipe.yaml"


def _big(tmp_path: Path) -> str:
    (tmp_path / "big.yaml").write_text("# padding\n" * 110_000)  # 1.1 MB
    return "big.yaml"


def _zero_link(tmp_path: Path) -> str:
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    return "zero.yaml"


def _directory(tmp_path: Path) -> str:
    (tmp_path / "dir.yaml").mkdir()
    return "dir.yaml"


NOT_SPECS = {
    "fifo": (_fifo, "pipe.yaml: /: is a FIFO (named pipe), not a spec file"),
    "dev-zero": (lambda _: "/dev/zero", "/dev/zero: /: is a character device, not a spec file"),
    "link-to-dev-zero": (_zero_link, "zero.yaml: /: is a character device, not a spec file"),
    "over-1-MiB": (_big, "big.yaml: /: the file has 1,100,000 bytes, more than the 1,048,576 "
                         "(1 MiB) a spec may have; it was not parsed"),
    "directory": (_directory, "is a directory"),  # click refuses it before jessy reads it
}


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs, /dev/zero and symlinks: POSIX")
@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", list(NOT_SPECS))
def test_a_path_that_is_no_spec_file_is_refused_at_once(kind, command, tmp_path):
    make, message = NOT_SPECS[kind]
    spec = make(tmp_path)
    check(jessy(command, spec, tmp_path, tmp_path / "out"), 2, message)
