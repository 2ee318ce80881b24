"""PaddleDetection 0.5 (static graph) archives: read, renamed, loaded.

The archives are written by Paddle itself: tests/paddle05_model.py builds the
0.5 YOLOv3 (its layers and variable names transcribed from PaddleDetection
release/0.5) as a static program and saves it with paddle.static's
per-variable save; here it is tarred like the model zoo's (one top folder,
one file per variable). Our reader never wrote any of it, so a
misunderstanding of the format or of the names cannot pass on both sides.
"""
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import paddle
import pytest

from conftest import ROOT, STUDENT, TEACHER, script, tiny_opts
from loopback import http_server  # noqa: F401  (a fixture)
from detdistill.errors import WeightsFileError, WeightsMismatchError
from detdistill.config import build_model, load_config
from detdistill.weights import (HEAD_KEYS, load_pretrain, load_weights,
                                read_state_dict)
from detdistill.weights.formats import read_weights
from detdistill.weights.static_names import detect_family, to_static, to_v2

HEAD = ['yolo_head.yolo_output.{}.{}'.format(i, p) for i in range(3)
        for p in ('weight', 'bias')]
DEMO = ['--width', '0.25', '--size', '64', '--classes', '6']

# name -> arguments of tests/paddle05_model.py
MODELS = {
    # the demo configs' architectures; the teacher as a training checkpoint
    'r34': ['--backbone', 'resnet34', '--neck', '128', '--train'] + DEMO,
    'mbv1': ['--backbone', 'mobilenet', '--neck', '64'] + DEMO,
    # 0.5's COCO head (80 classes) on the demo teacher
    'r34_coco': ['--backbone', 'resnet34', '--neck', '128', '--width', '0.25',
                 '--classes', '80', '--size', '32'],
    'r34_affine': ['--backbone', 'resnet34', '--width', '0.25', '--neck',
                   '128', '--classes', '6', '--size', '32', '--norm',
                   'affine_channel'],
    # an ImageNet backbone archive (no neck, no head)
    'r34_backbone': ['--backbone', 'resnet34', '--width', '0.25',
                     '--classes', '0'],
    # the zoo's yolov3_r34_voc and yolov3_mobilenet_v1_voc: full size
    'r34_full': ['--backbone', 'resnet34', '--classes', '20', '--size', '64'],
    'mbv1_full': ['--backbone', 'mobilenet', '--classes', '20', '--size',
                  '64'],
}


@pytest.fixture(scope='module')
def zoo(tmp_path_factory):
    """name -> folder written by tests/paddle05_model.py (one process)."""
    out = tmp_path_factory.mktemp('paddle05')
    argv = []
    for name, args in MODELS.items():
        argv += (['+'] if argv else []) + [str(out / name)] + args
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'tests', 'paddle05_model.py')]
        + argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {name: out / name for name in MODELS}


def _tar(folder, path, top, skip=(), extra=None, mode='w'):
    """Tar a folder of variables like the zoo: `top/<variable>`."""
    with tarfile.open(path, mode) as tar:
        tar.add(str(folder), arcname=top, recursive=False)
        for name in sorted(os.listdir(folder)):
            if name not in skip:
                tar.add(str(folder / name), arcname=top + '/' + name)
        for name, path_ in (extra or {}).items():
            tar.add(str(path_), arcname=top + '/' + name)
    return str(path)


def _names(folder):
    with open(folder / 'names.json') as f:
        return {n: s for n, s in json.load(f)}


def _head_outputs(model, image):
    model.eval()
    with paddle.no_grad():
        feats = model.neck(model.backbone({'image': paddle.to_tensor(image)}))
        return [o.numpy() for o in model.yolo_head(feats)]


def _expected_outputs(folder):
    got = np.load(folder / 'outputs.npz')
    return [got['arr_{}'.format(i)] for i in range(3)]


def _state(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def _build(config, seed=1, opts=()):
    paddle.seed(seed)
    return build_model(load_config(config, list(opts)))


# -- the name map -----------------------------------------------------------

def test_full_configs_take_every_tensor_of_the_zoo_archives(zoo):
    """0.5's yolov3_r34_voc and yolov3_mobilenet_v1_voc (20 classes, full
    width) map one to one onto our full-size configs, shapes equal, and
    give the 0.5 program's outputs."""
    for name, config, family, count in [
            ('r34_full', 'yolov3_r34_voc', 'ResNet', 291),
            ('mbv1_full', 'yolov3_mobilenet_v1_voc', 'MobileNet', 241)]:
        static = _names(zoo[name])
        assert len(static) == count
        assert detect_family(static) == family
        mapped = {to_v2(n, family): s for n, s in static.items()}
        model = _build(os.path.join(ROOT, 'configs', config + '.yml'))
        ours = {k: [int(d) for d in v.shape]
                for k, v in model.state_dict().items()}
        assert mapped == ours
        assert {to_static(k, family) for k in ours} == set(static)
        report = load_weights(model, str(zoo[name] / 'vars'), log=[].append)
        assert report.complete and len(report.matched) == count
        image = np.load(zoo[name] / 'input.npy')
        for got, want in zip(_head_outputs(model, image),
                             _expected_outputs(zoo[name])):
            assert got.shape == want.shape == (1, 75) + got.shape[2:]
            assert np.array_equal(got, want)


def test_map_examples_from_the_0_5_sources():
    pairs = {
        'ResNet': [
            ('conv1_weights', 'backbone.conv1.conv1.conv.weight'),
            ('bn_conv1_variance', 'backbone.conv1.conv1.norm._variance'),
            ('res2a_branch1_weights', 'backbone.res2.res2a.short.conv.weight'),
            ('bn4f_branch2b_offset', 'backbone.res4.res4f.branch2b.norm.bias'),
            ('res4b12_branch2c_weights',  # ResNet-101 block names
             'backbone.res4.res4b12.branch2c.conv.weight'),
            ('yolo_block.0.0.0.conv.weights',
             'neck.yolo_block.0.conv_module.conv0.conv.weight'),
            ('yolo_block.1.1.1.bn.var',
             'neck.yolo_block.1.conv_module.conv3.batch_norm._variance'),
            ('yolo_block.2.2.bn.scale',
             'neck.yolo_block.2.conv_module.route.batch_norm.weight'),
            ('yolo_block.2.tip.bn.mean',
             'neck.yolo_block.2.tip.batch_norm._mean'),
            ('yolo_transition.1.bn.offset',
             'neck.yolo_transition.1.batch_norm.bias'),
            ('yolo_output.2.conv.bias', 'yolo_head.yolo_output.2.bias')],
        'MobileNet': [
            ('conv1_weights', 'backbone.conv1._conv.weight'),
            ('conv1_bn_mean', 'backbone.conv1._batch_norm._mean'),
            ('conv2_1_dw_weights',
             'backbone.conv2_1._depthwise_conv._conv.weight'),
            ('conv5_6_sep_bn_variance',
             'backbone.conv5_6._pointwise_conv._batch_norm._variance'),
            ('conv6_dw_bn_scale',
             'backbone.conv6._depthwise_conv._batch_norm.weight'),
            ('yolo_output.0.conv.weights', 'yolo_head.yolo_output.0.weight')],
    }
    for family, examples in pairs.items():
        for old, new in examples:
            assert to_v2(old, family) == new
            assert to_static(new, family) == old
    for unknown in ('fc_0.w_0', 'res2a_branch2a_weights_velocity_0',
                    'yolo_block.0.3.0.conv.weights', 'conv1_bn_var'):
        assert to_v2(unknown, 'MobileNet') is None
    assert to_v2('conv2_1_dw_weights', 'ResNet') is None


# -- reading ----------------------------------------------------------------

def test_training_archive_is_read_bit_exact_without_optimizer_state(zoo,
                                                                    tmp_path):
    folder = zoo['r34'] / 'vars'
    path = _tar(folder, tmp_path / 'yolov3_r34_voc.tar', 'yolov3_r34_voc')
    got = read_weights(path)
    assert got.family == 'ResNet' and len(got.state) == 291
    # as Paddle held them, and as Paddle's own reader reads the files
    values = np.load(zoo['r34'] / 'values.npz')
    by_paddle = paddle.load(str(folder))
    for key, value in got.state.items():
        old = got.file_name(key)
        assert value.dtype == np.float32 and value.shape == values[old].shape
        assert np.array_equal(value, values[old]), key
        assert np.array_equal(value, by_paddle[old]), key
    # 177 Momentum velocities (one per trainable tensor), the learning rate
    # and the step counter
    used = {got.file_name(k) for k in got.state}
    assert sorted(got.skipped) == sorted(set(os.listdir(folder)) - used)
    assert len(got.skipped) == 179
    assert sum(n.endswith('_velocity_0') for n in got.skipped) == 177
    assert {'learning_rate_0', '@LR_DECAY_COUNTER@',
            'conv1_weights_velocity_0'} <= set(got.skipped)
    # the extracted folder and a .tar.gz read the same
    gz = _tar(folder, tmp_path / 'yolov3_r34_voc.tar.gz', 'yolov3_r34_voc',
              mode='w:gz')
    for other in (read_state_dict(str(folder)), read_state_dict(gz)):
        assert list(other) == list(got.state)
        for key, value in other.items():
            assert np.array_equal(value, got.state[key])


def test_loaded_model_gives_the_0_5_programs_outputs(zoo, tmp_path):
    """Loaded into the ppdet 2.x model, a 0.5 archive gives the outputs the
    0.5 static program computed with the same weights, to the bit."""
    for name, config, src in [
            ('r34', TEACHER, _tar(zoo['r34'] / 'vars', tmp_path / 'r34.tar',
                                  'yolov3_r34_voc')),
            ('mbv1', STUDENT, str(zoo['mbv1'] / 'vars'))]:  # a folder
        model = _build(config)
        image = np.load(zoo[name] / 'input.npy')
        expected = _expected_outputs(zoo[name])
        before = _head_outputs(model, image)
        assert not np.array_equal(before[0], expected[0])  # can fail
        lines = []
        report = load_weights(model, src, log=lines.append)
        assert report.complete and report.path == src
        for got, want in zip(_head_outputs(model, image), expected):
            assert got.shape == want.shape == (1, 33) + got.shape[2:]
            assert np.array_equal(got, want)
        family = 'ResNet' if name == 'r34' else 'MobileNet'
        assert lines == ['Loaded weights {} (PaddleDetection 0.5 archive, {} '
                         'names mapped to ppdet 2.x): {}'.format(
                             src, family, report.counts())]
    assert report.counts() == '241 matched, 0 missing, 0 unexpected, ' \
        '0 shape-mismatched'


def test_a_swapped_statistic_changes_the_outputs(zoo, tmp_path):
    """The output check above would catch a map that swaps two tensors of
    the same shape (here mean and variance of one batch norm)."""
    folder = zoo['mbv1'] / 'vars'
    swapped = tmp_path / 'swapped'
    swapped.mkdir()
    for name in os.listdir(folder):
        target = {'conv4_1_sep_bn_mean': 'conv4_1_sep_bn_variance',
                  'conv4_1_sep_bn_variance': 'conv4_1_sep_bn_mean'}.get(
                      name, name)
        os.link(folder / name, swapped / target)
    model = _build(STUDENT)
    assert load_weights(model, str(swapped), log=[].append).complete
    got = _head_outputs(model, np.load(zoo['mbv1'] / 'input.npy'))
    assert not np.array_equal(got[0], _expected_outputs(zoo['mbv1'])[0])


# -- converting once --------------------------------------------------------

def test_convert_tool_writes_a_pdparams_that_loads_anywhere(zoo, tmp_path,
                                                           capsys):
    convert_weights = script('tools/convert_weights.py')
    src = _tar(zoo['r34'] / 'vars', tmp_path / 'yolov3_r34_voc.tar',
               'yolov3_r34_voc')
    out = str(tmp_path / 'teacher.pdparams')
    report, written = convert_weights.main(
        ['-c', TEACHER, '--src', src, '--out', str(tmp_path / 'teacher')])
    assert written == out and report.complete
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2:] == [
        '{} (PaddleDetection 0.5 archive, ResNet names mapped to ppdet 2.x): '
        '291 matched, 0 missing, 0 unexpected, 0 shape-mismatched, 179 '
        'optimizer-state tensors skipped'.format(src),
        'wrote {} (291 tensors)'.format(out)]
    direct = _build(TEACHER, seed=2)
    load_weights(direct, src, log=[].append)
    converted = _build(TEACHER, seed=3)
    again = load_weights(converted, out, log=[].append)
    assert again.complete and not again.skipped and again.source == ''
    assert list(read_state_dict(out)) == list(_state(converted))
    for key, value in _state(converted).items():
        assert np.array_equal(value, _state(direct)[key]), key
    image = np.load(zoo['r34'] / 'input.npy')
    for got, want in zip(_head_outputs(converted, image),
                         _expected_outputs(zoo['r34'])):
        assert np.array_equal(got, want)

    # a COCO archive converts for a config with its 80 classes
    coco = _tar(zoo['r34_coco'] / 'vars', tmp_path / 'coco.tar', 'coco')
    report, _ = convert_weights.main(
        ['-c', TEACHER, '--src', coco, '--out', str(tmp_path / 'coco'),
         '-o', 'num_classes=80'])
    assert report.complete and len(report.matched) == 291


# -- from a URL -------------------------------------------------------------

def test_a_url_is_downloaded_once_and_cached(zoo, tmp_path, http_server):
    srv, root, base = http_server
    _tar(zoo['mbv1'] / 'vars', root / 'yolov3_mobilenet_v1_voc.tar.gz',
         'yolov3_mobilenet_v1_voc', mode='w:gz')
    url = base + 'yolov3_mobilenet_v1_voc.tar.gz'
    cache = str(tmp_path / 'cache')
    image, expected = np.load(zoo['mbv1'] / 'input.npy'), \
        _expected_outputs(zoo['mbv1'])
    model = _build(STUDENT)
    report = load_weights(model, url, cache_dir=cache, log=[].append)
    assert report.complete and report.path.startswith(cache)
    assert report.path.endswith('yolov3_mobilenet_v1_voc.tar.gz')
    assert np.array_equal(_head_outputs(model, image)[2], expected[2])
    srv.shutdown()  # offline from here on
    model = _build(STUDENT, seed=5)
    assert load_weights(model, url, cache_dir=cache,
                        log=[].append).path == report.path
    assert np.array_equal(_head_outputs(model, image)[2], expected[2])
    assert srv.gets == ['/yolov3_mobilenet_v1_voc.tar.gz']


# -- what does not fit ------------------------------------------------------

def test_a_missing_tensor_is_an_error_naming_it(zoo, tmp_path):
    src = _tar(zoo['r34'] / 'vars', tmp_path / 'partial.tar', 'partial',
               skip={'bn3a_branch2a_mean'})
    model = _build(TEACHER)
    before = _state(model)
    with pytest.raises(WeightsMismatchError) as e:
        load_weights(model, src, log=[].append)
    msg = str(e.value)
    assert msg.startswith('weights file {} does not fit the model (290 '
                          'matched, 1 missing, 0 unexpected, 0 '
                          'shape-mismatched, 179 optimizer-state tensors '
                          'skipped; 1 not allowed): '.format(src))
    assert 'backbone.res3.res3a.branch2a.norm._mean [32] in model, missing ' \
        'from file (as bn3a_branch2a_mean)' in msg
    for key, value in _state(model).items():  # nothing was loaded
        assert np.array_equal(value, before[key]), key
    # --pretrained is no more lenient about it
    with pytest.raises(WeightsMismatchError, match='bn3a_branch2a_mean'):
        load_pretrain(model, src, log=[].append)


def test_an_80_class_head_is_refused_or_kept_and_listed(zoo, tmp_path):
    src = _tar(zoo['r34_coco'] / 'vars', tmp_path / 'coco.tar', 'coco')
    with pytest.raises(WeightsMismatchError) as e:
        load_weights(_build(TEACHER), src, log=[].append)
    msg = str(e.value)
    assert '285 matched, 0 missing, 0 unexpected, 6 shape-mismatched' in msg
    assert 'yolo_head.yolo_output.0.weight [33, 256, 1, 1] in model vs ' \
        '[255, 256, 1, 1] in file (as yolo_output.0.conv.weights)' in msg
    assert 'another number of classes' in msg
    # as pretraining: the head keeps its initialisation, one warning says so
    model = _build(TEACHER)
    before, lines = _state(model), []
    report = load_pretrain(model, src, log=lines.append)
    assert sorted(report.kept) == sorted(HEAD) and len(report.matched) == 285
    after, values = _state(model), np.load(zoo['r34_coco'] / 'values.npz')
    for key in HEAD:
        assert np.array_equal(after[key], before[key])
    assert np.array_equal(after['backbone.res5.res5c.branch2b.norm._variance'],
                          values['bn5c_branch2b_variance'])
    warning = [ln for ln in lines if 'kept the model' in ln]
    assert len(warning) == 1 and '6 key(s) matching /{}/'.format(
        HEAD_KEYS) in warning[0]
    assert '[33] in model vs [255] in file (as yolo_output.2.conv.bias)' \
        in warning[0]


def test_affine_channel_archive_is_refused(zoo, tmp_path):
    src = _tar(zoo['r34_affine'] / 'vars', tmp_path / 'affine.tar', 'affine')
    with pytest.raises(WeightsFileError) as e:
        load_weights(_build(TEACHER), src, log=[].append)
    # 0.5's ResNet-34 has 37 norm layers: conv1, 32 in the blocks, 4
    # shortcuts; the YOLO head always used batch norm
    assert str(e.value) == (
        '{} comes from a model with affine_channel norms: 37 norm layers '
        'have a scale and an offset but no moving mean and variance '
        '(bn2a_branch1, bn2a_branch2a, bn2a_branch2b, bn2b_branch2a, '
        'bn2b_branch2b, bn2c_branch2a ... and 31 more). ppdet 2.x YOLOv3 '
        'uses batch norm; these weights do not fit it.'.format(src))


def test_other_archives_and_damaged_files_are_named(zoo, tmp_path):
    folder = zoo['mbv1'] / 'vars'
    # names of no supported backbone (e.g. 0.5's DarkNet YOLOv3)
    darknet = tmp_path / 'darknet'
    darknet.mkdir()
    for name in ['yolo_input.0.0.conv.weights', 'stage.0.bn.var']:
        os.link(folder / 'conv1_weights', darknet / name)
    with pytest.raises(WeightsFileError, match="neither ResNet's .* nor "
                       "MobileNetV1's .*; first names: stage.0.bn.var, "
                       "yolo_input.0.0.conv.weights"):
        read_state_dict(str(darknet))
    # a variable the map does not know is reported, not dropped
    src = _tar(folder, tmp_path / 'extra.tar', 'extra',
               extra={'fc7_weights': folder / 'conv6_sep_weights'})
    with pytest.raises(WeightsMismatchError, match=r'1 unexpected.*: '
                       r'fc7_weights \[256, 256, 1, 1\] in file, not in '
                       r'model'):
        load_weights(_build(STUDENT), src, log=[].append)
    # a member cut short, one with bytes after its data
    data = (folder / 'conv1_weights').read_bytes()
    for name, content, what in [
            ('short', data[:-4], 'truncated in data of shape [8, 3, 3, 3] '
             'float32: {} bytes, {} needed at offset {}'.format(
                 len(data) - 4, len(data), len(data) - 4 * 8 * 27)),
            ('long', data + b'\0' * 4, '4 bytes after the data of shape '
             '[8, 3, 3, 3] float32')]:
        bad = tmp_path / name
        bad.mkdir()
        for f in os.listdir(folder):
            os.link(folder / f, bad / f)
        os.remove(bad / 'conv1_weights')
        (bad / 'conv1_weights').write_bytes(content)
        src = _tar(bad, tmp_path / (name + '.tar'), 'yolov3')
        with pytest.raises(WeightsFileError) as e:
            read_state_dict(src)
        assert str(e.value) == 'cannot read {} (member yolov3/conv1_weights)' \
            ': {} (not a Paddle tensor file, or a damaged one)'.format(
                src, what)
    # files that are not variables: skipped and listed, or said what they are
    (tmp_path / '.DS_Store').write_bytes(b'\0\1')
    src = _tar(folder, tmp_path / 'mac.tar', 'mac',
               extra={'.DS_Store': tmp_path / '.DS_Store'})
    assert read_weights(src).other == ['.DS_Store']
    inference = tmp_path / 'inference'
    inference.mkdir()
    for name in ('__model__', '__params__'):
        (inference / name).write_bytes(b'\0' * 8)
    with pytest.raises(WeightsFileError) as e:
        read_state_dict(str(inference))
    assert str(e.value) == (
        'weights archive {} holds no variables (only: __model__, __params__);'
        ' __model__ and __params__ make an exported inference model, whose '
        'weights are one combined file: use the training archive instead'
        .format(inference))
    # the tar itself cut short
    whole = (tmp_path / 'extra.tar').read_bytes()
    (tmp_path / 'cut.tar').write_bytes(whole[:len(whole) // 2])
    with pytest.raises(WeightsFileError, match='cut.tar: truncated or '
                       'corrupt'):
        read_state_dict(str(tmp_path / 'cut.tar'))


def test_a_0_5_imagenet_backbone_pretrains_the_backbone(zoo, tmp_path):
    """0.5's pretrain_weights were ImageNet backbone archives
    (ResNet34_pretrained.tar): --pretrained loads the backbone from them and
    leaves neck and head at their initialisation, with a report."""
    src = _tar(zoo['r34_backbone'] / 'vars', tmp_path / 'ResNet34.tar',
               'ResNet34_pretrained')
    model = _build(TEACHER)
    before, lines = _state(model), []
    report = load_pretrain(model, src, log=lines.append)
    assert len(report.matched) == 185 and len(report.missing) == 106
    assert all(k.startswith('backbone.') for k in report.matched)
    assert not report.unexpected
    after = _state(model)
    values = np.load(zoo['r34_backbone'] / 'values.npz')
    assert np.array_equal(after['backbone.conv1.conv1.conv.weight'],
                          values['conv1_weights'])
    for key in report.missing:
        assert np.array_equal(after[key], before[key])
    assert any('106 model key(s) not in the file keep their initialisation'
               in ln for ln in lines)


# -- the commands -----------------------------------------------------------

def test_the_blogs_distill_command_and_eval_take_0_5_archives(
        zoo, demo_voc, tmp_path, http_server, monkeypatch):
    """distill.py --teacher_pretrained URL-to-a-0.5-tar, as the seeds' blog
    post runs it; tools/eval.py -o weights=0.5-tar evaluates exactly as the
    converted .pdparams does."""
    convert_weights = script('tools/convert_weights.py')
    eval_tool = script('tools/eval.py')
    distill = script('slim/distillation/distill.py')
    srv, root, base = http_server
    _tar(zoo['r34'] / 'vars', root / 'yolov3_r34_voc.tar', 'yolov3_r34_voc')
    monkeypatch.setenv('DETDISTILL_CACHE', str(tmp_path / 'cache'))
    trainer = distill.main(
        ['-c', STUDENT, '-t', TEACHER, '--teacher_pretrained',
         base + 'yolov3_r34_voc.tar', '-o'] +
        tiny_opts(demo_voc, str(tmp_path), 1))
    archive = read_state_dict(str(root / 'yolov3_r34_voc.tar'))
    teacher = _state(trainer.model.teacher.model)
    assert sorted(teacher) == sorted(archive)
    for key, value in archive.items():  # frozen through the training
        assert np.array_equal(teacher[key], value), key

    src = _tar(zoo['mbv1'] / 'vars', tmp_path / 'mbv1.tar', 'mbv1')
    convert_weights.main(['-c', STUDENT, '--src', src, '--out',
                          str(tmp_path / 'mbv1.pdparams')])
    opts = tiny_opts(demo_voc, str(tmp_path))
    direct = eval_tool.main(['-c', STUDENT, '-o', 'weights=' + src] + opts)
    converted = eval_tool.main(['-c', STUDENT, '-o', 'weights=' + str(
        tmp_path / 'mbv1.pdparams')] + opts)
    del direct['images_per_sec'], converted['images_per_sec']
    assert direct == converted  # same detections (a few, random weights)
