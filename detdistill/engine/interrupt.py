"""Ctrl-C (SIGINT) and SIGTERM, what schedulers send before a kill, end a
run within seconds and cleanly: both raise `Interrupted` in the main thread,
so the step loop unwinds like on any error (the loader's reader stops, no
checkpoint of the unfinished epoch is written) and the tool exits 128 +
the signal's number, naming the last complete checkpoint to resume from.
A signal that lands in Paddle's (or numpy's) code is raised at the next
`check` instead (see `_in_paddle`): at most one step or batch later.

Paddle installs a SIGTERM handler of its own that prints a C++ stack and
aborts without unwinding Python; `installed` replaces it. It also makes
SIGUSR1 print every Python thread's stack to stderr, without stopping the
run: `kill -USR1 PID` shows where a run that seems stuck is.
"""
import contextlib
import faulthandler
import os
import signal
import sys
import threading

__all__ = ['Interrupted', 'installed', 'deferred', 'check']

# Stop signals received in the `installed` block. Kept after the handler
# raises: its exception is lost when the signal lands in code that ignores
# exceptions (logging's at-fork hook, run while a loader worker is forked,
# printed as "Exception ignored in _releaseLock"); `check` raises it again.
_pending = []
_depth = 0


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal; `exit_code` is the shell's 128 + signum."""

    def __init__(self, signum):
        self.signum = int(signum)
        self.name = signal.Signals(self.signum).name
        super().__init__(self.name)

    @property
    def exit_code(self):
        return 128 + self.signum


def _in_paddle(frame):
    """Whether Paddle's (or numpy's) code is on the stack. Paddle's C++
    calls back into Python (a PyLayer's backward; numpy's version check
    while converting an array, also from methods bound straight to C++
    such as Tensor.numpy) where an exception cannot unwind: raised there,
    the signal's exception became an OSError from the backward pass, or
    ended the process with SIGABRT ("terminate called after throwing
    pybind11::error_already_set"), seen in CI. Such a signal waits for
    `check`, which every training step, eval batch and loader wait calls."""
    roots = tuple(os.path.dirname(m.__file__) + os.sep
                  for m in map(sys.modules.get, ('paddle', 'numpy'))
                  if getattr(m, '__file__', None))
    while frame is not None and roots:
        if frame.f_code.co_filename.startswith(roots):
            return True
        frame = frame.f_back
    return False


def _handler(signum, frame):
    _pending.append(signum)
    if not _depth and not _in_paddle(frame):
        raise Interrupted(signum)


def check():
    """Raise `Interrupted` if a stop signal arrived in the `installed`
    block: the step loops call it at every step, so a signal whose exception
    was swallowed still ends the run."""
    if _pending and not _depth:
        raise Interrupted(_pending[0])


@contextlib.contextmanager
def installed():
    """In the block: SIGINT and SIGTERM raise `Interrupted`, SIGUSR1 dumps
    the threads' stacks; the previous handlers come back after it. Only the
    main thread can set handlers (Python delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    del _pending[:]
    saved = {s: signal.signal(s, _handler)
             for s in (signal.SIGINT, signal.SIGTERM)}
    try:  # needs a real stderr (pytest's capture has none) and POSIX
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__,
                              all_threads=True)
    except (AttributeError, ValueError, OSError):
        pass
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
        del _pending[:]


@contextlib.contextmanager
def deferred():
    """A signal arriving in the block is raised when it ends: for steps that
    must happen together (the renames of a checkpoint's two files)."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        check()
