"""tools/quantize.py on the demo student: PTQ calibration is a function of
the images alone, the INT8 network exports to Paddle Inference and to an
ONNX QDQ model that agree, QAT with distillation resumes exactly, and bad
inputs are named in one-line errors."""
import importlib.metadata
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import paddle
import pytest

from conftest import ROOT, STUDENT, TEACHER, script, tiny_opts
from detdistill.config import build_model, load_config
from detdistill.data.build import build_eval_loader
from detdistill.deploy.predictor import ExportedDetector
from detdistill.deploy.verify import BOX_RTOL, SCORE_ATOL, check_export
from detdistill.errors import ExportCheckError
from detdistill.quant.divergence import (TIE_STEPS, classify,
                                         forced_reference, onnx_int8_reader)
from detdistill.quant.checkpoint import load_int8
from detdistill.quant.qdq import Int8Conv2D, fake_quant, int8_convs

RUN = 'yolov3_mobilenet_v1_demo'
N_CONVS = 50  # every Conv2D of the demo student: backbone, neck, head


@pytest.fixture(scope='module')
def float_student(demo_voc, tmp_path_factory):
    """The demo student after one epoch (8 steps) on the demo data."""
    out = str(tmp_path_factory.mktemp('float'))
    script('tools/train.py').main(['-c', STUDENT, '-o'] +
                                  tiny_opts(demo_voc, out, 1))
    return os.path.join(out, RUN, 'model_final.pdparams')


def _quantize(demo_voc, save_dir, weights, *flags, epoch=1, extra=()):
    return script('tools/quantize.py').main(
        ['-c', STUDENT] + list(flags) + ['-o'] +
        tiny_opts(demo_voc, save_dir, epoch) + ['weights=' + weights] +
        list(extra))


def _ptq(demo_voc, save_dir, weights, n):
    return _quantize(demo_voc, save_dir, weights, '--mode', 'ptq',
                     '--calib_images', str(n))


def _int8(path, demo_voc):
    model = build_model(load_config(STUDENT, tiny_opts(demo_voc, '/tmp')))
    return load_int8(model, path)


def test_fake_quant_rounds_as_onnx_quantizelinear():
    # ties to even (numpy.rint, ONNX), saturation at -128 and 127
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49, 126.5, 127.5,
                  300., -128.5, -300.], 'float32')
    got = fake_quant(paddle.to_tensor(x), paddle.to_tensor([1.], 'float32'))
    np.testing.assert_array_equal(
        got.numpy(), [0., 2., 2., -0., -2., -2., 0., 126., 127., 127., -128.,
                      -128.])


def test_calibration_is_deterministic(demo_voc, float_student, tmp_path):
    a = _ptq(demo_voc, str(tmp_path / 'a'), float_student, 6)
    b = _ptq(demo_voc, str(tmp_path / 'b'), float_student, 6)
    c = _ptq(demo_voc, str(tmp_path / 'c'), float_student, 12)
    assert a == str(tmp_path / 'a' / (RUN + '_ptq') / 'int8.pdparams')
    wa, wb, wc = (paddle.load(p) for p in (a, b, c))
    assert list(wa) == list(wb)
    for k in wa:
        np.testing.assert_array_equal(wa[k].numpy(), wb[k].numpy(),
                                      err_msg=k)
    model = _int8(a, demo_voc)
    convs = int8_convs(model)
    assert len(convs) == N_CONVS
    # ppdet calls the head's output convs through a Python list: it must
    # hold the INT8 layers, or they would run unquantized
    for i, conv in enumerate(model.yolo_head.yolo_outputs):
        assert conv is convs['yolo_head.yolo_output.{}'.format(i)]
    # The first conv's input is the image: its scale is the abs max over
    # exactly the first 6 training images (eval transforms) / 127.
    cfg = load_config(STUDENT, tiny_opts(demo_voc, '/tmp'))
    loader, _ = build_eval_loader(dict(cfg, EvalDataset=cfg['TrainDataset']))
    images = np.concatenate([b['image'].numpy() for b in loader])
    assert images.shape[0] == 32
    first = 'backbone.conv1._conv.act_scale'
    assert wa[first].numpy()[0] == np.float32(
        np.abs(images[:6]).max()) / np.float32(127)
    assert wc[first].numpy()[0] == np.float32(
        np.abs(images[:12]).max()) / np.float32(127)
    # weight scales do not depend on the images; the stored weights are
    # their int8 values times the per-channel scale
    np.testing.assert_array_equal(
        wa['backbone.conv1._conv.weight_scale'].numpy(),
        wc['backbone.conv1._conv.weight_scale'].numpy())
    q = convs['backbone.conv1._conv'].int8_weight()
    np.testing.assert_array_equal(
        wa['backbone.conv1._conv.conv.weight'].numpy(),
        q.astype('float32') * wa['backbone.conv1._conv.weight_scale']
        .numpy().reshape([-1, 1, 1, 1]))
    assert np.abs(q).max() == 127


@pytest.fixture(scope='module')
def int8_export(demo_voc, float_student, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('int8'))
    weights = _ptq(demo_voc, out, float_student, 16)
    check = os.path.join(demo_voc, 'VOCdevkit', 'VOC2012', 'JPEGImages')
    model_dir = script('tools/export_model.py').main(
        ['-c', STUDENT, '--output_dir', os.path.join(out, 'exported'),
         '--exclude_nms', '--onnx', '--check_dir', check, '-o',
         'weights=' + weights, 'EvalDataset.dataset_dir=' + demo_voc,
         'TestDataset.anno_path=' + os.path.join(demo_voc,
                                                 'label_list.txt')])
    return weights, model_dir


def test_int8_export_paddle_and_onnx_agree(demo_voc, int8_export):
    weights, model_dir = int8_export
    model = onnx.load(os.path.join(model_dir, 'model.onnx'))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count('QuantizeLinear') == N_CONVS
    assert ops.count('DequantizeLinear') == 2 * N_CONVS
    assert ops.count('Conv') == N_CONVS
    assert max(o.version for o in model.opset_import if o.domain in
               ('', 'ai.onnx')) == 13
    # the ONNX int8 weights are the checkpoint's
    int8 = _int8(weights, demo_voc)
    consts = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
              for n in model.graph.node if n.op_type == 'Constant'}
    q_ws = [v for k, v in consts.items() if k.endswith('.qdq.q')]
    assert len(q_ws) == N_CONVS
    assert all(v.dtype == np.int8 for v in q_ws)
    assert sorted(np.abs(v).max() for v in q_ws) == sorted(
        np.abs(l.int8_weight()).max() for l in int8_convs(int8).values())

    # INT8 Paddle Inference vs INT8 ONNX Runtime on the 8 demo test images.
    # End to end they may part where one int8 activation sat on a rounding
    # tie; Paddle Inference fed ONNX Runtime's int8 conv inputs (through
    # the dygraph network, which Paddle Inference equals: the export check)
    # gives ONNX Runtime's outputs within the float tolerance.
    with open(os.path.join(demo_voc, 'test.txt')) as f:
        images = [os.path.join(demo_voc, line.split()[0]) for line in f]
    paddle_model = ExportedDetector(model_dir, 'paddle')
    onnx_model = ExportedDetector(model_dir, 'onnxruntime')
    read = onnx_int8_reader(os.path.join(model_dir, 'model.onnx'),
                            list(int8_convs(int8)),
                            onnx_model.backend.threads)
    for image in images:
        feed = paddle_model.preprocess([image])
        (pb, ps), (ob, os_) = paddle_model.run(feed), onnx_model.run(feed)
        assert ps.shape == (1, 6, 1575) and pb.shape == (1, 1575, 4)
        got, int8_inputs = read(feed)
        for a, b in zip(got, (ob, os_)):
            np.testing.assert_array_equal(a, b)
        (fb, fs), parted = forced_reference(int8, feed, int8_inputs,
                                            _raw_outputs)
        assert all(d['tie'] for d in parted.values()), parted
        np.testing.assert_allclose(fs, os_, rtol=0, atol=SCORE_ATOL)
        live = (fs.max(axis=1) > 0) & (os_.max(axis=1) > 0)
        np.testing.assert_allclose(fb[live], ob[live], rtol=0,
                                   atol=BOX_RTOL * 160)
        if not parted:  # no tie on the way: Paddle Inference agrees as is
            np.testing.assert_allclose(ps, os_, rtol=0, atol=SCORE_ATOL)


def _raw_outputs(model, feed):
    from detdistill.deploy.layers import deploy_layer
    layer = deploy_layer(model, False)
    with paddle.no_grad():
        return [t.numpy() for t in layer(*[paddle.to_tensor(feed[n])
                                           for n in layer.inputs])]


def test_int8_export_with_nms_passes_its_check(demo_voc, int8_export,
                                               tmp_path):
    """With NMS in the model (batch 1 in ONNX) the check pairs detections
    against the same forced reference, and the export completes."""
    weights, _ = int8_export
    check = os.path.join(demo_voc, 'VOCdevkit', 'VOC2012', 'JPEGImages')
    model_dir = script('tools/export_model.py').main(
        ['-c', STUDENT, '--output_dir', str(tmp_path), '--onnx',
         '--check_dir', check, '-o', 'weights=' + weights,
         'EvalDataset.dataset_dir=' + demo_voc,
         'TestDataset.anno_path=' + os.path.join(demo_voc,
                                                 'label_list.txt')])
    ops = [n.op_type for n in onnx.load(os.path.join(
        model_dir, 'model.onnx')).graph.node]
    assert ops.count('QuantizeLinear') == N_CONVS
    assert 'NonMaxSuppression' in ops


def test_int8_export_leaves_installed_packages_unchanged(
        demo_voc, int8_export, tmp_path):
    """The INT8 ONNX export goes through paddle2onnx too, whose polygraphy
    path pip-installs packages when this variable is set (docs/deploy.md):
    the installed set is the same after it."""
    weights, _ = int8_export

    def installed():
        return sorted((d.metadata['Name'].lower(), d.version)
                      for d in importlib.metadata.distributions())
    before = installed()
    env = dict(os.environ, POLYGRAPHY_AUTOINSTALL_DEPS='1')
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'tools', 'export_model.py'),
         '-c', STUDENT, '--onnx', '--exclude_nms', '--output_dir',
         str(tmp_path), '-o', 'weights=' + weights,
         'EvalDataset.dataset_dir=' + demo_voc,
         'TestDataset.anno_path=' + os.path.join(demo_voc, 'label_list.txt')],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'QuantizeLinear/DequantizeLinear on the inputs and weights of ' \
        '{} convs'.format(N_CONVS) in proc.stdout + proc.stderr
    assert installed() == before


def test_a_rounding_tie_is_told_from_a_wrong_value():
    """The rule that excuses an INT8 ONNX image: at the first parted conv,
    every differing element one step apart and within TIE_STEPS of a half
    step (on the dygraph side)."""
    steps = np.array([[0.2, 3.5, -7.5000005, 10.4, 126.9]], 'float32')
    ours = np.array([[0, 4, -8, 10, 127]], 'int8')  # half to even
    assert classify(steps, ours) is None
    tie = ours.copy()
    tie[0, 1] = 3  # 3.5 rounded down: a tie
    assert classify(steps, tie) == {'elements': 1, 'max_steps': 1,
                                    'max_tie_distance': 0.0, 'tie': True}
    tie[0, 2] = -7  # 5e-7 steps from the tie: float rounding
    got = classify(steps, tie)
    assert got['elements'] == 2 and got['tie']
    assert 0 < got['max_tie_distance'] < TIE_STEPS
    far = ours.copy()
    far[0, 3] = 11  # 10.4 is 0.1 steps from a tie: not rounding
    got = classify(steps, far)
    assert not got['tie'] and got['max_steps'] == 1
    assert abs(got['max_tie_distance'] - 0.1) < 1e-5
    two = ours.copy()
    two[0, 1] = 2  # two steps away, even at a tie
    assert classify(steps, two)['max_steps'] == 2
    assert not classify(steps, two)['tie']


def test_a_wrong_int8_scale_fails_the_export_check(demo_voc, int8_export,
                                                   tmp_path):
    """One conv's activation scale off by 30 % in the ONNX model: the check
    names the conv where the int8 activations part, far from any tie."""
    weights, model_dir = int8_export
    int8 = _int8(weights, demo_voc)
    broken = str(tmp_path / 'broken')
    shutil.copytree(model_dir, broken)
    model = onnx.load(os.path.join(broken, 'model.onnx'))
    layer = 'backbone.conv4_1._pointwise_conv._conv'
    for node in model.graph.node:
        if node.op_type == 'Constant' and node.output[0] == \
                layer + '.qdq.x_scale':
            scale = onnx.numpy_helper.to_array(node.attribute[0].t)
            node.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(
                (scale * 1.3).astype('float32'), node.output[0]))
            break
    else:
        raise AssertionError('no activation scale constant for ' + layer)
    onnx.save(model, os.path.join(broken, 'model.onnx'))
    with open(os.path.join(demo_voc, 'test.txt')) as f:
        images = [os.path.join(demo_voc, line.split()[0]) for line in f]
    # the intact export passes the same check
    check_export(model_dir, int8, images[:4], ('onnxruntime',))
    with pytest.raises(ExportCheckError) as e:
        check_export(broken, int8, images[:4], ('onnxruntime',))
    assert 'the int8 input of {} differs'.format(layer) in str(e.value)
    assert 'not float rounding, the export is wrong there' in str(e.value)


def test_qat_resume_is_exact(demo_voc, float_student, tmp_path):
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    qat = ['--mode', 'qat']
    extra = ['LearningRate.base_lr=0.0001']
    a = _quantize(demo_voc, full, float_student, *qat, epoch=2, extra=extra)
    _quantize(demo_voc, part, float_student, *qat, epoch=1, extra=extra)
    b = _quantize(demo_voc, part, float_student, '-r',
                  os.path.join(part, RUN + '_qat', '0'), *qat, epoch=2,
                  extra=extra)
    for name in ('model_final.pdparams', 'int8.pdparams'):
        wa, wb = (paddle.load(os.path.join(d, RUN + '_qat', name))
                  for d in (full, part))
        assert list(wa) == list(wb)
        for k in wa:
            np.testing.assert_array_equal(wa[k].numpy(), wb[k].numpy(),
                                          err_msg='{}: {}'.format(name, k))
    assert a == os.path.join(full, RUN + '_qat', 'int8.pdparams')
    assert b == os.path.join(part, RUN + '_qat', 'int8.pdparams')
    # the QAT checkpoint holds the quantizers' state beside the weights
    state = paddle.load(os.path.join(full, RUN + '_qat',
                                     'model_final.pdparams'))
    assert any('activation_quanter' in k for k in state)
    assert isinstance(int8_convs(_int8(a, demo_voc))[
        'backbone.conv1._conv'], Int8Conv2D)


def test_qat_with_the_big_teacher(demo_voc, float_student, teacher_weights,
                                  tmp_path, log_lines):
    out = _quantize(demo_voc, str(tmp_path), float_student, '--mode', 'qat',
                    '-t', TEACHER, '--teacher_pretrained', teacher_weights,
                    extra=['LearningRate.base_lr=0.0001'])
    assert out == str(tmp_path / (RUN + '_qat') / 'int8.pdparams')
    assert 'QAT teacher: the float student itself' not in log_lines
    assert any(line.startswith('Distillation: L2Distill') for line in
               log_lines)
    assert len(int8_convs(_int8(out, demo_voc))) == N_CONVS


def test_qat_without_distillation(demo_voc, float_student, tmp_path,
                                  log_lines):
    """--no_distill: the fake-quantized student trains on the detection
    loss alone (no teacher built, no distill term logged), and still ends in
    an INT8 checkpoint of every conv; with a teacher it is refused."""
    out = _quantize(demo_voc, str(tmp_path), float_student, '--mode', 'qat',
                    '--no_distill', extra=['LearningRate.base_lr=0.0001'])
    assert out == str(tmp_path / (RUN + '_qat') / 'int8.pdparams')
    assert 'QAT without distillation: the detection loss alone' in log_lines
    assert not any(line.startswith('Distillation:') or 'QAT teacher' in line
                   for line in log_lines)
    steps = [line for line in log_lines if ' step: ' in line]
    assert steps and not any('distill_loss' in line for line in steps)
    assert len(int8_convs(_int8(out, demo_voc))) == N_CONVS
    _fails(log_lines, ['-c', STUDENT, '--mode', 'qat', '--no_distill', '-t',
                       TEACHER, '--teacher_pretrained', float_student, '-o'] +
           tiny_opts(demo_voc, str(tmp_path)) + ['weights=' + float_student],
           'QuantizationError: --no_distill trains without a teacher: drop '
           '-t/--teacher_pretrained')


def _fails(log_lines, argv, expected):
    with pytest.raises(SystemExit) as e:
        script('tools/quantize.py').main(argv)
    assert e.value.code == 1
    assert any(expected in line for line in log_lines), log_lines[-3:]


def test_bad_inputs_are_named(demo_voc, float_student, tmp_path, log_lines):
    base = ['-c', STUDENT, '--mode', 'ptq', '-o'] + \
        tiny_opts(demo_voc, str(tmp_path))
    _fails(log_lines, base[:3] + ['ptq', '--calib_images', '0'] + base[4:] +
           ['weights=' + float_student],
           'QuantizationError: calibration needs at least 1 image, got '
           '--calib_images 0')
    _fails(log_lines, base[:3] + ['ptq', '--calib_images', '33'] + base[4:] +
           ['weights=' + float_student],
           'QuantizationError: calibration asks for 33 images but the '
           'training list trainval.txt has 32')
    qat = ['-c', STUDENT, '--mode', 'qat', '-t', TEACHER, '-o'] + \
        tiny_opts(demo_voc, str(tmp_path)) + ['weights=' + float_student]
    _fails(log_lines, qat, 'QuantizationError: -t needs --teacher_pretrained')
    # an INT8 checkpoint is not a float student
    int8 = _ptq(demo_voc, str(tmp_path / 'q'), float_student, 2)
    _fails(log_lines, base + ['weights=' + int8],
           'QuantizationError: {} is already an INT8 checkpoint'.format(int8))
    # the teacher's weights are not the student's
    teacher = str(tmp_path / 'teacher.pdparams')
    paddle.save(build_model(load_config(TEACHER)).state_dict(), teacher)
    _fails(log_lines, base + ['weights=' + teacher], 'WeightsMismatchError')
    # float weights where an INT8 checkpoint is expected
    with pytest.raises(Exception) as e:
        _int8(float_student, demo_voc)
    assert type(e.value).__name__ == 'QuantizationError'
    assert str(e.value) == (
        '{} is not an INT8 checkpoint (no .act_scale keys): '
        'tools/quantize.py writes one (int8.pdparams)'.format(float_student))


def test_int8_quality_table_over_seeds(demo_voc, float_student, tmp_path):
    """tools/dev/int8_quality.py: per seed, the float student and its PTQ,
    QAT and QAT-with-distillation versions evaluated by tools/eval.py; the
    table shows those results, and a second invocation reuses every
    finished step."""
    import json
    tool = script('tools/dev/int8_quality.py')
    out = str(tmp_path / 'q')
    opts = [o for o in tiny_opts(demo_voc, 'unused')
            if not o.startswith(('save_dir=', 'epoch='))]
    argv = ['--profile', 'demo', '--weights', '0=' + float_student,
            '--out', out, '--calib_images', '8',
            '--qat_opts', 'epoch=1', 'LearningRate.base_lr=0.0001', '-o'] + \
        opts
    tool.main(argv)
    with open(os.path.join(out, 'quality.json')) as f:
        res = json.load(f)['results']
    assert sorted(res) == ['0']
    for seed in res:
        assert list(res[seed]) == tool.STEPS
        assert os.path.isfile(os.path.join(out, seed, 'yolov3_mobilenet_v1_'
                                           'demo_qat', 'int8.pdparams'))
        assert os.path.isfile(os.path.join(out, seed, 'nd', 'yolov3_'
                                           'mobilenet_v1_demo_qat',
                                           'int8.pdparams'))
    with open(os.path.join(out, '0', 'float.json')) as f:  # eval.py's own
        assert res['0']['float']['mAP'] == json.load(f)['mAP']
    m = [100 * res['0'][s]['mAP']['11point'] for s in tool.STEPS]
    text = open(os.path.join(out, 'QUALITY.md')).read()
    assert '| QAT, detection loss alone | {:.2f} | 0.00 | {:.2f} | ' \
        '{:+.2f} |'.format(m[2], m[2], m[2] - m[0]) in text
    stamp = os.path.getmtime(os.path.join(out, '0', 'qat_distill.json'))
    tool.main(argv)
    assert os.path.getmtime(os.path.join(out, '0', 'qat_distill.json')) == \
        stamp
