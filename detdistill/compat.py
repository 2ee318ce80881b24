"""Fixes for running ppdet 2.6 on Paddle 3.x / Python 3.11 without patching
site-packages. Each fix says why."""
import logging
import os
import warnings

# ppdet prints a numba warning for PP-Tracking on import; it is irrelevant here.
os.environ.setdefault('FLAGS_call_stack_level', '0')

with warnings.catch_warnings():
    import ppdet  # noqa: F401

# ppdet calls warnings.filterwarnings("ignore") at import, which hides Paddle's
# "Skip loading for ..." warnings (weights silently left random). Undo it:
# our loader reports mismatches itself, and other warnings should be seen.
warnings.resetwarnings()
warnings.simplefilter('default')
warnings.filterwarnings('ignore', category=DeprecationWarning)
logging.getLogger('ppdet').setLevel(logging.INFO)
