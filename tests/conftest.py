"""Shared fixtures: a small demo VOC dataset on disk and tiny configs that
train in seconds on a CPU. The packages (detdistill, bench) are imported from
the installed project (`pip install -e .`, tools/setup_env.sh); the user's
scripts are loaded from their files (`script`)."""
import functools
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STUDENT = os.path.join(ROOT, 'configs/demo/yolov3_mobilenet_v1_demo.yml')
TEACHER = os.path.join(ROOT, 'configs/demo/yolov3_r34_demo.yml')
GFL_TEACHER = os.path.join(ROOT, 'configs/demo/gfl_r34_demo.yml')


@functools.lru_cache(maxsize=None)
def script(path):
    """The user's script at `path`, relative to the repository root (e.g.
    'tools/train.py', 'slim/distillation/distill.py'), loaded from its file
    as a module, once: a test calls its main(argv) as the command line does,
    script('tools/train.py').main(['-c', ...])."""
    name = '_script_' + os.path.splitext(path)[0].replace('/', '_')
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session', autouse=True)
def _voc_check_cache(tmp_path_factory):
    """Validation caches of the tests' datasets go to a temporary directory,
    not the user's ~/.cache (subprocesses inherit it)."""
    os.environ['DETDISTILL_VOC_CACHE'] = str(
        tmp_path_factory.mktemp('voc_checks'))
    os.environ['DETDISTILL_CHECK_CACHE'] = str(
        tmp_path_factory.mktemp('teacher_checks'))


@pytest.fixture(scope='session')
def demo_voc(tmp_path_factory):
    from detdistill.data.demo import make_demo_voc
    out = str(tmp_path_factory.mktemp('demo_voc'))
    make_demo_voc(out, num_images=40, ratio=0.8, seed=0)
    return out


@pytest.fixture
def unlabeled_list(demo_voc, tmp_path):
    """The 8 test images of the demo as an unlabeled list (relative paths,
    as split_voc.py --unlabeled writes them)."""
    with open(os.path.join(demo_voc, 'test.txt')) as f:
        images = [line.split()[0] for line in f if line.strip()]
    path = str(tmp_path / 'unlabeled.txt')
    with open(path, 'w') as f:
        f.write(''.join(p + '\n' for p in images))
    return path


def tiny_opts(data_dir, save_dir, epoch=1, distill=None, **extra):
    """-o overrides: the demo configs on `data_dir`, batch 4, checkpoints
    under `save_dir`, a log line every 2 steps, an eager teacher (compiling
    it costs a child process per run: tests/test_teacher_compiled.py turns
    it on); `distill`: Distill settings by their path in the block, e.g.
    {'losses.l2.weight': 0.01, 'teacher.cache': True}."""
    opts = {'TrainDataset.dataset_dir': data_dir,
            'EvalDataset.dataset_dir': data_dir,
            'TrainReader.batch_size': 4, 'save_dir': save_dir,
            'epoch': epoch, 'snapshot_epoch': 1, 'log_iter': 2}
    for k, v in dict({'teacher.compile': False}, **(distill or {})).items():
        opts['Distill.' + k] = v
    opts.update(extra)
    return ['{}={}'.format(k, v) for k, v in opts.items()]


def distiller_and_batch(data_dir, tmp_path, teacher_weights, **opts):
    """A distiller of the demo configs on `data_dir` with `teacher_weights`
    and the -o overrides `opts`, and its first training batch."""
    import paddle
    from detdistill.config import build_model, load_config
    from detdistill.distill.distiller import build_distiller
    from detdistill.engine import Trainer
    cfg = load_config(STUDENT, tiny_opts(data_dir, str(tmp_path), **opts))
    teacher = build_model(load_config(TEACHER))
    teacher.set_state_dict(paddle.load(teacher_weights))
    d = build_distiller(cfg, build_model(cfg), teacher)
    return d, next(iter(Trainer(cfg, 'train', model=d,
                                detector=d.student).loader))


def evaluate_independently(config, opts, weights):
    """VOC results of checkpoint prefix `weights` on the eval list, computed
    here with VOCEvaluator over the eval loader, not through Trainer.evaluate
    nor the weights loader that tools/eval.py uses."""
    import paddle
    from detdistill.config import load_config
    from detdistill.engine import Trainer
    from detdistill.engine.evaluator import VOCEvaluator
    trainer = Trainer(load_config(config, opts), mode='eval')
    loader = trainer.eval_loader
    model = trainer.detector
    missing, unexpected = model.set_state_dict(
        paddle.load(weights + '.pdparams'))
    assert not missing and not unexpected, (missing, unexpected)
    model.eval()
    evaluator = VOCEvaluator(trainer.class_names)
    with paddle.no_grad():
        for data in loader:
            evaluator.update(data, model(data))
    return evaluator.accumulate()


def assert_same_results(got, expected):
    """`got` reports exactly the evaluator's `expected` results (APs of a
    barely trained model are ~1e-4: the tolerance is relative)."""
    same = functools.partial(pytest.approx, rel=1e-9, abs=1e-15)
    assert got['num_images'] == expected['num_images']
    assert got['mAP'] == same(expected['mAP'])
    assert list(got['per_class']) == list(expected['per_class'])
    for name, ap in expected['per_class'].items():
        assert got['per_class'][name] == same(ap), name


@pytest.fixture(scope='session')
def teacher_weights(tmp_path_factory):
    """A demo teacher checkpoint, freshly initialised (seed 7): enough for
    the mechanics of distillation."""
    import paddle
    from detdistill.config import build_model, load_config
    path = str(tmp_path_factory.mktemp('teacher') / 'teacher.pdparams')
    paddle.seed(7)
    paddle.save(build_model(load_config(TEACHER)).state_dict(), path)
    return path


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines():
    """The messages the detdistill logger emits during the test."""
    handler = _Lines()
    logging.getLogger('detdistill').addHandler(handler)
    yield handler.lines
    logging.getLogger('detdistill').removeHandler(handler)


def assert_resume_is_exact(student, teacher, teacher_weights, data, tmp_path,
                           epochs, **opts):
    """distill.py for `epochs` epochs, and for 1 epoch then `-r` to `epochs`:
    the final weights must be equal bit for bit."""
    import numpy as np
    import paddle
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    base = ['-c', student, '-t', teacher, '--teacher_pretrained',
            teacher_weights, '-o']
    run = os.path.splitext(os.path.basename(student))[0]
    distill = script('slim/distillation/distill.py')
    distill.main(base + tiny_opts(data, full, epochs, **opts))
    distill.main(base + tiny_opts(data, part, 1, **opts))
    distill.main(['-r', os.path.join(part, run, '0')] + base +
                 tiny_opts(data, part, epochs, **opts))
    wa, wb = (paddle.load(os.path.join(d, run, 'model_final.pdparams'))
              for d in (full, part))
    for k in wa:
        np.testing.assert_array_equal(wa[k].numpy(), wb[k].numpy(),
                                      err_msg=k)


def start_tool(args, **kwargs):
    """`python ARGS...` from the repository root, output captured, in a
    process group of its own (a signal to the group reaches its workers as
    a terminal's Ctrl-C does)."""
    return subprocess.Popen([sys.executable] + list(args), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **kwargs)


def finish_tool(proc, timeout):
    """Wait for `proc` at most `timeout` s. One that outlives it is a hang:
    SIGUSR1 makes it print every thread's stack (engine/interrupt.py), then
    it is killed and the test fails with that stack."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(3)
        proc.kill()
        out, err = proc.communicate(timeout=60)
        pytest.fail('{} did not end within {} s; its threads:\n{}\n{}'.format(
            ' '.join(proc.args), timeout, err[-8000:], out[-2000:]))
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_tool(args, timeout, **kwargs):
    return finish_tool(start_tool(args, **kwargs), timeout)


@pytest.fixture(scope='session')
def gfl_teacher(tmp_path_factory):
    """A demo GFL teacher checkpoint, freshly initialised (seed 7)."""
    import paddle
    from detdistill.config import build_model, load_config
    path = str(tmp_path_factory.mktemp('gfl_teacher') / 'teacher.pdparams')
    paddle.seed(7)
    paddle.save(build_model(load_config(GFL_TEACHER)).state_dict(), path)
    return path
