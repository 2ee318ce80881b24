"""Feature distillation (detdistill/distill/feature_losses.py, connectors.py):
each loss against a float64 NumPy reference of its paper's formula and,
where it differs, ppdet's class; connectors (channels, strides); pairs by
stride across head families; shape errors before step 1; several losses
with their weights; checkpoints (connectors in the .pdopt, never in the
.pdparams), exact resume, the exported student; GFL -> YOLOv3 and YOLOv3 ->
GFL end to end."""
import json
import os

import numpy as np
import paddle
import pytest
from ppdet.slim.distill_loss import (CWDFeatureLoss, FGDFeatureLoss,
                                     MGDFeatureLoss)

from conftest import (ROOT, STUDENT, TEACHER, assert_resume_is_exact,
                      run_tool, script, tiny_opts)
from detdistill.config import build_model, load_config
from detdistill.distill.connectors import Connector
from detdistill.distill.distiller import build_distiller
from detdistill.distill.feature_losses import (CWDDistill, FGDDistill,
                                               MGDDistill, MimicDistill,
                                               PKDDistill, box_masks,
                                               gt_boxes)
from detdistill.distill.pairing import pairs_by_stride
from detdistill.distill.settings import distill_settings
from detdistill.engine import Trainer
from detdistill.errors import ConfigError, PairingError

GFL_TEACHER = os.path.join(ROOT, 'configs/demo/gfl_r34_demo.yml')
GFL_STUDENT = os.path.join(ROOT, 'configs/demo/gfl_r18_demo.yml')
RUN = 'yolov3_mobilenet_v1_demo'


def _maps(shape, seed, scale=2.):
    rng = np.random.RandomState(seed)
    return (rng.randn(*shape) * scale).astype('float32')


def _t(x):
    return paddle.to_tensor(x)


# ---- NumPy references (float64), written from the papers' formulas ----

def _softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def ref_cwd(s, t, T):
    """Shu et al. 2021, eq. 4, averaged over the batch: T^2 / C sum_c
    sum_i phi(t)_ci log(phi(t)_ci / phi(s)_ci), phi a softmax over H x W."""
    n, c, h, w = s.shape
    log_ps = _log_softmax(s.reshape(n, c, h * w).astype('float64') / T, 2)
    log_pt = _log_softmax(t.reshape(n, c, h * w).astype('float64') / T, 2)
    # log(pt / ps) from the log-softmaxes: a location whose probability
    # underflows to 0 adds 0, not 0 x log 0
    return T * T * np.sum(np.exp(log_pt) * (log_pt - log_ps)) / (n * c)


def ref_pkd(s, t):
    """Cao et al. 2022: 1 / (2 N C H W) sum (s^ - t^)^2, each channel
    standardised over (N, H, W) (the authors' sample std + 1e-6)."""
    def norm(x):
        x = x.astype('float64')
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        std = x.std(axis=(0, 2, 3), ddof=1, keepdims=True)
        return (x - mean) / (std + 1e-6)
    return np.mean((norm(s) - norm(t)) ** 2) / 2


def conv2d(x, weight, bias, pad):
    """Cross-correlation, stride 1, zero padding `pad`."""
    n, c, h, w = x.shape
    k = weight.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, weight.shape[0], h, w))
    for i in range(k):
        for j in range(k):
            out += np.einsum('nchw,oc->nohw', xp[:, :, i:i + h, j:j + w],
                             weight[:, :, i, j])
    return out + (0 if bias is None else bias[None, :, None, None])


def _p(param):
    return param.numpy().astype('float64')


def ref_connector(conn, x):
    """A Connector's output on `x` [N, C, H, W] in float64 (its 1x1 conv,
    BatchNorm in training mode: batch statistics, ReLU), at the same size."""
    x = x.astype('float64')
    if conn.conv is None:
        return x
    x = conv2d(x, _p(conn.conv.weight), None if conn.conv.bias is None
               else _p(conn.conv.bias), 0)
    if conn.bn is not None:
        mean, var = x.mean(axis=(0, 2, 3), keepdims=True), \
            x.var(axis=(0, 2, 3), keepdims=True)
        x = (x - mean) / np.sqrt(var + conn.bn._epsilon) * _p(
            conn.bn.weight)[None, :, None, None] + _p(conn.bn.bias)[
                None, :, None, None]
    return np.maximum(x, 0) if conn.relu else x


def ref_mgd(s, t, keep, generation):
    """Yang et al. 2022 (MGD), eq. 4-5: 1/N sum (t - G(s . M))^2, G = 3x3
    conv, ReLU, 3x3 conv."""
    conv1, conv2 = generation[0], generation[2]
    x = s.astype('float64') * keep
    x = np.maximum(conv2d(x, _p(conv1.weight), _p(conv1.bias), 1), 0)
    x = conv2d(x, _p(conv2.weight), _p(conv2.bias), 1)
    return np.sum((t - x) ** 2) / s.shape[0]


def ref_fgd_masks(boxes, image_hw, map_hw):
    """FGD's M and S (eq. 1-3): a cell is in box r if it overlaps it;
    1 / (cells of r) there (the smallest box's where boxes overlap); the
    background 1 / (background cells)."""
    h, w = map_hw
    fg = np.zeros((len(boxes), h, w))
    for n, image_boxes in enumerate(boxes):
        for x1, y1, x2, y2 in image_boxes:
            x1, x2 = x1 * w / image_hw[1], x2 * w / image_hw[1]
            y1, y2 = y1 * h / image_hw[0], y2 * h / image_hw[0]
            cells = [(i, j) for i in range(h) for j in range(w)
                     if i < y2 and i + 1 > y1 and j < x2 and j + 1 > x1]
            for i, j in cells:
                fg[n, i, j] = max(fg[n, i, j], 1. / len(cells))
    bg = (fg == 0).astype('float64')
    count = bg.sum(axis=(1, 2), keepdims=True)
    return fg, np.divide(bg, count, out=np.zeros_like(bg), where=count > 0)


def ref_fgd(s, t, boxes, image_hw, block, T, weights):
    """Yang et al. 2022 (FGD), eq. 4-10, summed over the batch / N."""
    s, t = s.astype('float64'), t.astype('float64')
    n, c, h, w = t.shape
    fg, bg = ref_fgd_masks(boxes, image_hw, (h, w))

    def attention(x):
        a = np.abs(x)
        spatial = h * w * _softmax(a.mean(axis=1).reshape(n, h * w) / T, 1)
        return spatial.reshape(n, h, w), c * _softmax(a.mean(axis=(2, 3)) /
                                                      T, 1)
    ts, tc = attention(t)
    ss, sc = attention(s)
    weighted = (t - s) ** 2 * ts[:, None] * tc[:, :, None, None]
    fg_loss = np.sum(weighted * fg[:, None]) / n
    bg_loss = np.sum(weighted * bg[:, None]) / n
    att_loss = (np.abs(sc - tc).sum() + np.abs(ss - ts).sum()) / n

    def gc(x, mask, seq):
        k = conv2d(x, _p(mask.weight), _p(mask.bias), 0).reshape(n, h * w)
        context = np.einsum('ncp,np->nc', x.reshape(n, c, h * w),
                            _softmax(k, 1))
        y = context @ _p(seq[0].weight)[:, :, 0, 0].T + _p(seq[0].bias)
        y = (y - y.mean(1, keepdims=True)) / np.sqrt(
            y.var(1, keepdims=True) + seq[1]._epsilon)
        y = np.maximum(y * _p(seq[1].weight).ravel() +
                       _p(seq[1].bias).ravel(), 0)
        y = y @ _p(seq[3].weight)[:, :, 0, 0].T + _p(seq[3].bias)
        return x + y[:, :, None, None]
    glob = np.sum((gc(t, block.conv_mask_t, block.tea_conv_block) -
                   gc(s, block.conv_mask_s, block.stu_conv_block)) ** 2) / n
    return {'fg': weights[0] * fg_loss, 'bg': weights[1] * bg_loss,
            'attention': weights[2] * att_loss, 'global': weights[3] * glob}


# ---- the losses against them ----

SHAPE = (2, 6, 5, 7)


def test_mimic_is_the_mean_squared_error():
    s, t = _maps(SHAPE, 0), _maps(SHAPE, 1)
    out = MimicDistill()(_t(s), _t(t))
    assert list(out) == ['mimic']
    assert float(out['mimic']) == pytest.approx(
        np.mean((s.astype('float64') - t) ** 2), rel=1e-6)
    # ppdet's default (normalize) standardises first: twice PKD
    assert float(MimicDistill(normalize=True)(_t(s), _t(t))['mimic']) == \
        pytest.approx(2 * ref_pkd(s, t), rel=1e-5)


@pytest.mark.parametrize('T', [1., 2.5])
def test_cwd_is_the_papers_and_differs_from_ppdet_by_t_squared(T):
    s, t = _maps(SHAPE, 2), _maps(SHAPE, 3)
    ours = float(CWDDistill(temperature=T)(_t(s), _t(t))['cwd'])
    assert ours == pytest.approx(ref_cwd(s, t, T), rel=1e-5)
    # ppdet: no T^2, and +1e-5 inside the logs, which biases it (by 0.6 %
    # here at T = 1, on 35 cells)
    ppdet = float(CWDFeatureLoss(6, 6, tau=T)(_t(s), _t(t)))
    n, c, h, w = SHAPE
    ps = _softmax(s.reshape(n, c, h * w).astype('float64') / T, 2)
    pt = _softmax(t.reshape(n, c, h * w).astype('float64') / T, 2)
    assert ppdet == pytest.approx(np.sum(pt * (np.log(1e-5 + pt) - np.log(
        1e-5 + ps))) / (n * c), rel=1e-5)
    assert ppdet * T * T == pytest.approx(ours, rel=1e-2)
    if T == 1.:  # peaked softmaxes: small probabilities, a visible bias
        assert ppdet != pytest.approx(ours, rel=1e-3)
    # saturated maps stay finite (log-softmax, not log(softmax))
    big = float(CWDDistill(temperature=0.01)(_t(s * 100), _t(t))['cwd'])
    assert np.isfinite(big) and big > 0


def test_pkd_is_the_papers_and_one_minus_pearson():
    s, t = _maps(SHAPE, 4), _maps(SHAPE, 5) + 0.5 * _maps(SHAPE, 4)
    out = float(PKDDistill()(_t(s), _t(t))['pkd'])
    assert out == pytest.approx(ref_pkd(s, t), rel=1e-5)
    # = (n-1)/n x mean over channels of 1 - Pearson r (n = N H W)
    n = SHAPE[0] * SHAPE[2] * SHAPE[3]
    r = [np.corrcoef(s[:, c].ravel(), t[:, c].ravel())[0, 1]
         for c in range(SHAPE[1])]
    assert out == pytest.approx((n - 1) / n * np.mean(1 - np.array(r)),
                                rel=1e-4)
    # magnitude does not matter, the pattern does
    assert float(PKDDistill()(_t(3 * s + 1), _t(t))['pkd']) == \
        pytest.approx(out, rel=1e-4)


def test_mgd_masks_then_generates():
    s, t = _maps(SHAPE, 6), _maps(SHAPE, 7)
    mgd = MGDDistill(mask_ratio=0.65)
    with pytest.raises(ValueError, match='build'):
        mgd(_t(s), _t(t))
    paddle.seed(11)
    mgd.build([6])
    paddle.seed(3)
    out = float(mgd(_t(s), _t(t))['mgd'])
    paddle.seed(3)  # the mask: the first draw of the forward
    r = paddle.rand([SHAPE[0], 1, SHAPE[2], SHAPE[3]]).numpy()
    keep = (r >= 0.65).astype('float64')
    assert 0 < keep.mean() < 1
    generation = mgd.blocks[0].generation
    assert out == pytest.approx(ref_mgd(s, t, keep, generation), rel=1e-5)
    # the mask matters; without it this is ppdet's MGDFeatureLoss (which
    # never masks)
    unmasked = ref_mgd(s, t, 1., generation)
    assert out != pytest.approx(unmasked, rel=1e-3)
    ppdet = MGDFeatureLoss(6, 6, normalize=False)
    ppdet.set_state_dict(mgd.blocks[0].state_dict())
    assert float(ppdet(_t(s), _t(t))) == pytest.approx(unmasked, rel=1e-5)
    with pytest.raises(ValueError, match='mask_ratio'):
        MGDDistill(mask_ratio=1.)


# Three boxes on a 40 x 48 px image (x1, y1, x2, y2), one per image in the
# first, two overlapping in the second; the maps are 5 x 6 (stride 8).
BOXES = [np.array([[4., 10., 21., 30.]]),
         np.array([[0., 0., 47., 39.], [30., 12., 38., 19.]])]
IMAGE = (40, 48)


def _yolo_inputs(boxes):
    """A YOLOv3 reader's batch: gt_bbox normalised (cx, cy, w, h), padded
    with zero rows, and Gt2YoloTarget's targets."""
    h, w = IMAGE
    rows = np.zeros((len(boxes), 3, 4), 'float32')
    for i, b in enumerate(boxes):
        rows[i, :len(b)] = np.stack([(b[:, 0] + b[:, 2]) / 2 / w,
                                     (b[:, 1] + b[:, 3]) / 2 / h,
                                     (b[:, 2] - b[:, 0]) / w,
                                     (b[:, 3] - b[:, 1]) / h], 1)
    return {'image': paddle.zeros([len(boxes), 3, h, w]),
            'gt_bbox': _t(rows), 'target0': paddle.zeros([1])}


def _gfl_inputs(boxes, num_classes=6):
    """A GFL reader's batch: no gt_bbox; each box at two positive
    locations of 10, the others negative (label num_classes)."""
    labels = np.full((len(boxes), 10), num_classes, 'int64')
    targets = np.zeros((len(boxes), 10, 4), 'float32')
    for i, b in enumerate(boxes):
        for k, box in enumerate(b):
            labels[i, [2 * k, 2 * k + 5]] = k
            targets[i, [2 * k, 2 * k + 5]] = box
    return {'image': paddle.zeros([len(boxes), 3, *IMAGE]),
            'labels': _t(labels), 'bbox_targets': _t(targets)}


def test_fgd_boxes_and_masks_from_either_reader():
    for inputs in (_yolo_inputs(BOXES), _gfl_inputs(BOXES)):
        got = gt_boxes(inputs, 6)
        assert len(got) == 2
        for g, want in zip(got, BOXES):
            np.testing.assert_allclose(
                g[np.lexsort(g.T[::-1])], want[np.lexsort(want.T[::-1])],
                rtol=0, atol=1e-4)
    fg, bg = box_masks(BOXES, IMAGE, (5, 6))
    rfg, rbg = ref_fgd_masks(BOXES, IMAGE, (5, 6))
    np.testing.assert_allclose(fg, rfg, rtol=1e-6)
    np.testing.assert_allclose(bg, rbg, rtol=1e-6)
    # box 0 covers columns 0-2, rows 1-3: 9 cells of 1/9, summing to 1
    assert np.count_nonzero(fg[0]) == 9 and fg[0].sum() == pytest.approx(1)
    # the whole-image box leaves no background: bg is 0, not a division
    assert bg[1].sum() == 0 and bg[0].sum() == pytest.approx(1)
    with pytest.raises(ConfigError, match='ground-truth boxes'):
        gt_boxes({'image': paddle.zeros([1, 3, 8, 8])}, 6)


@pytest.mark.parametrize('make_inputs', [_yolo_inputs, _gfl_inputs])
def test_fgd_is_the_papers(make_inputs):
    shape = (2, 8, 5, 6)
    s, t = _maps(shape, 8), _maps(shape, 9)
    paddle.seed(5)
    fgd = FGDDistill(num_classes=6, temperature=0.5, fg_weight=2.,
                     bg_weight=3., attention_weight=5., global_weight=7.)
    fgd.build([8])
    out = fgd(_t(s), _t(t), make_inputs(BOXES))
    assert list(out) == ['fg', 'bg', 'attention', 'global']
    ref = ref_fgd(s, t, BOXES, IMAGE, fgd.blocks[0], 0.5, (2., 3., 5., 7.))
    for k in out:
        assert float(out[k]) == pytest.approx(ref[k], rel=1e-4), k
    # a component with weight 0 is not computed
    fgd.weights['global'] = 0.
    assert list(fgd(_t(s), _t(t), make_inputs(BOXES))) == [
        'fg', 'bg', 'attention']


def test_fgd_global_block_learns_unlike_ppdets():
    """ppdet zero-initialises both convs of each GcBlock: the block's
    output is 0 whatever its input, so neither weight ever gets a gradient.
    Ours re-initialises the first, as the authors do: the last conv (zero
    at first) learns from step 1, and the first once the last is not 0."""
    s, t = _maps((2, 8, 5, 6), 10), _maps((2, 8, 5, 6), 11)
    paddle.seed(0)
    ours = FGDDistill(num_classes=6)
    ours.build([8])
    ppdet = FGDFeatureLoss(8, 8)

    def learns(block, loss):
        block.clear_gradients()
        loss().backward()
        return [g is not None and float(g.abs().sum()) > 0 for g in (
            block.stu_conv_block[i].weight.grad for i in (0, 3))]
    assert learns(ppdet, lambda: ppdet.relation_loss(_t(s), _t(t))) == [
        False, False]
    assert learns(ours.blocks[0], lambda: ours(
        _t(s), _t(t), _yolo_inputs(BOXES))['global']) == [False, True]
    last = ours.blocks[0].stu_conv_block[3].weight
    last.set_value(last - 0.1 * last.grad)
    assert learns(ours.blocks[0], lambda: ours(
        _t(s), _t(t), _yolo_inputs(BOXES))['global']) == [True, True]


# ---- connectors ----

def test_connector_maps_channels_then_resizes():
    x = _maps((2, 4, 6, 8), 12)
    paddle.seed(0)
    c = Connector(4, 3)
    y = c(_t(x), (3, 4)).numpy()
    conv = conv2d(x.astype('float64'), _p(c.conv.weight), _p(c.conv.bias), 0)
    # bilinear, half-pixel centres: halving the size averages 2 x 2 cells
    want = conv.reshape(2, 3, 3, 2, 4, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    assert c.describe([6, 8], [3, 4]) == '1x1 conv 4->3, resize bilinear'
    # nearest: every other cell
    n = Connector(4, 4, interpolation='nearest')
    np.testing.assert_array_equal(n(_t(x), (3, 4)).numpy(),
                                  x[:, :, ::2, ::2])
    # same channels and size: the identity, without parameters
    same = Connector(4, 4, bn=True, relu=True)
    assert not same.parameters() and same.describe([6, 8], [6, 8]) == 'none'
    np.testing.assert_array_equal(same(_t(x), (6, 8)).numpy(), x)
    bn = Connector(4, 3, bn=True, relu=True)
    assert bn.conv.bias is None and bn.describe([6, 8], [6, 8]) == \
        '1x1 conv 4->3 + BN + ReLU'
    assert float(bn(_t(x), (6, 8)).min()) >= 0


# ---- the distiller on the demo models ----

def _distiller(data, tmp_path, student, teacher, weights, **distill):
    cfg = load_config(student, tiny_opts(data, str(tmp_path),
                                         distill=distill))
    t = build_model(load_config(teacher))
    if weights:
        t.set_state_dict(paddle.load(weights))
    d = build_distiller(cfg, build_model(cfg), t)
    trainer = Trainer(cfg, model=d, detector=d.student, extra=d.extra)
    return d, trainer, next(iter(trainer.loader))


def test_pairs_by_stride_across_head_families():
    yolo_s, yolo_t = (build_model(load_config(c)) for c in (STUDENT,
                                                            TEACHER))
    gfl_s, gfl_t = (build_model(load_config(c)) for c in (GFL_STUDENT,
                                                          GFL_TEACHER))
    tips = ['neck.yolo_block.{}.tip'.format(i) for i in (2, 1, 0)]
    fpn = ['neck.fpn_res{}_sum'.format(i) for i in (3, 4, 5)]
    assert pairs_by_stride(yolo_s, gfl_t) == list(zip(tips, fpn))
    assert pairs_by_stride(gfl_s, yolo_t) == list(zip(fpn, tips))
    assert pairs_by_stride(yolo_s, yolo_t) == list(zip(tips, tips))
    yolo_s.neck = paddle.nn.Identity()
    with pytest.raises(PairingError, match=r'the student has a neck '
                       r'\(Identity\) whose levels are not known'):
        pairs_by_stride(yolo_s, gfl_t)


def test_connector_settings(demo_voc, tmp_path):
    s = distill_settings(load_config(STUDENT, ['Distill.losses.cwd.weight=5',
                                               'Distill.losses.cwd.connector'
                                               '.bn=true']))
    (e,) = s.losses
    assert (e.type, e.weight, e.connector, e.connector_declared) == (
        'CWDDistill', 5., {'bn': True, 'relu': False,
                           'interpolation': 'bilinear'}, True)
    for alias, cls in (('mimic', 'MimicDistill'), ('pkd', 'PKDDistill'),
                       ('mgd', 'MGDDistill'), ('fgd', 'FGDDistill')):
        (e,) = distill_settings(load_config(STUDENT, [
            'Distill.losses.{}.ratio=1'.format(alias)])).losses
        assert (e.type, e.weight, e.connector_declared) == (cls, 'auto',
                                                            False)
    for opt, message in (
            ('cwd.connector.bn=maybe', 'Distill.losses.cwd.connector.bn '
             "must be true or false, got 'maybe'"),
            ('cwd.connector.interpolation=cubic', 'Distill.losses.cwd.'
             'connector.interpolation must be one of bilinear, nearest'),
            ('cwd.connector.relus=true', r"unknown key 'Distill.losses.cwd."
             r"connector.relus' \(did you mean 'Distill.losses.cwd.connector"
             r".relu'\?\)"),
            ('cwd.connector=1x1', 'Distill.losses.cwd.connector must be a '
             'mapping')):
        with pytest.raises(ConfigError, match=message):
            distill_settings(load_config(STUDENT, ['Distill.losses.' + opt]))
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path), distill={
        'losses.l2.connector.bn': True}))
    with pytest.raises(ConfigError, match=r'Distill.losses.l2.connector: '
                       r'L2Distill compares head outputs element by element '
                       r'and takes no connector'):
        build_distiller(cfg, build_model(cfg), build_model(load_config(
            TEACHER)))
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path), distill={
        'losses.fgd.weight': 1., 'unlabeled.list': 'u.txt'}))
    with pytest.raises(ConfigError, match='FGDDistill distills regions '
                       'chosen from the ground truth'):
        build_distiller(cfg, build_model(cfg), build_model(load_config(
            TEACHER)))


def test_pairs_that_cannot_be_aligned_fail_before_step_one(demo_voc,
                                                           tmp_path):
    """Named with both layers and shapes, when the distiller is built: a
    layer returning a tuple, and a layer the forward never reaches."""
    with pytest.raises(PairingError) as e:
        _distiller(demo_voc, tmp_path, STUDENT, GFL_TEACHER, None, **{
            'losses.cwd.pairs': '[[neck.yolo_block.0, neck.fpn_res5_sum]]'})
    assert str(e.value) == (
        'feature pair neck.yolo_block.0 -> neck.fpn_res5_sum: a connector '
        'maps one [N, C, H, W] map to another, but on a 256 px probe image '
        'the student layer neck.yolo_block.0 gives tuple of 2 tensors '
        '[[1, 64, 8, 8], [1, 128, 8, 8]] and the teacher layer '
        'neck.fpn_res5_sum gives [1, 64, 8, 8]. Pair layers that output one '
        'feature map each (e.g. neck.yolo_block.0.tip, not neck.yolo_block.0,'
        ' which returns (route, tip))')
    with pytest.raises(PairingError, match='paired layers produced no output '
                       'in the forward: yolo_head.loss'):
        _distiller(demo_voc, tmp_path, STUDENT, TEACHER, None, **{
            'losses.cwd.pairs': '[[yolo_head.loss, neck.yolo_block.0.tip]]'})


def test_several_losses_each_with_its_weight(demo_voc, tmp_path,
                                            teacher_weights):
    """L2 on the head outputs (weight 3) and CWD on the neck (weight 5,
    connectors with BN): each entry's components logged under its name,
    each its weight x the loss computed here from the recorded maps."""
    d, _, batch = _distiller(demo_voc, tmp_path, STUDENT, TEACHER,
                             teacher_weights, **{
                                 'losses.l2.weight': 3.,
                                 'losses.cwd.weight': 5.,
                                 'losses.cwd.temperature': 2.,
                                 'losses.cwd.connector.bn': True})
    assert [(loss.name, loss.weight) for loss in d.losses] == [
        ('l2', 3.), ('cwd', 5.)]
    d.train()
    out = d(batch)
    assert [k for k in out if k.startswith('distill_')] == [
        'distill_loss', 'distill_l2_l2', 'distill_cwd_cwd']
    s_out = d.student_outputs(batch)
    t_out = d.teacher.outputs(batch)
    l2 = sum(np.mean((s_out[n].numpy().astype('float64') -
                      t_out[n].numpy()) ** 2) for n, _ in d.losses[0].pairs)
    cwd = 0.
    for (s, t), conn in zip(d.losses[1].pairs, d.losses[1].connectors):
        x = conv2d(s_out[s].numpy().astype('float64'),
                   _p(conn.conv.weight), None, 0)
        mean, var = x.mean(axis=(0, 2, 3), keepdims=True), \
            x.var(axis=(0, 2, 3), keepdims=True)  # BN in training mode
        x = (x - mean) / np.sqrt(var + conn.bn._epsilon) * _p(
            conn.bn.weight)[None, :, None, None] + _p(conn.bn.bias)[
                None, :, None, None]
        cwd += ref_cwd(x, t_out[t].numpy(), 2.)
    assert float(out['distill_l2_l2']) == pytest.approx(3 * l2, rel=1e-5)
    assert float(out['distill_cwd_cwd']) == pytest.approx(5 * cwd,
                                                          rel=1e-4)
    assert float(out['distill_loss']) == pytest.approx(
        3 * l2 + 5 * cwd, rel=1e-4)
    assert float(out['loss']) == pytest.approx(
        float(out['det_loss']) + float(out['distill_loss']), rel=1e-6)


# ---- training, checkpoints, resume, export ----

def _train(*args):
    return script('tools/train.py').main(list(args))


def _distill(*args):
    return script('slim/distillation/distill.py').main(list(args))


@pytest.fixture(scope='module')
def runs(demo_voc, gfl_teacher, tmp_path_factory):
    """The YOLOv3 student trained alone for one epoch (8 steps), and
    distilled for two (every step logged) from the GFL teacher
    (cross-family) with CWD (connectors with BatchNorm) and MGD (generation
    blocks) on the FPN levels."""
    out = str(tmp_path_factory.mktemp('runs'))
    _train('-c', STUDENT, '-o', *tiny_opts(demo_voc, out + '/plain', 1))
    trainer = _distill(
        '-c', STUDENT, '-t', GFL_TEACHER, '--teacher_pretrained',
        gfl_teacher, '-o', *tiny_opts(demo_voc, out + '/feat', 2, distill={
            'losses.cwd.weight': 5., 'losses.cwd.connector.bn': True,
            'losses.mgd.weight': 'auto'}, log_iter=1))
    return {'plain': os.path.join(out, 'plain', RUN),
            'feat': os.path.join(out, 'feat', RUN), 'trainer': trainer}


def test_gfl_teacher_distils_a_yolov3_student(runs, request):
    d = runs['trainer'].model
    # the run's final state, back after this test (other tests read it)
    final = [(layer, {k: v.numpy().copy() for k, v in
                      layer.state_dict().items()})
             for layer in (d.student, d.extra)]
    request.addfinalizer(lambda: [layer.set_state_dict(
        {k: paddle.to_tensor(v) for k, v in state.items()})
        for layer, state in final])
    assert type(d.teacher.model).__name__ == 'GFL'
    assert [p for loss in d.losses for p in loss.pairs] == 2 * [
        ('neck.yolo_block.2.tip', 'neck.fpn_res3_sum'),
        ('neck.yolo_block.1.tip', 'neck.fpn_res4_sum'),
        ('neck.yolo_block.0.tip', 'neck.fpn_res5_sum')]
    with open(os.path.join(runs['feat'], 'history.jsonl')) as f:
        logged = [json.loads(line) for line in f]
    steps = [r for r in logged if r['kind'] == 'train']
    assert [r['step'] for r in steps] == list(range(1, 17))
    for r in steps:
        # the auto weight: MGD's term is the detection loss
        assert r['distill_mgd_mgd'] == pytest.approx(r['det_loss'],
                                                     rel=1e-4)
    # Step 9, the first of epoch 1, recomputed from checkpoint 0 (the
    # student in its .pdparams, connectors and generation blocks in its
    # .pdopt) on the epoch's first batch, with NumPy references: CWD
    # through the BN connectors, and MGD through its connectors and
    # generation blocks with the masks the step drew (the first draws after
    # the epoch's seed: the batch draws none from Paddle's generator).
    trainer = runs['trainer']
    ckpt = os.path.join(runs['feat'], '0')
    d.student.set_state_dict(paddle.load(ckpt + '.pdparams'))
    d.extra.set_state_dict(paddle.load(ckpt + '.pdopt')['extra'])
    d.train()
    batch = next(iter(trainer._epoch_batches(1)))
    cwd, mgd = d.losses
    assert (cwd.name, mgd.name) == ('cwd', 'mgd')
    with paddle.no_grad():
        s_out = d.student_outputs(batch)
        t_out = d.teacher.outputs(batch)
        keeps = [(paddle.rand([t_out[t].shape[0], 1, *t_out[t].shape[2:]])
                  >= mgd.module.mask_ratio).numpy().astype('float64')
                 for _, t in mgd.pairs]
    for keep in keeps:
        assert 0 < keep.mean() < 1
    again = next(iter(trainer._epoch_batches(1)))  # the seed, the masks
    np.testing.assert_array_equal(again['image'].numpy(),
                                  batch['image'].numpy())
    with paddle.no_grad():
        out = d(again)
    det = float(out['det_loss'])
    want_cwd = sum(ref_cwd(ref_connector(c, s_out[s].numpy()),
                           t_out[t].numpy(), 1.)
                   for (s, t), c in zip(cwd.pairs, cwd.connectors))
    raw_mgd = sum(ref_mgd(ref_connector(c, s_out[s].numpy()),
                          t_out[t].numpy().astype('float64'), keep,
                          block.generation)
                  for (s, t), c, keep, block in zip(
                      mgd.pairs, mgd.connectors, keeps, mgd.module.blocks))
    assert float(out['distill_cwd_cwd']) == pytest.approx(5 * want_cwd,
                                                          rel=1e-4)
    assert float(out['distill_mgd_weight']) == pytest.approx(det / raw_mgd,
                                                             rel=1e-4)
    assert float(out['distill_loss']) == pytest.approx(5 * want_cwd + det,
                                                       rel=1e-4)
    step9 = steps[8]
    assert step9['step'] == 9
    for k in ('loss', 'det_loss', 'distill_loss', 'distill_cwd_cwd',
              'distill_mgd_mgd', 'distill_mgd_weight', 'loss_xy', 'loss_wh',
              'loss_obj', 'loss_cls'):
        assert step9[k] == pytest.approx(float(out[k]), rel=1e-5), k
    # the teacher check evaluated the GFL teacher with its own config
    with open(os.path.join(runs['feat'], 'teacher_check.json')) as f:
        assert 'teacher_mAP' in json.load(f)


def test_connectors_live_in_the_pdopt_not_the_pdparams(runs):
    plain, feat = (paddle.load(os.path.join(runs[k], 'model_final.pdparams'))
                   for k in ('plain', 'feat'))
    assert list(feat) == list(plain)
    assert all(feat[k].shape == plain[k].shape for k in plain)
    d = runs['trainer'].model
    training = paddle.load(os.path.join(runs['feat'], 'model_final.pdopt'))
    extra = d.extra.state_dict()
    assert sorted(training['extra']) == sorted(extra)
    assert {k.split('.')[0] + '.' + k.split('.')[1] for k in extra} == {
        'connectors.cwd', 'connectors.mgd', 'losses.mgd'}
    assert 'connectors.cwd.0.bn._mean' in extra  # BN statistics too
    for k, v in extra.items():
        np.testing.assert_array_equal(training['extra'][k].numpy(),
                                      v.numpy())
    # their optimizer state under structured names, trained from step 1
    moments = {k for k in training['optimizer'] if k.startswith('extra:')}
    params = {n for n, p in d.extra.named_parameters() if p.trainable}
    assert 'connectors.cwd.0.bn.weight' in params
    assert {k[len('extra:'):].rsplit('_moment1_0', 1)[0] for k in moments
            if k.endswith('_moment1_0')} == params
    assert not any(k.startswith(('connectors', 'losses')) for k in plain)
    plain_opt = paddle.load(os.path.join(runs['plain'], 'model_final.pdopt'))
    assert 'extra' not in plain_opt
    assert set(training['optimizer']) - moments - {
        k for k in training['optimizer'] if k.startswith('extra:')} == \
        set(plain_opt['optimizer'])


def test_exported_student_is_a_plain_students_export(runs, demo_voc,
                                                     tmp_path):
    """tools/export_model.py on the distilled model_final and on the
    student trained alone, each in a fresh process: the same program
    (model.json byte for byte, the same parameter names and shapes), and
    the exported parameters are exactly the distilled student's."""
    exported = {}
    for k in ('plain', 'feat'):
        p = run_tool(['tools/export_model.py', '-c', STUDENT,
                      '--output_dir', str(tmp_path / k), '-o',
                      'weights=' + os.path.join(runs[k], 'model_final'),
                      'TestDataset.anno_path=' + os.path.join(
                          demo_voc, 'label_list.txt')], timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        exported[k] = str(tmp_path / k / RUN)
    files = {k: {n: open(os.path.join(v, n), 'rb').read() for n in (
        'model.json', 'infer_cfg.yml')} for k, v in exported.items()}
    assert files['feat'] == files['plain']
    params = {k: paddle.jit.load(os.path.join(v, 'model')).state_dict()
              for k, v in exported.items()}
    assert {k: list(v.shape) for k, v in params['feat'].items()} == \
        {k: list(v.shape) for k, v in params['plain'].items()}
    student = paddle.load(os.path.join(runs['feat'],
                                       'model_final.pdparams'))
    assert len(params['feat']) == len(student)

    def key(a):
        return (a.shape, float(np.abs(a).sum()), a.tobytes())
    want = sorted((v.numpy() for v in student.values()), key=key)
    got = sorted((v.numpy() for v in params['feat'].values()), key=key)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)


def test_resume_with_connectors_is_exact(demo_voc, tmp_path, gfl_teacher):
    """CWD through BatchNorm connectors and MGD's random masks: the
    resumed run ends with the uninterrupted run's student, connectors and
    generation blocks, bit for bit."""
    assert_resume_is_exact(STUDENT, GFL_TEACHER, gfl_teacher, demo_voc,
                           tmp_path, 2, distill={
                               'losses.cwd.weight': 5.,
                               'losses.cwd.connector.bn': True,
                               'losses.mgd.weight': 'auto',
                               'check.enabled': False})
    full, part = (paddle.load(str(tmp_path / d / RUN / 'model_final.pdopt'))
                  for d in ('full', 'part'))
    assert sorted(full['extra']) == sorted(part['extra'])
    for k in full['extra']:
        np.testing.assert_array_equal(full['extra'][k].numpy(),
                                      part['extra'][k].numpy(), err_msg=k)
    for k in full['optimizer']:
        if k.startswith('extra:'):
            np.testing.assert_array_equal(
                np.asarray(full['optimizer'][k]),
                np.asarray(part['optimizer'][k]), err_msg=k)


def test_checkpoints_without_connectors_still_resume(runs, demo_voc,
                                                     tmp_path, gfl_teacher,
                                                     log_lines):
    """A .pdopt from before connectors existed: the run resumes, its
    connectors start afresh (a warning says so). A plain run resuming a
    checkpoint with connectors ignores them (a warning too)."""
    import shutil
    src = os.path.join(runs['feat'], '0')
    old = str(tmp_path / 'old' / '0')
    os.makedirs(os.path.dirname(old))
    shutil.copy(src + '.pdparams', old + '.pdparams')
    training = paddle.load(src + '.pdopt')
    del training['extra']
    training['optimizer'] = {k: v for k, v in training['optimizer'].items()
                             if not k.startswith('extra:')}
    paddle.save(training, old + '.pdopt')
    _distill('-r', old, '-c', STUDENT, '-t', GFL_TEACHER,
             '--teacher_pretrained', gfl_teacher, '-o',
             *tiny_opts(demo_voc, str(tmp_path / 'a'), 2, distill={
                 'losses.cwd.weight': 5., 'losses.cwd.connector.bn': True,
                 'losses.mgd.weight': 'auto', 'check.enabled': False}))
    assert [x for x in log_lines if 'holds no weights for the layers '
            'trained beside the detector' in x]

    def resumed(run):
        """The resumed run's logged steps and its final training state."""
        with open(os.path.join(run, 'history.jsonl')) as f:
            steps = [json.loads(line)['step'] for line in f
                     if '"train"' in line]
        return steps, paddle.load(os.path.join(run, 'model_final.pdopt'))
    steps, training = resumed(str(tmp_path / 'a' / RUN))
    assert steps == [10, 12, 14, 16] and training['state']['step'] == 16
    # fresh connectors and generation blocks, trained from step 9 on
    assert sorted(training['extra']) == sorted(
        runs['trainer'].model.extra.state_dict())
    _train('-r', src, '-c', STUDENT, '-o',
           *tiny_opts(demo_voc, str(tmp_path / 'b'), 2))
    assert [x for x in log_lines if 'weights of layers trained beside the '
            'detector (e.g. distillation connectors) that this run does not '
            'have: not used' in x]
    steps, training = resumed(str(tmp_path / 'b' / RUN))
    assert steps == [10, 12, 14, 16] and training['state']['step'] == 16
    assert 'extra' not in training and not any(
        k.startswith('extra:') for k in training['optimizer'])


def test_yolov3_teacher_distils_a_gfl_student(demo_voc, tmp_path,
                                              teacher_weights):
    """The other direction: the YOLOv3 teacher's neck levels into the GFL
    student's FPN, with FGD (boxes from the GFL targets) and PKD. Step 9,
    the first of epoch 1, recomputed from checkpoint 0 with the NumPy
    references, equals what the run logged."""
    trainer = _distill('-c', GFL_STUDENT, '-t', TEACHER,
                       '--teacher_pretrained', teacher_weights, '-o',
                       *tiny_opts(demo_voc, str(tmp_path), 2, distill={
                           'losses.fgd.weight': 1.,
                           'losses.pkd.weight': 2.,
                           'check.enabled': False}, log_iter=1))
    d = trainer.model
    fgd, pkd = d.losses
    assert (fgd.name, pkd.name) == ('fgd', 'pkd')
    assert fgd.pairs == pkd.pairs == [
        ('neck.fpn_res3_sum', 'neck.yolo_block.2.tip'),
        ('neck.fpn_res4_sum', 'neck.yolo_block.1.tip'),
        ('neck.fpn_res5_sum', 'neck.yolo_block.0.tip')]
    assert [c.teacher_channels for c in fgd.connectors] == [64, 128, 256]
    run = os.path.join(str(tmp_path), 'gfl_r18_demo')
    with open(os.path.join(run, 'history.jsonl')) as f:
        steps = [json.loads(line) for line in f if '"train"' in line]
    assert [r['step'] for r in steps] == list(range(1, 17))
    weights = paddle.load(os.path.join(run, 'model_final.pdparams'))
    assert list(weights) == list(build_model(load_config(
        GFL_STUDENT)).state_dict())
    ckpt = os.path.join(run, '0')
    d.student.set_state_dict(paddle.load(ckpt + '.pdparams'))
    d.extra.set_state_dict(paddle.load(ckpt + '.pdopt')['extra'])
    d.train()
    batch = next(iter(trainer._epoch_batches(1)))
    with paddle.no_grad():
        s_out = d.student_outputs(batch)
        t_out = d.teacher.outputs(batch)
        out = d(batch)
    boxes = gt_boxes(batch, 6)
    assert sum(len(b) for b in boxes) > 0
    image_hw = batch['image'].shape[2:]
    want = {'fg': 0., 'bg': 0., 'attention': 0., 'global': 0., 'pkd': 0.}
    for i, (s, t) in enumerate(fgd.pairs):
        t_map = t_out[t].numpy().astype('float64')
        ref = ref_fgd(ref_connector(fgd.connectors[i], s_out[s].numpy()),
                      t_map, boxes, image_hw, fgd.module.blocks[i], 0.5,
                      (1e-3, 5e-4, 1e-3, 5e-6))
        for k, v in ref.items():
            want[k] += v
        want['pkd'] += 2 * ref_pkd(ref_connector(pkd.connectors[i],
                                                 s_out[s].numpy()), t_map)
    for k in ('fg', 'bg', 'attention', 'global'):
        assert float(out['distill_fgd_' + k]) == pytest.approx(
            want[k], rel=1e-4), k
    assert float(out['distill_pkd_pkd']) == pytest.approx(want['pkd'],
                                                          rel=1e-4)
    assert float(out['distill_loss']) == pytest.approx(sum(want.values()),
                                                       rel=1e-4)
    step9 = steps[8]
    keys = ['loss', 'det_loss', 'distill_loss', 'distill_pkd_pkd'] + [
        'distill_fgd_' + k for k in ('fg', 'bg', 'attention', 'global')] + [
        k for k in out if k.startswith('loss_')]
    assert 'loss_qfl' in keys
    for k in keys:
        assert step9[k] == pytest.approx(float(out[k]), rel=1e-5), k


def test_teachers_must_detect_the_same_classes(demo_voc, tmp_path,
                                               gfl_teacher, log_lines):
    other = tmp_path / 'gfl_3_classes.yml'
    other.write_text("_BASE_: ['{}']\nnum_classes: 3\n".format(GFL_TEACHER))
    with pytest.raises(SystemExit):
        _distill('-c', STUDENT, '-t', str(other), '--teacher_pretrained',
                 gfl_teacher, '-o', *tiny_opts(demo_voc, str(tmp_path)))
    assert 'ConfigError: the teacher config {} has num_classes 3 and the ' \
        'student config {} has 6: they must detect the same classes (-o ' \
        'num_classes=N sets both)'.format(other, STUDENT) in log_lines


def test_compiled_teacher_with_neck_pairs(demo_voc, tmp_path,
                                          teacher_weights, gfl_teacher,
                                          log_lines):
    """A YOLOv3 teacher compiles its neck outputs (within the tolerance);
    a GFL teacher stays eager, said in one line, and distils."""
    from detdistill.distill.compiled_teacher import (TOLERANCE,
                                                     max_relative_error)
    d, _, batch = _distiller(demo_voc, tmp_path, STUDENT, TEACHER,
                             teacher_weights, **{
                                 'losses.cwd.weight': 5.,
                                 'teacher.compile': True,
                                 'teacher.cache': False})
    out = d.teacher.forward(batch)
    assert d.teacher.compiled.active
    assert sorted(out) == ['neck.yolo_block.{}.tip'.format(i)
                           for i in range(3)]
    assert max_relative_error(out, d.teacher.eager(batch)) <= TOLERANCE
    d, _, batch = _distiller(demo_voc, tmp_path, STUDENT, GFL_TEACHER,
                             gfl_teacher, **{'losses.cwd.weight': 5.,
                                             'teacher.compile': True})
    assert d.teacher.compiled.failed == \
        'the teacher has no yolo_head (not a ppdet YOLOv3)'
    assert 'Teacher forward stays eager: the teacher has no yolo_head ' \
        '(not a ppdet YOLOv3)' in log_lines
    d.train()
    with paddle.no_grad():
        out = d(batch)
        s_out, t_out = d.student_outputs(batch), d.teacher.outputs(batch)
    (cwd,) = d.losses
    assert float(out['distill_cwd']) == pytest.approx(5 * sum(
        ref_cwd(ref_connector(c, s_out[s].numpy()), t_out[t].numpy(), 1.)
        for (s, t), c in zip(cwd.pairs, cwd.connectors)), rel=1e-4)
