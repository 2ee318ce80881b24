"""The results tables of README.md and docs/*.md, written from the
committed results (results/<profile>/results.json), so that no table can
drift from its results: tests/test_docs.py fails when a table in the docs
differs from what these files give.

A table is a marked block in a Markdown file:

    <!-- results: results/converged rows=teacher,baseline,l2,l2_auto -->
    (generated; rewritten by `python tools/dev/docs_tables.py`)
    <!-- /results -->

`rows=` picks and orders the rows (default: all, in catalogue order).
"""
import glob
import json
import os
import re

from detdistill.config import load_config
from detdistill.distill.settings import (DEFAULTS, LOSS_TYPES,
                                         distill_settings)
from detdistill.fileio import atomic_write

from .catalogue import catalogue
from .runs import ROOT

__all__ = ['BLOCK', 'render', 'rewrite', 'stale_blocks', 'doc_files',
           'row_label']

BLOCK = re.compile(r'(<!-- results: (\S+)(?: rows=(\S+))? -->\n)(.*?)'
                   r'(<!-- /results -->)', re.S)
_NAMES = {v: k for k, v in LOSS_TYPES.items()}


def doc_files(root=ROOT):
    return [os.path.join(root, 'README.md')] + sorted(
        glob.glob(os.path.join(root, 'docs', '*.md')))


def row_label(method, student_config):
    """What a row trains, in words: the loss, its weight and options (from
    the Distill settings its overrides give), the data split."""
    row = catalogue().methods[method]
    if row.role == 'teacher':
        return 'teacher'
    if not row.distills:
        text = 'student alone'
    else:
        cfg = load_config(os.path.join(ROOT, student_config),
                          list(row.overrides))
        settings = distill_settings(cfg)
        parts = []
        for e in settings.losses:
            opts = ''.join(', {}={}'.format(k, v)
                           for k, v in sorted(e.options.items()))
            parts.append('{} ({}{})'.format(
                _NAMES.get(e.type, e.type), 'weight auto' if e.weight ==
                'auto' else 'weight {:g}'.format(e.weight), opts))
        text = ' + '.join(parts)
        teacher = ['{} {}'.format(k, v) for k, v in settings.teacher.items()
                   if v != DEFAULTS['teacher'][k]]
        if teacher:
            text += '; teacher: ' + ', '.join(teacher)
    if row.split:
        text += ', {} the labels'.format(row.split)
    if any(o.startswith('unlabeled_list') for o in row.overrides):
        text += ' + the other half unlabeled'
    return text


def render(results_dir, rows=None, root=ROOT):
    """The Markdown table of results_dir/results.json."""
    with open(os.path.join(root, results_dir, 'results.json')) as f:
        res = json.load(f)
    methods = res['methods']
    order = [m for m in catalogue().methods if m in methods]
    rows = rows or order
    missing = [m for m in rows if m not in methods]
    if missing:
        raise KeyError('{}/results.json has no row {}'.format(
            results_dir, ', '.join(missing)))
    student = _student_config(res, results_dir)
    lines = ['| row | what | mAP@0.5 (11-point), mean | seed spread | '
             'per seed | gap recovered |', '|---|---|---|---|---|---|']
    for m in rows:
        r = methods[m]
        stat = r['mAP_11point']
        gap = r.get('gap_recovered_11point')
        lines.append('| {} | {} | {:.2f} | {} | {} | {} |'.format(
            m, row_label(m, student), stat['mean'],
            '{:.2f}'.format(stat['spread']) if len(stat['values']) > 1
            else '-', ', '.join('{:.2f}'.format(v) for v in stat['values']),
            '{:.0%}'.format(gap) if gap is not None else '-'))
    return '\n'.join(lines) + '\n'


def _student_config(res, results_dir):
    """The student config of the profile whose output is results_dir."""
    for p in catalogue().profiles.values():
        if p.out.rstrip('/') == results_dir.rstrip('/'):
            return p.student
    return catalogue().profiles['converged'].student


def _expected(text, root):
    def fill(m):
        rows = m.group(3).split(',') if m.group(3) else None
        return m.group(1) + render(m.group(2), rows, root) + m.group(5)
    return BLOCK.sub(fill, text)


def stale_blocks(root=ROOT):
    """[(file, results dir)] of the blocks whose table differs from what
    the committed results give."""
    out = []
    for path in doc_files(root):
        with open(path) as f:
            text = f.read()
        for m in BLOCK.finditer(text):
            rows = m.group(3).split(',') if m.group(3) else None
            if m.group(4) != render(m.group(2), rows, root):
                out.append((os.path.relpath(path, root), m.group(2)))
    return out


def rewrite(root=ROOT):
    """Regenerate every block; returns the files changed."""
    changed = []
    for path in doc_files(root):
        with open(path) as f:
            text = f.read()
        new = _expected(text, root)
        if new != text:
            atomic_write(path, new)
            changed.append(os.path.relpath(path, root))
    return changed
