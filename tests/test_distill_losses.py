"""Distillation losses against independent float64 NumPy references, ppdet's
own DistillYOLOv3Loss, and the properties the distiller relies on
(objectness gating, no gradient into the teacher, clear shape errors,
registration with ppdet's workspace)."""
import numpy as np
import paddle
import pytest
import yaml
from ppdet.core import workspace
from ppdet.slim.distill_loss import DistillYOLOv3Loss

from detdistill.distill.losses import FineGrainedDistill, KLDistill, L2Distill

N, A, C, H, W = 2, 3, 4, 3, 3
NO = 5 + C


def _pair(seed=0, dtype='float64'):
    rng = np.random.RandomState(seed)
    s = rng.randn(N, A * NO, H, W) * 2
    t = rng.randn(N, A * NO, H, W) * 2
    return s.astype(dtype), t.astype(dtype)


def _np(*xs, num_classes=C):
    """[N, A*(5+C), H, W] -> float64 [N, A, 5+C, H, W]."""
    no = 5 + num_classes
    return [x.astype(np.float64).reshape(x.shape[0], x.shape[1] // no, no,
                                         *x.shape[2:]) for x in xs]


# ---- NumPy references (float64), written from the formulas ----

def _sig(z):
    return 1. / (1. + np.exp(-z))


def _bce(z, p):
    return np.maximum(z, 0) - z * p + np.log1p(np.exp(-np.abs(z)))


def _log_sig(z):
    return -np.logaddexp(0., -z)


def _log_softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def ref_l2(s, t):
    return {'l2': np.mean((s.astype(np.float64) - t) ** 2)}


def ref_reg(s, t):
    box = (_bce(s[:, :, 0], _sig(t[:, :, 0])) + _bce(s[:, :, 1], _sig(t[:, :, 1]))
           + np.abs(s[:, :, 2] - t[:, :, 2]) + np.abs(s[:, :, 3] - t[:, :, 3]))
    return np.mean(box * _sig(t[:, :, 4]))


def ref_fine(s, t, obj_target='hard', num_classes=C):
    s, t = _np(s, t, num_classes=num_classes)
    gate = _sig(t[:, :, 4])
    cls = np.mean(_bce(s[:, :, 5:], _sig(t[:, :, 5:])) * gate[:, :, None])
    target = (t[:, :, 4] > 0).astype(np.float64) if obj_target == 'hard' \
        else gate
    return {'reg': ref_reg(s, t), 'cls': cls,
            'obj': np.mean(_bce(s[:, :, 4], target))}


def _bern_kl(so, to):
    pt = _sig(to)
    return pt * (_log_sig(to) - _log_sig(so)) + \
        (1 - pt) * (_log_sig(-to) - _log_sig(-so))


def ref_kl(s, t, T, cls_form='softmax', num_classes=C):
    s, t = _np(s, t, num_classes=num_classes)
    gate = _sig(t[:, :, 4])
    if cls_form == 'softmax':
        lt = _log_softmax(t[:, :, 5:] / T, 2)
        ls = _log_softmax(s[:, :, 5:] / T, 2)
        kl_cls = (np.exp(lt) * (lt - ls)).sum(2)
    else:  # independent per-class Bernoullis, summed over classes
        kl_cls = _bern_kl(s[:, :, 5:] / T, t[:, :, 5:] / T).sum(2)
    kl_obj = _bern_kl(s[:, :, 4] / T, t[:, :, 4] / T)
    return {'reg': ref_reg(s, t), 'cls': T * T * np.mean(kl_cls * gate),
            'obj': T * T * np.mean(kl_obj)}


def _run(loss, s, t):
    out = loss(paddle.to_tensor(s), paddle.to_tensor(t))
    return {k: float(v) for k, v in out.items()}


def _close(got, want, rtol=1e-10):
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=1e-12,
                                   err_msg=k)


# ---- values ----

def test_l2_matches_numpy():
    s, t = _pair()
    _close(_run(L2Distill(num_classes=C), s, t), ref_l2(s, t))


def test_l2_zero_for_identical_inputs():
    s, _ = _pair()
    assert _run(L2Distill(num_classes=C), s, s.copy())['l2'] == 0.


@pytest.mark.parametrize('obj_target', ['hard', 'soft'])
def test_fine_grained_matches_numpy(obj_target):
    s, t = _pair(1)
    _close(_run(FineGrainedDistill(num_classes=C, obj_target=obj_target),
                s, t), ref_fine(s, t, obj_target))


@pytest.mark.parametrize('cls_form', ['softmax', 'bernoulli'])
@pytest.mark.parametrize('T', [1.0, 3.0])
def test_kl_matches_numpy(T, cls_form):
    s, t = _pair(2)
    _close(_run(KLDistill(num_classes=C, temperature=T, cls_form=cls_form),
                s, t), ref_kl(s, t, T, cls_form))


def test_kl_zero_for_identical_inputs_and_finite_when_saturated():
    s, _ = _pair(3)
    out = _run(KLDistill(num_classes=C, temperature=2.), s, s.copy())
    assert abs(out['cls']) < 1e-12 and abs(out['obj']) < 1e-12
    # Saturated logits (|z| = 100) in float32: log_softmax / log_sigmoid keep
    # every term finite where naive log(sigmoid) would give log(0).
    big = np.where(s > 0, 100., -100.).astype('float32')
    out = _run(KLDistill(num_classes=C), big, -big)
    assert all(np.isfinite(v) for v in out.values())
    assert out['obj'] > 10


def test_fine_grained_matches_ppdet_distill_yolov3_loss():
    """Cross-check against ppdet 2.6 DistillYOLOv3Loss, fed the slices that
    ppdet's YOLOv3Loss.distill_pairs would hold ([N, A, H, W, 1] and
    [N, A, H, W, C]); float32 since ppdet casts its objectness mask so."""
    s, t = _pair(4, 'float32')
    ours = _run(FineGrainedDistill(num_classes=C), s, t)

    def pairs(p):
        p = paddle.to_tensor(p).reshape((N, A, -1, H, W)).transpose(
            (0, 1, 3, 4, 2))
        return [p[..., i:i + 1] for i in range(5)] + [p[..., 5:]]

    sp, tp = pairs(s), pairs(t)
    ref = DistillYOLOv3Loss()
    want = {'reg': float(ref.obj_weighted_reg(*sp[:4], *tp[:5])),
            'cls': float(ref.obj_weighted_cls(sp[5], tp[5], tp[4])),
            'obj': float(ref.obj_loss(sp[4], tp[4]))}
    _close(ours, want, rtol=1e-5)


# ---- objectness gating ----

def _gating_case(loss):
    """Teacher objectness -50 (σ ≈ 2e-22) in cell (0, 0, 0, 0) and +8 in
    cell (0, 0, 1, 1). Perturbing the student's box and class logits in the
    first must leave the loss unchanged; in the second it must move it."""
    s, t = _pair(5)
    t = t.reshape(N, A, NO, H, W)
    t[0, 0, 4, 0, 0], t[0, 0, 4, 1, 1] = -50., 8.
    t = t.reshape(N, A * NO, H, W)

    def total(s_):
        return sum(_run(loss, s_, t).values())

    def perturbed(i, j):
        s_ = s.reshape(N, A, NO, H, W).copy()
        s_[0, 0, [0, 1, 2, 3, 5, 6, 7, 8], i, j] += 3.
        return s_.reshape(N, A * NO, H, W)

    base = total(s)
    return abs(total(perturbed(0, 0)) - base), \
        abs(total(perturbed(1, 1)) - base)


@pytest.mark.parametrize('loss', [FineGrainedDistill(num_classes=C),
                                  KLDistill(num_classes=C, temperature=2.)])
def test_objectness_gates_box_and_class_terms(loss):
    off, on = _gating_case(loss)
    assert off < 1e-6
    assert on > 1e-3


# ---- gradients ----

@pytest.mark.parametrize('loss', [L2Distill(num_classes=C),
                                  FineGrainedDistill(num_classes=C),
                                  KLDistill(num_classes=C, temperature=2.)])
def test_gradient_reaches_student_only(loss):
    s, t = _pair(6, 'float32')
    s = paddle.to_tensor(s, stop_gradient=False)
    t = paddle.to_tensor(t, stop_gradient=False)  # detached by the loss
    paddle.add_n(list(loss(s, t).values())).backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0
    assert t.grad is None or float(t.grad.abs().sum()) == 0


# ---- errors ----

@pytest.mark.parametrize('cls', [L2Distill, FineGrainedDistill, KLDistill])
def test_shape_mismatch_raises_with_both_shapes(cls):
    s = paddle.zeros([N, A * NO, H, W])
    t = paddle.zeros([N, A * NO, H + 1, W])
    with pytest.raises(ValueError) as e:
        cls(num_classes=C)(s, t)
    assert str([N, A * NO, H, W]) in str(e.value)
    assert str([N, A * NO, H + 1, W]) in str(e.value)


@pytest.mark.parametrize('cls', [L2Distill, FineGrainedDistill, KLDistill])
def test_wrong_channel_count_raises(cls):
    x = paddle.zeros([N, A * NO + 1, H, W])
    with pytest.raises(ValueError) as e:
        cls(num_classes=C)(x, x)
    msg = str(e.value)
    assert str([N, A * NO + 1, H, W]) in msg and '5 + num_classes' in msg


def test_bad_options_raise():
    with pytest.raises(ValueError):
        FineGrainedDistill(num_classes=C, obj_target='bogus')
    with pytest.raises(ValueError):
        KLDistill(num_classes=C, temperature=0)


# ---- registration ----

def test_registered_and_created_from_yaml_with_shared_num_classes(tmp_path):
    g = workspace.global_config
    for name in ('L2Distill', 'FineGrainedDistill', 'KLDistill'):
        assert name in g
    path = tmp_path / 'tiny.yml'
    path.write_text('num_classes: 7\n'
                    'KLDistill:\n  temperature: 2.5\n'
                    'FineGrainedDistill:\n  obj_target: soft\n')
    saved = dict(g)
    try:
        # Work on copies of our schemas so the test leaves the workspace as
        # it found it.
        for name in ('L2Distill', 'FineGrainedDistill', 'KLDistill'):
            g[name] = g[name].copy()
        workspace.merge_config(yaml.safe_load(path.read_text()))
        l2 = workspace.create('L2Distill')
        fine = workspace.create('FineGrainedDistill')
        kl = workspace.create('KLDistill')
    finally:
        g.clear()
        g.update(saved)
    assert isinstance(l2, L2Distill) and l2.num_classes == 7
    assert fine.num_classes == 7 and fine.obj_target == 'soft'
    assert kl.num_classes == 7 and kl.temperature == 2.5
    x = paddle.zeros([1, 3 * 12, 2, 2])
    assert list(kl(x, x)) == ['reg', 'cls', 'obj']
