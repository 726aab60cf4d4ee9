"""`jessy run` with fake backends, as a real process (for the lifecycle's fault tests).

Usage: python fake_run.py SPEC OUTPUT BEHAVIOUR[,BEHAVIOUR...]   (one fake backend each)
       python fake_run.py --resume RUN_DIR BEHAVIOUR
Exit codes as the CLI's: 0 succeeded, 1 failed, 130 interrupted.
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from fake_backend import Plugin, make_backend  # noqa: E402

from jessy_adapters.plugins import load_registry  # noqa: E402
from jessy_adapters.run.runner import Runner  # noqa: E402
from jessy_adapters.spec import load_spec  # noqa: E402

signal.signal(signal.SIGINT, signal.default_int_handler)  # a test may start us with it ignored
args = sys.argv[1:]
resume = args[0] == "--resume"
behaviours = args[-1].split(",")
classes = [make_backend(f"fake{i}", b) for i, b in enumerate(behaviours)]
os.environ["JESSY_LOAD_PLUGINS"] = ""
runner = Runner(load_registry(extra_plugins=(Plugin(*classes),)), console=print)
if resume:
    run = runner.resume(Path(args[1]))
else:
    run = runner.run(load_spec(args[0]), [c.name for c in classes], Path(args[1]))
status = run.manifest["status"]
sys.exit({"succeeded": 0, "interrupted": 130}.get(status, 1))
