"""The results tables in README.md and docs/ are the committed results:
regenerated from results/*/results.json (bench/docs_tables.py), they must
equal what the docs show."""
import os
import shutil

from conftest import ROOT
from bench.docs_tables import BLOCK, doc_files, render, stale_blocks


def test_every_results_table_in_the_docs_is_what_its_results_give():
    blocks = [m.group(2) for path in doc_files()
              for m in BLOCK.finditer(open(path).read())]
    assert blocks, 'the docs show no generated results table'
    assert stale_blocks() == [], 'run python tools/dev/docs_tables.py'


def test_an_edited_number_is_caught(tmp_path):
    """A copy of the repository's docs with one figure of one table
    changed: the check names that file and table."""
    root = str(tmp_path)
    os.makedirs(os.path.join(root, 'docs'))
    for path in doc_files():
        shutil.copy(path, os.path.join(root, os.path.relpath(path, ROOT)))
    os.symlink(os.path.join(ROOT, 'results'), os.path.join(root, 'results'))
    target, results = next(
        (os.path.join(root, os.path.relpath(p, ROOT)), m)
        for p in doc_files() for m in BLOCK.finditer(open(p).read()))
    table = render(results.group(2), results.group(3) and
                   results.group(3).split(','))
    first = table.split('\n')[2]  # the first row
    cells = first.split(' | ')
    cells[2] = '{:.2f}'.format(float(cells[2]) + 0.01)
    text = open(target).read()
    assert first in text
    with open(target, 'w') as f:
        f.write(text.replace(first, ' | '.join(cells), 1))
    assert stale_blocks(root) == [(os.path.relpath(target, root),
                                   results.group(2))]


def test_the_readme_lists_every_distill_setting():
    """README's settings table names every key of the Distill block's
    defaults (distill/settings.py DEFAULTS) and of a loss entry (its
    connector's too)."""
    from detdistill.distill.settings import CONNECTOR, DEFAULTS
    text = open(os.path.join(ROOT, 'README.md')).read()
    keys = ['{}.{}'.format(section, k) for section, block in DEFAULTS.items()
            if block for k in block] + [
        'losses.<name>.' + k for k in ('type', 'weight', 'ratio', 'pairs')] + [
        'losses.<name>.connector.' + k for k in CONNECTOR]
    assert len(keys) == 19
    missing = [k for k in keys if '`{}'.format(k) not in text]
    assert missing == []
