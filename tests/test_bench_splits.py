"""bench/splits.py, the data splits catalogue rows read: the half-label
split of the unlabeled-image rows."""
import shutil

import pytest


def test_benchmark_half_rows(demo_voc, tmp_path):
    from bench.catalogue import catalogue
    from bench.report import aggregate
    from bench.runs import command
    from bench.splits import write_half_split
    data = tmp_path / 'voc'
    shutil.copytree(demo_voc, str(data))
    write_half_split(str(data))
    trainval = (data / 'trainval.txt').read_text().splitlines()
    labeled = (data / 'trainval_half.txt').read_text().splitlines()
    unlabeled = (data / 'unlabeled_half.txt').read_text().splitlines()
    assert len(labeled) == len(unlabeled) == 16
    assert sorted(labeled + [next(t for t in trainval if t.startswith(u + ' '))
                             for u in unlabeled]) == sorted(trainval)
    demo = catalogue().profiles['demo']
    cmd = command('l2_half_unlabeled', 1, str(tmp_path), demo,
                  ['TrainDataset.dataset_dir=' + str(data)])
    assert 'unlabeled_list={}/unlabeled_half.txt'.format(data) in cmd
    assert 'TrainDataset.anno_path=trainval_half.txt' in cmd
    assert 'l2_half' not in demo.methods

    def run(method, m11):
        return {'method': method, 'seed': 0,
                'mAP': {'11point': m11 / 100, 'area': m11 / 100},
                'train_images_per_sec': 10., 'step_time_s': .1,
                'peak_rss_mb': 700., 'eval_images_per_sec': 100.}
    rows = aggregate([run('teacher', 60), run('baseline', 30),
                      run('l2', 45), run('baseline_half', 20),
                      run('l2_half', 30), run('l2_half_unlabeled', 35)])
    assert rows['l2']['gap_recovered_11point'] == pytest.approx(15 / 30)
    assert rows['l2_half']['gap_recovered_11point'] == pytest.approx(10 / 40)
    assert rows['l2_half_unlabeled']['gap_recovered_11point'] == \
        pytest.approx(15 / 40)
    assert 'gap_recovered_11point' not in rows['baseline_half']
