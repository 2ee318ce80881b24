"""What a newcomer sees first: no irrelevant import-time noise from ppdet and
Paddle, and real warnings still shown."""
import subprocess
import sys

from conftest import ROOT

NOISE = ('Unable to use numba in PP-Tracking', 'No ccache found')


def _run(args):
    r = subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r


def test_help_screen_is_only_the_help():
    r = _run(['tools/train.py', '--help'])
    for text in NOISE:
        assert text not in r.stdout + r.stderr
    assert r.stdout.startswith('usage: train.py')
    assert r.stderr == ''


def test_real_warnings_still_show():
    """Paddle's 'Skip loading' (a weight left random), a UserWarning from
    anywhere else, even one with the same words as the silenced ccache
    warning, ordinary prints and ppdet's log lines all reach the user after
    importing the package."""
    r = _run(['-c', '\n'.join([
        'import warnings',
        'import detdistill',
        'import paddle',
        'layer = paddle.nn.Linear(2, 2)',
        "layer.set_state_dict({'weight': paddle.zeros([3, 3]),",
        "                      'bias': paddle.zeros([2])})",
        "warnings.warn('No ccache found: said by someone else')",
        "print('an ordinary print')",
        '# ppdet logs through handlers it set up on import',
        "import logging",
        "logging.getLogger('ppdet.data.source.voc').warning('ppdet speaks')",
    ])])
    assert NOISE[0] not in r.stdout + r.stderr
    assert 'Skip loading for weight' in r.stderr
    assert 'UserWarning: No ccache found: said by someone else' in r.stderr
    assert r.stderr.count('No ccache found') == 1
    assert r.stdout.startswith('an ordinary print\n')
    assert r.stdout.endswith('ppdet.data.source.voc WARNING: ppdet speaks\n')
    assert r.stdout.count('\n') == 2
