"""The validation cache on real files: unchanged samples that passed are not
decoded again, anything changed is, problems are found on every run, and a
broken or unwritable cache only costs time."""
import json
import os
import shutil
import time

import pytest

from conftest import STUDENT, tiny_opts
from detdistill.data.check_cache import RACY_NS
from detdistill.data.voc import parse_voc_xml, validate_voc_list

ANN = 'VOCdevkit/VOC2012/Annotations'


def _age():
    """Let files just written leave the window in which the cache does not
    trust their timestamps (check_cache.RACY_NS)."""
    time.sleep(RACY_NS / 1e9 + 0.1)


@pytest.fixture
def data(tmp_path, demo_voc):
    """A private copy of the demo dataset with lists; the first training
    sample's first box overhangs the image (a note)."""
    root = str(tmp_path / 'data')
    shutil.copytree(demo_voc, root)
    xml = os.path.join(root, _pairs(root)[0][1])
    ann = parse_voc_xml(xml)
    x2 = int(ann['objects'][0]['bbox'][2])
    text = open(xml).read()
    with open(xml, 'w') as f:
        f.write(text.replace('<xmax>{}</xmax>'.format(x2), '<xmax>{}</xmax>'
                             .format(int(ann['width']) + 9), 1))
    return root


def _pairs(root, name='trainval.txt'):
    return [line.split() for line in open(os.path.join(root, name))]


def _validate(root, cache, name='trainval.txt', labels='label_list.txt'):
    return validate_voc_list(root, name, os.path.join(root, labels),
                             cache_dir=str(cache))


def test_unchanged_samples_come_from_the_cache(data, tmp_path):
    cache = tmp_path / 'cache'
    # Files changed within RACY_NS are checked but not remembered.
    fresh = [_validate(data, cache) for _ in range(2)]
    assert [(r.num_checked, r.num_cached) for r in fresh] == [(32, 0),
                                                              (32, 0)]
    _age()
    cold = _validate(data, cache)
    warm = _validate(data, cache)
    assert (cold.num_checked, cold.num_cached) == (32, 0)
    assert (warm.num_checked, warm.num_cached) == (0, 32)
    # the same report, notes included
    assert warm.num_images == cold.num_images == 32
    assert warm.per_class == cold.per_class and warm.num_objects > 32
    assert warm.notes == cold.notes and len(warm.notes) == 1
    assert 'extends beyond' in warm.notes[0]
    assert warm.problems == cold.problems == []
    assert '0 checked, 32 unchanged since they passed' in warm.format_counts()
    # each list has its own entries
    test = _validate(data, cache, 'test.txt')
    assert (test.num_checked, test.num_cached) == (8, 0)
    assert _validate(data, cache).num_cached == 32


def test_changed_files_are_checked_again(data, tmp_path):
    cache = tmp_path / 'cache'
    pairs = _pairs(data)
    _age()
    _validate(data, cache)
    assert _validate(data, cache).num_cached == 32
    # (a) an image overwritten with garbage of the same size, its mtime put
    # back: the ctime still changes
    img = os.path.join(data, pairs[3][0])
    st = os.stat(img)
    with open(img, 'r+b') as f:
        f.seek(st.st_size // 2)
        f.write(b'\0' * (st.st_size - st.st_size // 2))
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (os.stat(img).st_size, os.stat(img).st_mtime_ns) == \
        (st.st_size, st.st_mtime_ns)
    # (b) an XML touched, content unchanged; (c) an XML given an unknown class
    touched = os.path.join(data, pairs[5][1])
    os.utime(touched)
    edited = os.path.join(data, pairs[9][1])
    name = parse_voc_xml(edited)['objects'][0]['name']
    text = open(edited).read()
    with open(edited, 'w') as f:
        f.write(text.replace('<name>{}</name>'.format(name),
                             '<name>hexagon</name>', 1))
    report = _validate(data, cache)
    assert (report.num_checked, report.num_cached) == (3, 29)
    assert report.num_images == 30 and len(report.problems) == 2
    assert img in report.problems[0] and 'cannot decode' in report.problems[0]
    assert edited in report.problems[1] and 'hexagon' in report.problems[1]
    # a problem is never remembered as passed
    _age()
    again = _validate(data, cache)
    assert (again.num_checked, again.num_cached) == (3, 29)
    assert again.problems == report.problems
    # the touched XML passed and has aged: now it is remembered
    assert _validate(data, cache).num_checked == 2


def test_label_list_change_checks_everything(data, tmp_path):
    cache = tmp_path / 'cache'
    _age()
    _validate(data, cache)
    names = open(os.path.join(data, 'label_list.txt')).read().split()
    with open(os.path.join(data, 'label_list.txt'), 'w') as f:
        f.write('\n'.join(n for n in names if n != 'star') + '\n')
    report = _validate(data, cache)
    assert (report.num_checked, report.num_cached) == (32, 0)
    assert report.problems and all("unknown class 'star'" in p
                                   for p in report.problems)


@pytest.mark.parametrize('garbage', ['{"list": "x", "ent', '[1, 2]',
                                     'not json at all \x00\xff'])
def test_broken_cache_file_is_ignored_and_rebuilt(data, tmp_path, garbage):
    cache = tmp_path / 'cache'
    _age()
    path = _validate(data, cache).cache.path
    with open(path) as f:
        entries = json.load(f)['entries']
    # also an entry that parses but is not ours
    doctored = json.dumps({'list': os.path.join(data, 'trainval.txt'),
                           'checker': '?', 'entries': {'a': 5}})
    for text in (garbage, doctored):
        with open(path, 'w') as f:
            f.write(text)
        report = _validate(data, cache)
        assert (report.num_checked, report.num_cached) == (32, 0)
        assert report.problems == [] and report.num_images == 32
        with open(path) as f:
            assert json.load(f)['entries'] == entries
        assert _validate(data, cache).num_cached == 32


def test_unwritable_cache_only_costs_time(data, tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a directory')
    _age()
    for _ in range(2):
        report = _validate(data, blocker / 'cache')
        assert (report.num_checked, report.num_cached) == (32, 0)
        assert report.num_images == 32 and report.problems == []
        assert 'cache not written' in report.format_counts()


def test_trainer_logs_checked_and_cached(data, tmp_path, monkeypatch,
                                         log_lines):
    from detdistill.config import load_config
    from detdistill.engine import Trainer
    monkeypatch.setenv('DETDISTILL_VOC_CACHE', str(tmp_path / 'cache'))
    _age()
    for _ in range(2):
        trainer = Trainer(load_config(STUDENT, tiny_opts(
            data, str(tmp_path / 'out'))), mode='eval')
        trainer.eval_loader
    counts = [line for line in log_lines if line.startswith('Validated')]
    assert len(counts) == 2
    assert os.path.join(data, 'test.txt') in counts[0]
    assert '8 images' in counts[0] and '8 checked, 0 unchanged' in counts[0]
    assert '0 checked, 8 unchanged' in counts[1]
