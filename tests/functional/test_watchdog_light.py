"""The watchdog is torch-free and harmless before setup: a tick imports neither torch nor numpy, and
where they are not installed yet it answers a no-op instead of failing (a failure would be retried
and dead-lettered every five minutes until setup).

Each tick runs in a fresh interpreter, because this one has torch loaded already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lambdatrain.roles.settings import ENV_MOUNT, ENV_TABLE, STARTER

REPO = Path(__file__).resolve().parents[2]
SMALL = {"model": "vgg19_cifar", "width": 0.0625, "batch_size": 32, "micro_batch": 8, "augment": False}

# A meta-path finder that refuses torch and numpy, as an interpreter without them (before setup) does.
BLOCK = """
import sys
class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "numpy"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NotInstalled())
"""

# The deployed handler module, imported as Lambda imports it, then one watchdog tick.
HANDLER_TICK = """
import json, sys
sys.path.insert(0, sys.argv[1])
import handler
answer = handler.handler({"watchdog": True}, None)
print(json.dumps({"answer": answer, "loaded": sorted(m for m in ("torch", "numpy") if m in sys.modules)}))
"""

# The same dispatch with a recording invoker, to see what a tick re-drives.
RECORDED_TICK = """
import json, sys
from lambdatrain.ledger.table import Ledger
from lambdatrain.roles.edge import dispatch
from lambdatrain.roles.runtime import Runtime
from lambdatrain.roles.settings import COMBINER, load

class Recorder:
    sent = []
    def invoke(self, logical, payload):
        self.sent.append([logical, payload])

settings = load()
runtime = Runtime(settings=settings, ledger=Ledger(settings.table), invoker=Recorder(), handler=COMBINER)
answer = dispatch(runtime, COMBINER, {"watchdog": True})
print(json.dumps({"answer": answer, "sent": Recorder.sent,
                  "loaded": sorted(m for m in ("torch", "numpy") if m in sys.modules)}))
"""


def _tick(script: str, system, moto_url: str, *, block: bool) -> dict:
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_url, ENV_TABLE: system.table, ENV_MOUNT: str(system.mount),
           "PYTHONPATH": str(REPO)}
    code = (BLOCK if block else "") + script
    child = subprocess.run([sys.executable, "-c", code, str(REPO / "functions" / "combiner")], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout.strip().splitlines()[-1])


def test_watchdog_before_setup_is_a_noop_not_an_import_error(system, moto_url):
    result = _tick(HANDLER_TICK, system, moto_url, block=True)
    assert result["answer"]["status"] == "noop", result
    assert "setup" in result["answer"]["reason"]
    assert result["loaded"] == []


def test_watchdog_tick_loads_no_torch_and_redrives_a_stalled_run(system, moto_url):
    system.clock.now = time.time() - 24 * 3600  # the run started a day ago and made no progress since
    run = system.invoke(STARTER, {"start": True, "workers": 2, **SMALL})["run"]
    result = _tick(RECORDED_TICK, system, moto_url, block=False)
    assert result["loaded"] == [], result  # torch and numpy are installed here, and still not imported
    assert result["answer"]["status"] == "checked" and result["answer"]["redriven"] == [run]
    assert sorted(p["workerno"] for name, p in result["sent"] if name == "worker") == [0, 1]
