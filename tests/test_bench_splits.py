"""bench/splits.py, the data splits catalogue rows read: the half-label
split of the unlabeled-image rows, and the rows that read it."""
import os
import shutil


def test_half_split_and_the_rows_that_read_it(demo_voc, tmp_path):
    """write_half_split: half of trainval.txt labeled, the other half's
    images as an unlabeled list, together trainval exactly. Every catalogue
    row on that split reads its lists from the files the split wrote (the
    rows' arithmetic in the report: tests/test_benchmark.py)."""
    from bench.catalogue import catalogue
    from bench.runs import command
    from bench.splits import SPLITS, write_half_split
    data = tmp_path / 'voc'
    shutil.copytree(demo_voc, str(data))
    write_half_split(str(data))
    trainval = (data / 'trainval.txt').read_text().splitlines()
    labeled = (data / 'trainval_half.txt').read_text().splitlines()
    unlabeled = (data / 'unlabeled_half.txt').read_text().splitlines()
    assert len(labeled) == len(unlabeled) == 16
    assert sorted(labeled + [next(t for t in trainval if t.startswith(u + ' '))
                             for u in unlabeled]) == sorted(trainval)
    cat = catalogue()
    assert SPLITS['half'] is write_half_split
    rows = [m for m in cat.methods.values() if m.split == 'half']
    assert rows
    written = {str(data / f) for f in ('trainval_half.txt',
                                       'unlabeled_half.txt')}
    read = set()
    for m in rows:
        cmd = command(m.name, 1, str(tmp_path), cat.profiles['demo'],
                      ['TrainDataset.dataset_dir=' + str(data)])
        lists = [os.path.join(str(data), a.split('=', 1)[1]) for a in cmd
                 if a.startswith('TrainDataset.anno_path=')]
        lists += [a.split('=', 1)[1] for a in cmd
                  if a.split('=', 1)[0] in ('unlabeled_list',
                                            'Distill.unlabeled.list')]
        # the labeled half, and the unlabeled half if the row uses one
        assert str(data / 'trainval_half.txt') in lists, m.name
        assert set(lists) <= written, (m.name, lists)
        read.update(lists)
    assert read == written  # and some row reads the unlabeled half
