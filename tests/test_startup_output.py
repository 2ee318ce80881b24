"""What a newcomer sees first: every script starts from the installed
packages, without import-time noise from ppdet and Paddle, and real warnings
still show."""
import glob
import os
import subprocess
import sys
import textwrap

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


# Each script's --help in one process (Paddle imported once), as `python
# SCRIPT --help` runs it, but with -P: neither the current directory nor a
# script's folder is on sys.path, so the packages must come from the install.
_HELP_OF_EACH = textwrap.dedent('''
    import contextlib, io, runpy, sys
    import bench, detdistill
    print(detdistill.__file__)
    print(bench.__file__)
    for path in sys.argv[1:]:
        sys.argv = [path, '--help']
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                runpy.run_path(path, run_name='__main__')
        except SystemExit as e:
            assert e.code == 0, (path, e.code)
        else:
            raise AssertionError(path + ': --help did not exit')
        print(out.getvalue().splitlines()[0])
''')


def test_every_script_runs_from_the_installed_packages(tmp_path):
    """tools/*.py, tools/dev/*.py and slim/distillation/distill.py find
    detdistill and bench from anywhere: the packages of this checkout,
    installed editable (pip install -e ., tools/setup_env.sh); nothing
    patches sys.path."""
    scripts = sorted(glob.glob(os.path.join(ROOT, 'tools', '*.py')) +
                     glob.glob(os.path.join(ROOT, 'tools', 'dev', '*.py')) +
                     glob.glob(os.path.join(ROOT, 'slim', 'distillation',
                                            '*.py')))
    assert len(scripts) >= 13
    r = subprocess.run([sys.executable, '-P', '-c', _HELP_OF_EACH] + scripts,
                       cwd=str(tmp_path), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[:2] == [os.path.join(ROOT, 'detdistill', '__init__.py'),
                         os.path.join(ROOT, 'bench', '__init__.py')]
    assert len(lines) == 2 + len(scripts)
    for path, usage in zip(scripts, lines[2:]):
        assert usage.startswith('usage: {} '.format(os.path.basename(path)))
