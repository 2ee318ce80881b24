"""tools/export_model.py, tools/infer.py --model_dir and tools/eval.py
--model_dir on real demo images: the exported Paddle Inference and ONNX
models give the dygraph model's outputs, a broken export fails its check, and
exporting changes nothing in the installed environment."""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

from conftest import ROOT, STUDENT, TEACHER, script, tiny_opts
from detdistill.errors import ExportCheckError
from detdistill.config import build_model, load_config
from detdistill.deploy.layers import DeployYOLOv3
from detdistill.deploy.onnx_convert import float32_attrs
from detdistill.deploy.predictor import ExportedDetector
from detdistill.deploy.verify import (BOX_RTOL, SCORE_ATOL, check_export,
                                      compare_detections, compare_raw)
from detdistill.infer import predict
from detdistill.weights import load_weights

FULL_STUDENT = os.path.join(ROOT, 'configs/yolov3_mobilenet_v1_voc.yml')
BOX_ATOL = BOX_RTOL * 160  # px, the check's tolerance on 160 px images
NMS = {'score_threshold': 0.01, 'nms_top_k': 400, 'keep_top_k': 100,
       'nms_threshold': 0.45, 'normalized': True, 'nms_eta': 1.0,
       'background_label': 6}


def _opts(demo_voc):
    return ['TestDataset.anno_path=' + os.path.join(demo_voc,
                                                    'label_list.txt'),
            'EvalDataset.dataset_dir=' + demo_voc]


def _test_images(demo_voc):
    with open(os.path.join(demo_voc, 'test.txt')) as f:
        return [os.path.join(demo_voc, line.split()[0]) for line in f]


@pytest.fixture(scope='module')
def trained(demo_voc, tmp_path_factory):
    """Student and teacher weights after one epoch (8 steps) on the demo
    data: BatchNorm statistics and head outputs of a trained model."""
    train = script('tools/train.py')
    out = str(tmp_path_factory.mktemp('trained'))
    weights = {}
    for name, cfg in (('student', STUDENT), ('teacher', TEACHER)):
        train.main(['-c', cfg, '-o'] + tiny_opts(demo_voc, out, 1))
        weights[name] = os.path.join(out, os.path.splitext(
            os.path.basename(cfg))[0], 'model_final.pdparams')
    return weights


def _detector(config, weights, *opts):
    cfg = load_config(config, list(opts) + ['weights=' + weights])
    detector = build_model(cfg)
    load_weights(detector, weights)
    detector.eval()
    return cfg, detector


def _export(config, weights, out, *flags, opts=()):
    export_model = script('tools/export_model.py')
    return export_model.main(['-c', config, '--output_dir', out] +
                             list(flags) + ['-o', 'weights=' + weights] +
                             list(opts))


@pytest.fixture(scope='module')
def exported(demo_voc, trained, tmp_path_factory):
    """Both demo models exported with NMS and --onnx, checked on the
    demo test images."""
    out = str(tmp_path_factory.mktemp('exported'))
    check = os.path.dirname(_test_images(demo_voc)[0])
    return {name: _export(cfg, trained[name], out, '--onnx', '--check_dir',
                          check, opts=_opts(demo_voc))
            for name, cfg in (('student', STUDENT), ('teacher', TEACHER))}


@pytest.mark.parametrize('name', ['student', 'teacher'])
def test_exported_model_detects_as_dygraph(demo_voc, trained, exported,
                                           name):
    model_dir = exported[name]
    assert sorted(os.listdir(model_dir)) == [
        'infer_cfg.yml', 'model.json', 'model.onnx', 'model.pdiparams']
    with open(os.path.join(model_dir, 'infer_cfg.yml')) as f:
        infer_cfg = yaml.safe_load(f)
    assert infer_cfg == {
        'mode': 'paddle', 'draw_threshold': 0.5, 'metric': 'VOC',
        'use_dynamic_shape': False, 'arch': 'YOLO', 'min_subgraph_size': 3,
        'Preprocess': [
            {'type': 'Resize', 'target_size': [160, 160],
             'keep_ratio': False, 'interp': 2},
            {'type': 'NormalizeImage', 'mean': [0.485, 0.456, 0.406],
             'std': [0.229, 0.224, 0.225], 'is_scale': True},
            {'type': 'Permute'}],
        'label_list': ['circle', 'ring', 'square', 'cross', 'triangle',
                       'star'],
        'image_shape': [3, 160, 160], 'exclude_nms': False,
        'outputs': ['bbox', 'bbox_num']}

    images = _test_images(demo_voc)
    cfg, detector = _detector(STUDENT if name == 'student' else TEACHER,
                              trained[name], *_opts(demo_voc))
    ref = dict(predict(cfg, detector, images))
    assert sum(len(d) for d in ref.values()) > 0
    for backend in ('paddle', 'onnxruntime'):
        model = ExportedDetector(model_dir, backend)
        for batch_size in (1, 8):
            got = dict(model.predict(images, batch_size))
            for path in images:
                r, g = ref[path], got[path]
                # same detections, same order, within the check's tolerance
                assert len(g) == len(r), (backend, path)
                np.testing.assert_array_equal(g[:, 0], r[:, 0])
                np.testing.assert_allclose(g[:, 1], r[:, 1], rtol=0,
                                           atol=SCORE_ATOL)
                np.testing.assert_allclose(g[:, 2:], r[:, 2:], rtol=0,
                                           atol=BOX_ATOL)


def _assert_raw_outputs_are_dygraphs(model_dir, backend, detector, images):
    """An --exclude_nms export's boxes and scores on `images` are the
    dygraph model's (DeployYOLOv3, what export traces) within the check's
    tolerance; returns the exported model and its feed."""
    model = ExportedDetector(model_dir, backend)
    feed = model.preprocess(images)
    boxes, scores = model.run(feed)
    n = len(images)
    assert boxes.shape == (n, 1575, 4)  # 3 anchors x (5² + 10² + 20²)
    assert scores.shape == (n, 6, 1575)
    with paddle.no_grad():
        ref_boxes, ref_scores = [t.numpy() for t in DeployYOLOv3(
            detector, False)(*[paddle.to_tensor(feed[k]) for k in (
                'image', 'im_shape', 'scale_factor')])]
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=SCORE_ATOL)
    kept = (ref_scores > 0).any(1)  # YOLOBox zeroes the rest
    assert kept.sum() > 100
    np.testing.assert_allclose(boxes[kept], ref_boxes[kept], rtol=0,
                               atol=BOX_ATOL)
    return model, feed


def test_exclude_nms_outputs_and_host_nms(demo_voc, trained, tmp_path):
    model_dir = _export(STUDENT, trained['student'], str(tmp_path),
                        '--exclude_nms', '--onnx', opts=_opts(demo_voc))
    with open(os.path.join(model_dir, 'infer_cfg.yml')) as f:
        infer_cfg = yaml.safe_load(f)
    assert infer_cfg['exclude_nms'] is True
    assert infer_cfg['outputs'] == ['boxes', 'scores']
    assert infer_cfg['NMS'] == NMS

    images = _test_images(demo_voc)
    cfg, detector = _detector(STUDENT, trained['student'], *_opts(demo_voc))
    for backend in ('paddle', 'onnxruntime'):
        model, feed = _assert_raw_outputs_are_dygraphs(model_dir, backend,
                                                       detector, images)
        # NMS on the host gives dygraph's detections
        with paddle.no_grad():
            ref = detector({k: paddle.to_tensor(v) for k, v in feed.items()})
        got = model(feed)
        np.testing.assert_array_equal(got['bbox_num'],
                                      ref['bbox_num'].numpy())
        np.testing.assert_array_equal(got['bbox'][:, 0],
                                      ref['bbox'].numpy()[:, 0])
        np.testing.assert_allclose(got['bbox'][:, 1], ref['bbox'].numpy()[
            :, 1], rtol=0, atol=SCORE_ATOL)
        np.testing.assert_allclose(got['bbox'][:, 2:], ref['bbox'].numpy()[
            :, 2:], rtol=0, atol=BOX_ATOL)


def test_infer_and_eval_with_model_dir(demo_voc, trained, exported,
                                       tmp_path):
    eval_tool = script('tools/eval.py')
    infer = script('tools/infer.py')
    image = _test_images(demo_voc)[0]
    drawn = {}
    for mode, args in (
            ('dygraph', ['-c', STUDENT, '-o', 'weights=' + trained['student'],
                         'TestDataset.anno_path=' + os.path.join(
                             demo_voc, 'label_list.txt')]),
            ('paddle', ['--model_dir', exported['student']]),
            ('onnxruntime', ['--model_dir', exported['student'],
                             '--backend', 'onnxruntime'])):
        out = str(tmp_path / mode)
        written, = infer.main(args + ['--infer_img', image, '--output_dir',
                                      out, '--draw_threshold', '0.02'])
        drawn[mode] = np.asarray(Image.open(written))
    assert (drawn['dygraph'] != np.asarray(Image.open(image))).any()
    np.testing.assert_array_equal(drawn['paddle'], drawn['dygraph'])
    np.testing.assert_array_equal(drawn['onnxruntime'], drawn['dygraph'])

    opts = ['-o'] + _opts(demo_voc)
    ref = eval_tool.main(['-c', STUDENT] + opts + ['weights=' +
                                                   trained['student']])
    for backend in ('paddle', 'onnxruntime'):
        res = eval_tool.main(['-c', STUDENT, '--model_dir',
                              exported['student'], '--backend', backend] +
                             opts)
        assert res['mAP'] == ref['mAP']
        assert res['num_images'] == ref['num_images'] == 8


def test_float64_attributes_rewritten_for_paddle2onnx_only(exported):
    path = os.path.join(exported['student'], 'model.json')
    with open(path) as f:
        program = json.load(f)
    # 20 leaky_relu slopes and 2 nearest_interp scale arrays in the demo
    # student; Paddle's own file keeps them float64
    assert float32_attrs(program) == 22
    assert float32_attrs(program) == 0
    with open(path) as f:
        assert f.read().count('"0.a_f64"') >= 22


def test_paddle2onnx_failure_is_a_clear_error(exported, tmp_path,
                                              monkeypatch):
    """Without the float64 rewrite paddle2onnx 2.1.0 rejects Paddle 3.3's
    program (and calls sys.exit itself): the conversion must end in our
    error, not a silent exit."""
    from detdistill.deploy import onnx_convert
    model_dir = str(tmp_path / 'model')
    shutil.copytree(exported['student'], model_dir)
    os.remove(os.path.join(model_dir, 'model.onnx'))
    monkeypatch.setattr(onnx_convert, 'F64_ATTRS_READ_AS_F32', set())
    with pytest.raises(onnx_convert.OnnxExportError,
                       match='paddle2onnx 2.1.0 could not convert'):
        onnx_convert.convert_to_onnx(model_dir)
    assert sorted(os.listdir(model_dir)) == [
        'infer_cfg.yml', 'model.json', 'model.pdiparams']


def test_full_size_student_exports(tmp_path):
    paddle.seed(3)
    weights = str(tmp_path / 'random.pdparams')
    paddle.save(build_model(load_config(FULL_STUDENT)).state_dict(), weights)
    image = tmp_path / 'img.jpg'
    Image.fromarray(np.random.RandomState(0).randint(
        0, 256, (375, 500, 3), dtype=np.uint8)).save(image)
    model_dir = _export(FULL_STUDENT, weights, str(tmp_path / 'out'),
                        '--onnx', '--check_dir', str(tmp_path))
    model = ExportedDetector(model_dir, 'onnxruntime')
    assert len(model.label_list) == 20 and model.label_list[0] == 'aeroplane'
    assert model.infer_cfg['image_shape'] == [3, 608, 608]
    assert model.backend.batch_size == 1  # NMS: paddle2onnx converts batch 1


def test_broken_export_fails_its_check(demo_voc, trained, exported,
                                       tmp_path):
    _, detector = _detector(STUDENT, trained['student'], *_opts(demo_voc))
    images = _test_images(demo_voc)[:2]
    report = check_export(exported['student'], detector, images,
                          ('paddle', 'onnxruntime'))
    assert report['paddle']['max_score_diff'] == 0.0
    assert report['paddle']['max_box_diff_px'] == 0.0
    assert report['onnxruntime']['max_score_diff'] < 1e-5

    tampered = str(tmp_path / 'tampered')
    shutil.copytree(exported['student'], tampered)
    params = os.path.join(tampered, 'model.pdiparams')
    data = bytearray(open(params, 'rb').read())
    data[-4000:] = bytes(4000)  # zero the last 1000 float32 weights
    open(params, 'wb').write(bytes(data))
    with pytest.raises(ExportCheckError) as e:
        check_export(tampered, detector, images, ('paddle', 'onnxruntime'))
    msg = str(e.value)
    assert 'differs from the dygraph model beyond the tolerance' in msg
    assert 'paddle: ' in msg and 'onnxruntime: ' not in msg  # ONNX intact
    assert 'detections have no counterpart within tolerance' in msg

    open(params, 'wb').write(bytes(data[:len(data) // 2]))  # truncated
    with pytest.raises(ExportCheckError, match='paddle: cannot load the '
                       'exported model: RuntimeError'):
        check_export(tampered, detector, images, ('paddle',))


def test_failed_check_leaves_nothing_behind(demo_voc, tmp_path):
    """A freshly initialised ResNet teacher has head logits in the
    thousands: paddle2onnx's yolo_box then gives non-finite boxes where
    Paddle gives finite ones, and the export must refuse to finish."""
    paddle.seed(0)
    weights = str(tmp_path / 'random_teacher.pdparams')
    paddle.save(build_model(load_config(TEACHER)).state_dict(), weights)
    check = os.path.dirname(_test_images(demo_voc)[0])
    out = tmp_path / 'out'
    with pytest.raises(SystemExit):
        _export(TEACHER, weights, str(out), '--exclude_nms', '--onnx',
                '--check_dir', check, opts=_opts(demo_voc))
    assert os.listdir(out) == []  # no model, no temporary directory


def _installed():
    return sorted((d.metadata['Name'].lower(), d.version)
                  for d in importlib.metadata.distributions())


def test_export_leaves_installed_packages_unchanged(trained, demo_voc,
                                                    tmp_path):
    before = _installed()
    # paddle2onnx's polygraphy path sets this; export must not honour it
    env = dict(os.environ, POLYGRAPHY_AUTOINSTALL_DEPS='1')
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'tools', 'export_model.py'),
         '-c', STUDENT, '--onnx', '--exclude_nms', '--output_dir',
         str(tmp_path), '-o', 'weights=' + trained['student']] +
        _opts(demo_voc), cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert _installed() == before
    # what it wrote is the trained student, in ONNX too: the conversion
    # whose dependencies the variable would have installed did run
    model_dir = str(tmp_path / 'yolov3_mobilenet_v1_demo')
    _, detector = _detector(STUDENT, trained['student'], *_opts(demo_voc))
    _assert_raw_outputs_are_dygraphs(model_dir, 'onnxruntime', detector,
                                     _test_images(demo_voc))


def test_comparisons_excuse_threshold_flips_only():
    feed = {'im_shape': np.array([[160., 160.]], 'float32'),
            'scale_factor': np.array([[1., 1.]], 'float32')}
    ref = np.array([[0, 0.90, 10, 10, 50, 50],
                    [1, 0.0100, 60, 60, 90, 90]], 'float32')
    # the second detection sits on score_threshold: missing is excused
    stats, problems = compare_detections((ref, [2]), (ref[:1], [1]), feed,
                                         NMS)
    assert problems == [] and stats['threshold_flips'] == 1
    # a confident detection missing is not
    _, problems = compare_detections((ref, [2]), (ref[1:], [1]), feed, NMS)
    assert len(problems) == 1 and 'class 0 score 0.900000' in problems[0]
    # a box 0.02 px off fails (tolerance 1e-4 x 160 px = 0.016 px)
    moved = ref.copy()
    moved[0, 2] += 0.02
    _, problems = compare_detections((ref, [2]), (moved, [2]), feed, NMS)
    assert len(problems) == 2  # unmatched on both sides
    assert all('1 of 2' in p for p in problems)

    # a saturated model: scores tied at 1.0, NMS keeps arbitrary boxes
    tied = np.array([[0, 1.0, x, x, x + 20, x + 20] for x in (0, 30, 60)],
                    'float32')
    shifted = tied + np.array([0, 0, 5, 5, 5, 5], 'float32')
    stats, problems = compare_detections((tied, [3]), (shifted, [3]), feed,
                                         dict(NMS, keep_top_k=3))
    assert stats['threshold_flips'] == 6
    assert problems == ['6 of 6 detections sit on a threshold: too many to '
                        'call the outputs equal (a saturated model?); check '
                        'on other images (--check_dir)']

    boxes = np.array([[[1, 1, 5, 5], [2, 2, 6, 6]]], 'float32')
    scores = np.array([[[0.5, 0.00505]]], 'float32')  # [B, C, M]
    flipped_boxes, flipped_scores = boxes.copy(), scores.copy()
    flipped_boxes[0, 1] = np.nan  # zeroed by the other side: box ignored
    flipped_scores[0, 0, 1] = 0
    stats, problems = compare_raw((boxes, scores),
                                  (flipped_boxes, flipped_scores), feed,
                                  conf_thresh=0.005)
    assert problems == [] and stats['conf_thresh_flips'] == 1
    flipped_scores[0, 0, 0] = 0  # a 0.5 candidate dropped
    _, problems = compare_raw((boxes, scores), (flipped_boxes,
                                                flipped_scores), feed, 0.005)
    assert any('kept by one side only' in p for p in problems)


def test_speed_table_rows(demo_voc, exported, monkeypatch):
    """bench/deploy_speed.py's table of the exported models, recomputed here
    from the timings it was made of (each timed call recorded): per backend
    and batch, a calibration call of each model, then per round one timed
    call of each; img/s the median over rounds of batch / seconds, the
    ratio the median per-round ratio to the reference (the last model)."""
    import statistics
    from bench import deploy_speed
    timed = []
    time_runs = deploy_speed.time_runs

    def recorded(runner, data, repeats):
        seconds = time_runs(runner, data, repeats)
        timed.append((repeats, seconds))
        return seconds
    monkeypatch.setattr(deploy_speed, 'time_runs', recorded)
    model = ExportedDetector(exported['student'])
    feed = model.preprocess(_test_images(demo_voc)[:3])
    rows = deploy_speed.measure_speed(exported, feed, threads=(1,),
                                      batches=(1, 4), rounds=2,
                                      min_seconds=0.01, log=lambda *a: None)
    assert [(r['backend'], r['threads'], r['batch']) for r in rows] == [
        ('paddle', 1, 1), ('paddle', 1, 4), ('onnxruntime', 1, 1),
        ('onnxruntime', 1, 4)]
    names = list(exported)
    assert names == ['student', 'teacher']
    calls = len(names) * (1 + 2)
    assert len(timed) == len(rows) * calls
    for i, r in enumerate(rows):
        calibration = timed[i * calls:i * calls + len(names)]
        rounds = timed[i * calls + len(names):(i + 1) * calls]
        assert [n for n, _ in calibration] == [2, 2]
        repeats = [max(2, int(0.01 / max(sec, 1e-6)))
                   for _, sec in calibration]
        ips = {name: [] for name in names}
        for j, (n, sec) in enumerate(rounds):
            assert n == repeats[j % len(names)]
            ips[names[j % len(names)]].append(r['batch'] / sec)
        for name in names:
            assert r['rounds'][name] == [round(x, 2) for x in ips[name]]
            assert r['ips'][name] == statistics.median(ips[name])
            assert r['ratio'][name] == statistics.median(
                a / b for a, b in zip(ips[name], ips['teacher']))
        assert r['ratio']['teacher'] == 1.0
