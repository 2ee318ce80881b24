"""Shared fixtures: a small demo VOC dataset on disk and tiny configs that
train in seconds on a CPU."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tools'))

STUDENT = os.path.join(ROOT, 'configs/demo/yolov3_mobilenet_v1_demo.yml')
TEACHER = os.path.join(ROOT, 'configs/demo/yolov3_r34_demo.yml')


@pytest.fixture(scope='session', autouse=True)
def _voc_check_cache(tmp_path_factory):
    """Validation caches of the tests' datasets go to a temporary directory,
    not the user's ~/.cache (subprocesses inherit it)."""
    os.environ['DETDISTILL_VOC_CACHE'] = str(
        tmp_path_factory.mktemp('voc_checks'))


@pytest.fixture(scope='session')
def demo_voc(tmp_path_factory):
    from detdistill.data.demo import make_demo_voc
    out = str(tmp_path_factory.mktemp('demo_voc'))
    make_demo_voc(out, num_images=40, ratio=0.8, seed=0)
    return out


def tiny_opts(data_dir, save_dir, epoch=1, **extra):
    """-o overrides: the demo configs on `data_dir`, batch 4, checkpoints
    under `save_dir`, a log line every 2 steps."""
    opts = {'TrainDataset.dataset_dir': data_dir,
            'EvalDataset.dataset_dir': data_dir,
            'TrainReader.batch_size': 4, 'save_dir': save_dir,
            'epoch': epoch, 'snapshot_epoch': 1, 'log_iter': 2}
    opts.update(extra)
    return ['{}={}'.format(k, v) for k, v in opts.items()]
