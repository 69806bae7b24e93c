"""A session worker runs at the default niceness: Ray starts workers at 15, level with warming pool
workers and face tasks, which a live session must go before."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import os, threading, time
os.nice(15)                       # as Ray starts its workers
stop = threading.Event()
t = threading.Thread(target=stop.wait)  # a thread that exists before (a native SDK's, a render thread)
t.start()
from actors.worker import run_at_live_priority
ok = run_at_live_priority()
late = threading.Thread(target=stop.wait)  # made afterwards: inherits
late.start()
nices = {tid: os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir("/proc/self/task")}
stop.set()
print(ok, sorted(set(nices.values())), len(nices))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or os.geteuid() != 0,
                    reason="raising a priority needs Linux and CAP_SYS_NICE (CI runs as root)")
def test_every_thread_of_the_worker_runs_at_niceness_zero():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.getcwd()}, check=True).stdout.split()
    assert out[0] == "True" and out[1] == "[0]" and int(out[2]) >= 3, out
