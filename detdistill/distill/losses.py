"""Distillation losses for YOLOv3 head outputs: one pair (one head level) in, a
dict of named, unweighted scalar components out. The distiller sums them over
pairs and multiplies by `distill_loss_weight`.

Each output is the raw head conv output [N, A*(5+C), H, W]; per anchor the
channels are (x, y, w, h, obj, cls_0..cls_{C-1}). Teacher tensors are detached
here whatever the caller did: gradients reach only the student.

Compared with ppdet 2.6 `DistillYOLOv3Loss` (the reference for
FineGrainedDistill): the per-term formulas and the element counts of every
mean are the same. ppdet slices `YOLOv3Loss.distill_pairs` as [N, A, H, W, 1]
(x, y, w, h, obj) and [N, A, H, W, C] (cls), we slice [N, A, H, W] and
[N, A, C, H, W]; both means run over N*A*H*W resp. N*A*H*W*C elements.
Differences: ppdet sums the levels and applies its weight inside the loss
(here: the caller); ppdet takes (teacher, student) models, we take
(student, teacher) tensors; ppdet casts the objectness mask to float32, we keep
the input dtype; ppdet relies on the teacher's no_grad, we also detach. ppdet
strips IoU-aware channels before building its pairs; these losses expect a
plain YOLOv3 head (no `iou_aware`).
"""
import collections

import paddle
import paddle.nn.functional as F
from paddle import nn
from ppdet.core.workspace import register, serializable

__all__ = ['L2Distill', 'FineGrainedDistill', 'KLDistill']

_LAYOUT = 'A*(5+C) channels, per anchor (x, y, w, h, obj, cls_0..cls_C-1)'


def _check_pair(s, t, num_classes):
    """Same shape, 4-D, channels a multiple of 5 + num_classes; else a
    ValueError naming both shapes (a wrong num_classes or pairing would
    otherwise slice garbage silently)."""
    ss, ts = list(s.shape), list(t.shape)
    no = 5 + int(num_classes)
    if ss != ts:
        raise ValueError('student output {} and teacher output {} differ in '
                         'shape; expected equal shapes [N, A*(5+C), H, W] '
                         'with {}'.format(ss, ts, _LAYOUT))
    if len(ss) != 4 or ss[1] % no:
        raise ValueError('student output {} / teacher output {}: expected '
                         '[N, A*(5+C), H, W] with {}; channels must be a '
                         'multiple of 5 + num_classes = {} (check num_classes '
                         'and the paired layers)'.format(ss, ts, _LAYOUT, no))


def _split(x, num_classes):
    """[N, A*(5+C), H, W] -> [x, y, w, h, obj] each [N, A, H, W], and cls
    [N, A, C, H, W]. One reshape plus slices: no transpose copy, it runs on
    every level every step."""
    n, c, h, w = x.shape
    no = 5 + num_classes
    x = x.reshape([n, c // no, no, h, w])
    return [x[:, :, i] for i in range(5)] + [x[:, :, 5:]]


def _bce(logit, target):
    """Sigmoid cross-entropy with a (soft) target in [0, 1]."""
    return F.binary_cross_entropy_with_logits(logit, target, reduction='none')


def _bernoulli_kl(s_logit, t_logit):
    """KL(Bern(σ(t)) ‖ Bern(σ(s))) elementwise, from log-sigmoids."""
    pt = F.sigmoid(t_logit)
    return pt * (F.log_sigmoid(t_logit) - F.log_sigmoid(s_logit)) + \
        (1 - pt) * (F.log_sigmoid(-t_logit) - F.log_sigmoid(-s_logit))


def _gated_box(s, t, gate):
    """Objectness-gated box term (Mehta & Ozturk; ppdet obj_weighted_reg):
    BCE on x, y (decoded through a sigmoid), L1 on w, h (decoded through
    exp, so logit space is already a log scale)."""
    loss = (_bce(s[0], F.sigmoid(t[0])) + _bce(s[1], F.sigmoid(t[1]))
            + paddle.abs(s[2] - t[2]) + paddle.abs(s[3] - t[3]))
    return (loss * gate).mean()


@register
@serializable
class L2Distill(nn.Layer):
    """{'l2': mean squared error over every element of the raw head output}
    (PaddleDetection 0.5's VOC recipe: weight 100, summed over 3 levels)."""
    __shared__ = ['num_classes']

    def __init__(self, num_classes=80):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, student, teacher):
        _check_pair(student, teacher, self.num_classes)
        return collections.OrderedDict(
            l2=F.mse_loss(student, teacher.detach()))


@register
@serializable
class FineGrainedDistill(nn.Layer):
    """Objectness-scaled distillation (Mehta & Ozturk 2018), ppdet 2.6
    DistillYOLOv3Loss math (weight 1000), σ = sigmoid:
      reg = mean_{N,A,H,W} [BCE(s_x, σ(t_x)) + BCE(s_y, σ(t_y))
                            + |s_w - t_w| + |s_h - t_h|] · σ(t_obj)
      cls = mean_{N,A,C,H,W} BCE(s_cls, σ(t_cls)) · σ(t_obj)
      obj = mean_{N,A,H,W} BCE(s_obj, 1[t_obj > 0])   (obj_target='hard')
                           BCE(s_obj, σ(t_obj))        (obj_target='soft')
    Gating by the teacher's objectness keeps the many background cells from
    drowning box and class knowledge."""
    __shared__ = ['num_classes']

    def __init__(self, num_classes=80, obj_target='hard'):
        super().__init__()
        if obj_target not in ('hard', 'soft'):
            raise ValueError("obj_target must be 'hard' or 'soft', got "
                             "{!r}".format(obj_target))
        self.num_classes = num_classes
        self.obj_target = obj_target

    def forward(self, student, teacher):
        _check_pair(student, teacher, self.num_classes)
        s = _split(student, self.num_classes)
        t = _split(teacher.detach(), self.num_classes)
        gate = F.sigmoid(t[4])
        cls = (_bce(s[5], F.sigmoid(t[5])) * gate.unsqueeze(2)).mean()
        if self.obj_target == 'hard':
            obj_t = (t[4] > 0).astype(s[4].dtype)
        else:
            obj_t = gate
        obj = _bce(s[4], obj_t).mean()
        return collections.OrderedDict(reg=_gated_box(s, t, gate), cls=cls,
                                       obj=obj)


@register
@serializable
class KLDistill(nn.Layer):
    """Temperature-softened KL divergence, T² rescaled (Hinton et al.) so the
    gradient size does not shrink with T:
      cls = mean_{N,A,H,W} T² KL(softmax(t_cls/T) ‖ softmax(s_cls/T)) · σ(t_obj)
                                                      (cls_form='softmax')
            mean_{N,A,H,W} T² Σ_C KL(Bern(σ(t_c/T)) ‖ Bern(σ(s_c/T))) · σ(t_obj)
                                                      (cls_form='bernoulli')
      obj = mean_{N,A,H,W} T² KL(Bern(σ(t_obj/T)) ‖ Bern(σ(s_obj/T)))
      reg = the objectness-gated box term of FineGrainedDistill
    YOLOv3 scores classes with independent sigmoids (multi-label) and trains
    them with per-class BCE, which the Bernoulli form (the default) matches;
    the softmax form keeps only the relative class scores and drops how sure
    the teacher is of any class. Measured on the demo (one seed, README): the
    Bernoulli form 3.95 mAP, the softmax form 2.22.
    Computed from log_softmax / log_sigmoid, so saturated logits stay finite.
    """
    __shared__ = ['num_classes']

    def __init__(self, num_classes=80, temperature=1.0, cls_form='bernoulli'):
        super().__init__()
        if cls_form not in ('softmax', 'bernoulli'):
            raise ValueError("cls_form must be 'softmax' or 'bernoulli', got "
                             "{!r}".format(cls_form))
        self.num_classes = num_classes
        self.temperature = temperature
        self.cls_form = cls_form

    @property
    def temperature(self):
        return self._temperature

    @temperature.setter
    def temperature(self, value):
        # 0 divides by zero, a negative value flips the loss's sign.
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = float('nan')
        if not value > 0 or value == float('inf'):
            raise ValueError('temperature must be a finite number > 0, got '
                             '{!r}'.format(value))
        self._temperature = value

    def forward(self, student, teacher):
        _check_pair(student, teacher, self.num_classes)
        T = float(self.temperature)
        s = _split(student, self.num_classes)
        t = _split(teacher.detach(), self.num_classes)
        gate = F.sigmoid(t[4])
        if self.cls_form == 'softmax':
            log_ps = F.log_softmax(s[5] / T, axis=2)
            log_pt = F.log_softmax(t[5] / T, axis=2)
            kl_cls = (log_pt.exp() * (log_pt - log_ps)).sum(axis=2)
        else:
            kl_cls = _bernoulli_kl(s[5] / T, t[5] / T).sum(axis=2)
        kl_obj = _bernoulli_kl(s[4] / T, t[4] / T)
        return collections.OrderedDict(
            reg=_gated_box(s, t, gate), cls=T * T * (kl_cls * gate).mean(),
            obj=T * T * kl_obj.mean())
