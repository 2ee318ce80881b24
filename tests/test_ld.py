"""Localization distillation (LD) for GFL heads: the loss against an
independent numpy reference of its formula, the valuable localization region
(VLR) on hand-made anchors and boxes, the Gt2LDTarget transform, ppdet's QFL
under Paddle 3, and `distill.py -o distill_loss=ld` end to end on the demo
data (frozen teacher, logged components, exact resume)."""
import copy
import json
import os

import numpy as np
import paddle
import pytest

from conftest import ROOT, STUDENT, script, tiny_opts
from detdistill.errors import ConfigError, PairingError
from detdistill.config import build_model, load_config
from detdistill.data.ld_targets import Gt2LDTarget, vlr_region
from detdistill.distill.distiller import build_distiller
from detdistill.distill.losses import LDDistill
from detdistill.engine import Trainer
from detdistill.engine.checkpoint import load_checkpoint

GFL_STUDENT = os.path.join(ROOT, 'configs/demo/gfl_r18_demo.yml')
GFL_TEACHER = os.path.join(ROOT, 'configs/demo/gfl_r34_demo.yml')
CFG_NAME = 'gfl_r18_demo'


# -- the loss ---------------------------------------------------------------

def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _kl(s, t):
    """KL(softmax(t) || softmax(s)) of two 1-D logit vectors."""
    pt, ps = _softmax(t), _softmax(s)
    return float((pt * np.log(pt / ps)).sum())


def _reference(s, t, labels, vlr, num_classes, T, w):
    """The formula of LDDistill's docstring, location by location: every
    output is indexed as [image, channel, y, x] on its own level and
    matched to the assignment's flat index (level offset + y * W + x)."""
    levels = len(s) // 2
    bins = s[0].shape[1] // 4
    ld = vlr_ld = kd = vlr_kd = 0.
    offset = 0
    for lvl in range(levels):
        n, _, h, wd = s[lvl].shape
        kd_pos, kd_vlr = [], []
        for i in range(n):
            for y in range(h):
                for x in range(wd):
                    a = offset + y * wd + x
                    pos = 0 <= labels[i, a] < num_classes
                    v = 0. if pos else vlr[i, a]
                    edge = [slice(e * bins, (e + 1) * bins)
                            for e in range(4)]
                    edges = sum(_kl(s[lvl][i, b, y, x] / T,
                                    t[lvl][i, b, y, x] / T) for b in edge)
                    cls_s = s[levels + lvl][i, :, y, x]
                    cls_t = t[levels + lvl][i, :, y, x]
                    if pos:
                        score = (1 / (1 + np.exp(-cls_s))).max()
                        ld += score * edges
                        kd_pos.append(_kl(cls_s / T, cls_t / T))
                    if v > 0:
                        vlr_ld += v * edges
                        kd_vlr.append(_kl(cls_s / T, cls_t / T))
        kd += np.mean(kd_pos) if kd_pos else 0.
        vlr_kd += np.mean(kd_vlr) if kd_vlr else 0.
        offset += h * wd
    return {'ld': w['ld'] * T * T / bins * ld / 4,
            'vlr_ld': w['vlr_ld'] * T * T / bins * vlr_ld / 16,
            'kd': w['kd'] * T * T / num_classes * kd,
            'vlr_kd': w['vlr_kd'] * T * T / num_classes * vlr_kd}


def _case(seed=0):
    """Two images, two levels (3x4 and 2x2 locations), reg_max 4, three
    classes. Positives only on level 0; a VLR on both levels, with one
    location that is both positive and in the band (must count as
    positive only)."""
    rng = np.random.RandomState(seed)
    shapes = [(2, 20, 3, 4), (2, 20, 2, 2), (2, 3, 3, 4), (2, 3, 2, 2)]
    s = [rng.randn(*sh) * 3 for sh in shapes]
    t = [rng.randn(*sh) * 3 for sh in shapes]
    labels = np.full((2, 16), 3, 'int64')
    labels[0, [1, 5, 6]] = [0, 2, 2]
    labels[1, 10] = 1
    vlr = np.zeros((2, 16), 'float32')
    vlr[0, [2, 6, 13]] = [0.4, 0.9, 0.3]   # 6 is positive
    vlr[1, [9, 15]] = [0.5, 0.25]
    return s, t, labels, vlr


def _groups(outputs):
    """[reg per level..., cls per level...] -> LDDistill's pair groups."""
    half = len(outputs) // 2
    return {'reg': outputs[:half], 'cls': outputs[half:]}


def test_ld_loss_equals_the_reference_formula():
    s, t, labels, vlr = _case()
    w = {'ld': 0.25, 'vlr_ld': 0.5, 'kd': 2.0, 'vlr_kd': 0.7}
    loss = LDDistill(num_classes=3, temperature=3., ld_weight=0.25,
                     vlr_ld_weight=0.5, kd_weight=2.0, vlr_kd_weight=0.7)
    student = [paddle.to_tensor(x, 'float32', stop_gradient=False)
               for x in s]
    teacher = [paddle.to_tensor(x, 'float32', stop_gradient=False)
               for x in t]
    out = loss(_groups(student), _groups(teacher), {
        'labels': paddle.to_tensor(labels),
        'vlr_regions': paddle.to_tensor(vlr)})
    # the reference in float64, on the float32 values the loss saw
    ref = _reference([x.astype('float32').astype('float64') for x in s],
                     [x.astype('float32').astype('float64') for x in t],
                     labels, vlr.astype('float64'), 3, 3., w)
    assert list(out) == ['ld', 'vlr_ld', 'kd', 'vlr_kd']
    for k, v in ref.items():
        assert float(out[k]) == pytest.approx(v, rel=2e-6), k
    paddle.add_n(list(out.values())).backward()
    assert all(x.grad is None for x in teacher)  # the teacher is detached
    assert all(float(x.grad.abs().sum()) > 0 for x in student)


def test_ld_defaults_identical_outputs_and_zero_weights():
    s, t, labels, vlr = _case(1)
    loss = LDDistill(num_classes=3)  # T = 10, ld 0.25, vlr_ld 0.25
    assert loss.temperature == 10. and loss.weights == {
        'ld': 0.25, 'vlr_ld': 0.25, 'kd': 0., 'vlr_kd': 0.}
    batch = {'labels': paddle.to_tensor(labels),
             'vlr_regions': paddle.to_tensor(vlr)}
    out = loss(_groups([paddle.to_tensor(x, 'float32') for x in s]),
               _groups([paddle.to_tensor(x, 'float32') for x in t]), batch)
    ref = _reference([x.astype('float32').astype('float64') for x in s],
                     [x.astype('float32').astype('float64') for x in t],
                     labels, vlr.astype('float64'), 3, 10.,
                     {'ld': 0.25, 'vlr_ld': 0.25, 'kd': 0., 'vlr_kd': 0.})
    assert list(out) == ['ld', 'vlr_ld']  # weight 0: not computed, not logged
    for k in out:
        assert float(out[k]) == pytest.approx(ref[k], rel=2e-6), k
    same = _groups([paddle.to_tensor(x, 'float32') for x in s])
    out = LDDistill(num_classes=3, kd_weight=1., vlr_kd_weight=1.)(
        same, same, batch)
    assert all(float(v) == 0 for v in out.values())
    # main LD alone needs no VLR in the batch (plain Gt2GFLTarget works)
    out = LDDistill(num_classes=3, vlr_ld_weight=0.)(
        same, same, {'labels': batch['labels']})
    assert list(out) == ['ld']
    with pytest.raises(ConfigError, match='Gt2LDTarget'):
        loss(same, same, {'labels': batch['labels']})
    with pytest.raises(ValueError, match='nothing to distill'):
        LDDistill(num_classes=3, ld_weight=0, vlr_ld_weight=0)
    with pytest.raises(ValueError, match='temperature'):
        LDDistill(num_classes=3, temperature=0)
    with pytest.raises(ValueError, match='locations per image'):
        loss(same, same, {'labels': paddle.to_tensor(labels[:, :12]),
                          'vlr_regions': paddle.to_tensor(vlr)})


# -- the valuable localization region ----------------------------------------

def test_vlr_band_on_hand_made_boxes():
    # One level, one 10x10 box at the origin. The 3 anchors nearest to its
    # centre (a0, a3, a1: IoU 1, 2/3, 1/3) give the ATSS threshold
    # mean + std (Bessel) = 2/3 + 1/3 = 1; the band is 0.25 <= DIoU < 1.
    gt = [[0, 0, 10, 10]]
    anchors = [[0, 0, 10, 10],    # a0: DIoU 1, not below the threshold
               [5, 0, 15, 10],    # a1: IoU 1/3, DIoU 1/3 - 25/325 = 0.256
               [10, 0, 20, 10],   # a2: no overlap
               [2, 0, 12, 10],    # a3: IoU 2/3, DIoU 2/3 - 4/244 = 0.650
               [6, 0, 16, 10]]    # a4: IoU 0.25 but DIoU 0.149: outside
    got = vlr_region(anchors, [5], gt, topk=3)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.float32([0, 1 / 3, 0, 2 / 3, 0]))

    # Two levels (topk per level: level 0 has 2 anchors, level 1 one) and
    # two boxes. Box g (b0, b1, b2 at IoU 1, 0, 0.5): threshold 0.5 + 0.5 =
    # 1, b2 in its band (DIoU 0.45). Box h: IoU 0, 0.8, 0.4, threshold
    # 0.4 + 0.4 = 0.8; b1 in its band (DIoU 0.795 < 0.8 although its IoU
    # reaches the threshold), b2 too (DIoU 0.368): b2 keeps its larger IoU.
    anchors = [[0, 0, 10, 10], [10, 0, 20, 10], [0, 0, 20, 10]]
    got = vlr_region(anchors, [2, 1], [[0, 0, 10, 10], [10, 0, 18, 10]],
                     topk=2)
    np.testing.assert_array_equal(got, np.float32([0, 0.8, 0.5]))
    assert not vlr_region(anchors, [2, 1], np.zeros((0, 4))).any()


def _sample(boxes, classes, size=64):
    return {'image': np.zeros((3, size, size), 'float32'),
            'gt_bbox': np.array(boxes, 'float32'),
            'gt_class': np.array(classes, 'int32').reshape(-1, 1),
            'is_crowd': np.zeros((len(boxes), 1), 'int32')}


def test_gt2ldtarget_is_gt2gfltarget_plus_the_vlr():
    from ppdet.data.transform.batch_operators import Gt2GFLTarget
    args = dict(num_classes=3, downsample_ratios=[8, 16, 32],
                grid_cell_scale=4)
    samples = [_sample([[4, 6, 30, 28], [35, 30, 60, 62]], [0, 2]),
               _sample([[10, 10, 50, 40]], [1])]
    ours = Gt2LDTarget(**args)(copy.deepcopy(samples))
    theirs = Gt2GFLTarget(**args)(copy.deepcopy(samples))
    for a, b, sample in zip(ours, theirs, samples):
        assert set(a) == set(b) | {'vlr_regions'}
        for k in b:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        expected = vlr_region(b['grid_cells'], [64, 16, 4],
                              sample['gt_bbox'])
        np.testing.assert_array_equal(a['vlr_regions'], expected)
        assert a['vlr_regions'].shape == (84,) and a['vlr_regions'].any()


def test_quality_focal_loss_runs_on_paddle3_with_its_formula():
    # ppdet 2.6's QFL multiplies float32 by a bool mask, which Paddle 3
    # refuses; detdistill.compat replaces it with the same formula.
    from ppdet.modeling.losses.gfocal_loss import QualityFocalLoss
    pred = np.array([[0.5, -1.0, 2.0], [-0.3, 0.8, 0.1]], 'float32')
    labels, score = np.array([1, 3]), np.array([0.7, 0.0], 'float32')
    got = QualityFocalLoss(beta=2.0)(
        paddle.to_tensor(pred), (paddle.to_tensor(labels),
                                 paddle.to_tensor(score)), avg_factor=1.0)
    p = 1 / (1 + np.exp(-pred.astype('float64')))

    def bce(x, q):
        return -(q * np.log(1 / (1 + np.exp(-x))) +
                 (1 - q) * np.log(1 - 1 / (1 + np.exp(-x))))
    want = sum(bce(pred[i, c], 0) * p[i, c] ** 2 for i in range(2)
               for c in range(3) if (i, c) != (0, 1))
    want += bce(pred[0, 1], 0.7) * abs(0.7 - p[0, 1]) ** 2
    assert float(got) == pytest.approx(want, rel=1e-6)


# -- pairing and configuration ----------------------------------------------

def _gfl_distiller(demo_voc, tmp_path, teacher_path, *opts):
    cfg = load_config(GFL_STUDENT, tiny_opts(demo_voc, str(tmp_path)) +
                      ['distill_loss=ld'] + list(opts))
    teacher = build_model(load_config(GFL_TEACHER))
    teacher.set_state_dict(paddle.load(teacher_path))
    return cfg, build_distiller(cfg, build_model(cfg), teacher)


def test_converged_gfl_configs_distill_at_128px(demo_voc, tmp_path,
                                               gfl_teacher):
    """configs/converged/gfl_*: the converged profile's 128 px input with
    GFL's targets (not converged.yml's YOLOv3 ones), the same head outputs
    as the demo GFL models (a demo teacher's weights load), and an LD step
    whose terms are the reference formula's on its outputs and whose
    detection losses are the student's own."""
    student = os.path.join(ROOT, 'configs/converged/gfl_r18_converged.yml')
    teacher_cfg = load_config(os.path.join(
        ROOT, 'configs/converged/gfl_r34_converged.yml'))
    cfg = load_config(student, tiny_opts(demo_voc, str(tmp_path)) +
                      ['distill_loss=ld'])
    teacher = build_model(teacher_cfg)
    missing, unexpected = teacher.set_state_dict(paddle.load(gfl_teacher))
    assert not missing and not unexpected
    d = build_distiller(cfg, build_model(cfg), teacher)
    batch = next(iter(Trainer(cfg, model=d, detector=d.student).loader))
    assert list(batch['image'].shape) == [4, 3, 128, 128]
    # GFL's targets, not the YOLOv3 ones (target0..2) of converged.yml
    assert 'vlr_regions' in batch and not any(k.startswith('target')
                                              for k in batch)
    d.train()
    out = d(batch)
    # the seed's defaults: main and VLR LD at T = 10, weights 0.25, entry
    # weight 1; KD weights 0, so not computed
    assert [k for k in out if k.startswith('distill_')] == [
        'distill_loss', 'distill_ld', 'distill_vlr_ld']
    labels = batch['labels'].numpy()
    vlr = batch['vlr_regions'].numpy().astype('float64')
    classes = cfg['num_classes']
    assert ((labels >= 0) & (labels < classes)).any() and (vlr > 0).any()
    pairs = d.losses[0].pairs
    s_out = d.student_outputs(batch)
    t_out = d.teacher.outputs(batch)  # the step's own (cached) values
    ref = _reference(
        [s_out[n].numpy().astype('float64')
         for n, _ in pairs['reg'] + pairs['cls']],
        [t_out[n].numpy().astype('float64')
         for _, n in pairs['reg'] + pairs['cls']],
        labels, vlr, classes, 10.,
        {'ld': 0.25, 'vlr_ld': 0.25, 'kd': 0., 'vlr_kd': 0.})
    # At T = 10 both distributions are near uniform: KL terms near 1e-6,
    # whose float32 differences of logarithms leave relative errors up to
    # about 1e-4 in the sums (6e-5 measured)
    for k in ('ld', 'vlr_ld'):
        assert float(out['distill_' + k]) == pytest.approx(ref[k],
                                                           rel=5e-4), k
    alone = d.student(batch)
    for k in ('loss_qfl', 'loss_dfl', 'loss_bbox'):
        assert float(out[k]) == pytest.approx(float(alone[k]), rel=1e-6), k
    assert float(out['det_loss']) == pytest.approx(float(alone['loss']),
                                                   rel=1e-6)


def test_pairs_settings_and_pairing_errors(demo_voc, tmp_path, gfl_teacher):
    cfg, d = _gfl_distiller(demo_voc, tmp_path, gfl_teacher,
                            'temperature=4', 'LDDistill.kd_weight=0.5')
    assert d.losses[0].pairs == {
        'reg': [(n, n) for n in ['head.p3_feat', 'head.p4_feat',
                                 'head.p5_feat']],
        'cls': [(n, n) for n in ['head.gfl_head_cls#0', 'head.gfl_head_cls#1',
                                 'head.gfl_head_cls#2']]}
    assert d.losses[0].module.temperature == 4. and d.losses[0].weight == 1.
    assert d.losses[0].module.weights['kd'] == 0.5
    # a plain name of the classifier shared by the levels is refused
    cfg, d = _gfl_distiller(
        demo_voc, tmp_path, gfl_teacher,
        'distill_pairs={reg: [[head.p3_feat, head.p3_feat]], '
        'cls: [[head.gfl_head_cls, head.gfl_head_cls]]}')
    trainer = Trainer(cfg, model=d, detector=d.student)
    d.train()
    with pytest.raises(PairingError, match=r'head\.gfl_head_cls \(3 calls\)'):
        d(next(iter(trainer.loader)))
    # a YOLOv3 student has no GFL head to pair
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path)) +
                      ['distill_loss=ld'])
    with pytest.raises(PairingError, match='GFL head'):
        build_distiller(cfg, build_model(cfg), build_model(cfg))
    cfg = load_config(GFL_STUDENT, tiny_opts(demo_voc, str(tmp_path)) + [
        'distill_loss=ld', 'unlabeled_list=x.txt'])
    with pytest.raises(ConfigError, match='unlabeled'):
        build_distiller(cfg, build_model(cfg), build_model(cfg))
    # pairs in the wrong shape for a loss of two groups
    cfg = load_config(GFL_STUDENT, tiny_opts(demo_voc, str(tmp_path)) + [
        'Distill.losses.ld.pairs=[[head.p3_feat, head.p3_feat]]'])
    with pytest.raises(ConfigError, match='Distill.losses.ld.pairs must map '
                       'reg and cls to lists'):
        build_distiller(cfg, build_model(cfg), build_model(cfg))


# -- distill.py end to end ----------------------------------------------------

def _ld_args(teacher, demo_voc, save, epochs):
    opts = tiny_opts(demo_voc, save, epochs, log_iter=1,
                     **{'TrainReader.batch_size': 8})
    return ['-c', GFL_STUDENT, '-t', GFL_TEACHER, '--teacher_pretrained',
            teacher, '--eval', '-o', 'distill_loss=ld',
            'LDDistill.kd_weight=0.5', 'LDDistill.vlr_kd_weight=0.5'] + opts


def _history(run):
    with open(os.path.join(run, CFG_NAME, 'history.jsonl')) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def full_run(demo_voc, gfl_teacher, tmp_path_factory):
    """distill.py -o distill_loss=ld, 2 epochs of 4 steps, each step
    logged, eval each epoch."""
    save = str(tmp_path_factory.mktemp('ld_full'))
    trainer = script('slim/distillation/distill.py').main(
        _ld_args(gfl_teacher, demo_voc, save, 2))
    return save, trainer


def test_ld_distillation_end_to_end(full_run, gfl_teacher):
    """The teacher stays frozen; each step logs the four LD components, their
    sum and the teacher's own loss. Recomputed here on the steps' batches
    (the data order is a function of seed and epoch): the teacher's loss at
    every step, and every logged value of step 5 from checkpoint 0 (the
    student after step 4)."""
    save, trainer = full_run
    distiller = trainer.model
    teacher = distiller.teacher.model
    assert not teacher.training
    saved = paddle.load(gfl_teacher)
    for k, v in teacher.state_dict().items():  # bit for bit, GN/BN included
        assert np.array_equal(v.numpy(), saved[k].numpy()), k
    assert distiller.teacher.cache is not None  # deterministic: cached
    hist = _history(save)
    train = [r for r in hist if r['kind'] == 'train']
    assert [r['step'] for r in train] == list(range(1, 9))
    parts = ['distill_ld', 'distill_vlr_ld', 'distill_kd', 'distill_vlr_kd']
    for r in train:
        assert r['distill_loss'] == pytest.approx(
            sum(r[k] for k in parts), rel=1e-5)
        assert r['loss'] == pytest.approx(r['det_loss'] + r['distill_loss'],
                                          rel=1e-5)
    batches = list(trainer._epoch_batches(0)) + \
        list(trainer._epoch_batches(1))
    assert len(batches) == 8
    module = distiller.losses[0].module
    for r, batch in zip(train, batches):
        want = module.teacher_loss(teacher, distiller.teacher.outputs(batch),
                                   batch)
        assert r['teacher_loss'] == pytest.approx(float(want), rel=1e-5), \
            r['step']
    final = {k: v.numpy() for k, v in distiller.student.state_dict().items()}
    distiller.student.set_state_dict(load_checkpoint(os.path.join(
        save, CFG_NAME, '0'))[0])
    distiller.train()
    try:
        with paddle.no_grad():
            out = distiller(batches[4])
    finally:
        distiller.student.set_state_dict(
            {k: paddle.to_tensor(v) for k, v in final.items()})
    assert all(float(out[k]) != 0 for k in parts)  # every component is on
    for k in ['loss', 'det_loss', 'distill_loss', 'loss_qfl', 'loss_bbox',
              'loss_dfl'] + parts:
        assert train[4][k] == pytest.approx(float(out[k]), rel=1e-5), k
    evals = [r for r in hist if r['kind'] == 'eval']
    assert [r['step'] for r in evals] == [4, 8]
    weights = paddle.load(os.path.join(save, CFG_NAME,
                                       'model_final.pdparams'))
    assert set(weights) == set(build_model(load_config(
        GFL_STUDENT)).state_dict())


def test_ld_resume_continues_the_same_trajectory(full_run, demo_voc,
                                                 gfl_teacher, tmp_path):
    distill = script('slim/distillation/distill.py')
    full, _ = full_run
    part = str(tmp_path / 'part')
    distill.main(_ld_args(gfl_teacher, demo_voc, part, 1))
    distill.main(['-r', os.path.join(part, CFG_NAME, '0')] +
                 _ld_args(gfl_teacher, demo_voc, part, 2))
    a = [r for r in _history(full) if r['kind'] == 'train']
    b = [r for r in _history(part) if r['kind'] == 'train']
    assert [r['step'] for r in a] == [r['step'] for r in b] == \
        list(range(1, 9))
    for ra, rb in zip(a, b):
        for k in ('loss', 'det_loss', 'distill_loss', 'distill_ld',
                  'distill_vlr_ld', 'distill_kd', 'distill_vlr_kd'):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5), (ra['step'], k)
    wa = paddle.load(os.path.join(full, CFG_NAME, 'model_final.pdparams'))
    wb = paddle.load(os.path.join(part, CFG_NAME, 'model_final.pdparams'))
    for k in wa:
        np.testing.assert_allclose(wa[k].numpy(), wb[k].numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=k)


def test_ld_student_exports_like_a_yolov3_student(full_run, demo_voc,
                                                  tmp_path):
    """The distilled GFL student through tools/export_model.py: with NMS
    (Paddle Inference), checked on the demo test images by the export itself
    and run here at batch 1 and 4 against tools/infer.py's dygraph path;
    with --exclude_nms --onnx, whose own check compares both backends' boxes
    and scores with dygraph's. (With NMS, ONNX Runtime's detections of this
    8-step model are refused by the check's saturated-model guard: its
    scores all sit near the 0.01 score threshold.)"""
    export_model = script('tools/export_model.py')
    from detdistill.deploy.predictor import ExportedDetector
    from detdistill.deploy.verify import BOX_RTOL, SCORE_ATOL
    from detdistill.infer import predict
    from detdistill.weights import load_weights
    save, _ = full_run
    weights = os.path.join(save, CFG_NAME, 'model_final')
    with open(os.path.join(demo_voc, 'test.txt')) as f:
        images = [os.path.join(demo_voc, line.split()[0]) for line in f]
    opts = ['weights=' + weights, 'TestDataset.anno_path=' +
            os.path.join(demo_voc, 'label_list.txt')]

    def export(*flags):
        return export_model.main(
            ['-c', GFL_STUDENT, '--output_dir', str(tmp_path / flags[0]),
             '--check_dir', os.path.dirname(images[0])] + list(flags[1:]) +
            ['-o'] + opts)
    raw_dir = export('raw', '--exclude_nms', '--onnx')
    assert sorted(os.listdir(raw_dir)) == [
        'infer_cfg.yml', 'model.json', 'model.onnx', 'model.pdiparams']
    assert ExportedDetector(raw_dir, 'onnxruntime').backend.input_names == [
        'image', 'scale_factor']
    model_dir = export('nms')
    model = ExportedDetector(model_dir, 'paddle')
    assert model.infer_cfg['arch'] == 'GFL'
    assert model.backend.input_names == ['image', 'scale_factor']
    cfg = load_config(GFL_STUDENT, opts)
    detector = build_model(cfg)
    load_weights(detector, weights)
    ref = dict(predict(cfg, detector, images))
    assert sum(len(d) for d in ref.values()) > 0
    for batch_size in (1, 4):
        got = dict(model.predict(images, batch_size))
        for path in images:
            r, g = ref[path], got[path]
            assert len(g) == len(r), path
            np.testing.assert_array_equal(g[:, 0], r[:, 0])
            np.testing.assert_allclose(g[:, 1], r[:, 1], rtol=0,
                                       atol=SCORE_ATOL)
            np.testing.assert_allclose(g[:, 2:], r[:, 2:], rtol=0,
                                       atol=BOX_RTOL * 160)
