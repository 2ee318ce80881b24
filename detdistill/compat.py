"""Fixes for running ppdet 2.6 on Paddle 3.x / Python 3.11 without patching
site-packages. Each fix says why."""
import builtins
import logging
import os
import warnings

# Paddle's error detail level (2 would add the C++ stack).
os.environ.setdefault('FLAGS_call_stack_level', '0')

# Two messages at import that do not concern this project would otherwise be
# the first thing every command prints, burying the warnings that matter:
# - ppdet's PP-Tracking (not used here) print()s "Unable to use numba" twice
#   when numba is absent. `print` itself is filtered during the import, not
#   stdout: ppdet's loggers bind sys.stdout as they are created on import,
#   and must keep the real one.
# - Paddle warns that ccache, a compiler cache for building C++ custom ops,
#   is missing: nothing here compiles C++. Only that warning from that module
#   is ignored.
_NUMBA_LINE = 'Warning: Unable to use numba in PP-Tracking'
_print = builtins.print


def _print_but_numba(*args, **kwargs):
    if not (args and str(args[0]).startswith(_NUMBA_LINE)):
        _print(*args, **kwargs)


with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message='No ccache found',
                            category=UserWarning,
                            module=r'paddle\.utils\.cpp_extension\.')
    builtins.print = _print_but_numba
    try:
        import ppdet  # noqa: F401  (first import of paddle)
    finally:
        builtins.print = _print

# ppdet calls warnings.filterwarnings("ignore") at import, which hides Paddle's
# "Skip loading for ..." warnings (weights silently left random). Undo it:
# our loader reports mismatches itself, and other warnings should be seen.
warnings.resetwarnings()
warnings.simplefilter('default')
warnings.filterwarnings('ignore', category=DeprecationWarning)
logging.getLogger('ppdet').setLevel(logging.INFO)
