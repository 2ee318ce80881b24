"""A training child of the benchmark, watched: never waited for for good."""
import os
import signal
import subprocess
import threading
import time

__all__ = ['STALL_S', 'STOP', 'run_watched']

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A run whose log has not grown for this long is stuck (training logs every
# few seconds; a teacher's evaluation of 800 images takes a minute).
STALL_S = 1800
# Set when the benchmark itself is stopped (Ctrl-C, SIGTERM): running
# children are ended instead of waited for.
STOP = threading.Event()


def run_watched(cmd, log_path, append=False, stall_s=STALL_S):
    """Run `cmd` (its own process group) with stdout and stderr into
    `log_path`; return its exit code. Never waits for good: a child whose
    log stops growing for `stall_s` s gets SIGUSR1 (its threads' stacks go
    into the log, engine/interrupt.py), then SIGTERM, and RuntimeError is
    raised; when STOP is set the child gets SIGTERM and the wait ends."""
    with open(log_path, 'a' if append else 'w') as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)
    size, since = -1, time.time()
    while True:
        try:
            return proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        now = os.path.getsize(log_path)
        if now != size:
            size, since = now, time.time()
        if STOP.is_set() or time.time() - since > stall_s:
            stuck = not STOP.is_set()
            if stuck:
                _signal_group(proc, signal.SIGUSR1)
                time.sleep(3)
            _end(proc)
            if stuck:
                raise RuntimeError(
                    '{} wrote nothing for {} s: stopped as stuck; its '
                    "threads' stacks are at the end of {}".format(
                        ' '.join(cmd), stall_s, log_path))
            return proc.returncode


def _signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _end(proc, grace=60):
    """SIGTERM to the child's group (it saves nothing of an unfinished epoch
    and exits); SIGKILL if it has not ended after `grace` s."""
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=grace)
