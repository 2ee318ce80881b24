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


def _quality_focal_loss(pred, target, beta=2.0, use_sigmoid=True):
    """ppdet 2.6's quality_focal_loss with a float positive mask: its
    `loss * logical_not(pos_mask)` multiplies float32 by bool, which Paddle 3
    refuses ("Type promotion only support calculations between floating-point
    numbers"), so no GFL model could train. Same formula (Li et al., GFL,
    eq. 5): negatives |0 - σ|^β BCE(pred, 0), the positive class of a
    positive location |q - σ|^β BCE(pred, q) with q its IoU target; summed
    over classes."""
    import paddle
    import paddle.nn.functional as F
    label, score = target
    func = F.binary_cross_entropy_with_logits if use_sigmoid else \
        F.binary_cross_entropy
    prob = F.sigmoid(pred) if use_sigmoid else pred
    num_classes = pred.shape[1]
    neg = func(pred, paddle.zeros_like(pred), reduction='none') * \
        prob.pow(beta)
    is_pos = paddle.logical_and(label >= 0, label < num_classes)
    mask = F.one_hot(paddle.where(is_pos, label, paddle.zeros_like(label)),
                     num_classes) * is_pos.astype(pred.dtype).unsqueeze(-1)
    score = score.astype(pred.dtype).unsqueeze(-1).expand(pred.shape)
    pos = func(pred, score, reduction='none') * (score - prob).abs().pow(beta)
    return (neg * (1 - mask) + pos * mask).sum(axis=1)


from ppdet.modeling.losses import gfocal_loss as _gfocal_loss  # noqa: E402
_gfocal_loss.quality_focal_loss = _quality_focal_loss
