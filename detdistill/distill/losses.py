"""Distillation losses on head outputs (feature maps: feature_losses.py).
Every loss is a DistillLoss (the interface the
distiller uses, written down below): YOLOv3 head losses (L2, fine-grained,
KL) compare one pair of head outputs at a time and return named, unweighted
scalar components, which the distiller sums over pairs and multiplies by the
entry's weight; LDDistill (localization distillation, GFL heads) takes the
box-distribution and class outputs of every level at once, with the batch
(its regions come from the target assignment), and weighs its components
itself.

Each YOLOv3 output is the raw head conv output [N, A*(5+C), H, W]; per
anchor the channels are (x, y, w, h, obj, cls_0..cls_{C-1}). Teacher tensors
are detached here whatever the caller did: gradients reach only the student.

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
import math

import paddle
import paddle.nn.functional as F
from paddle import nn
from ppdet.core.workspace import register, serializable

from ..errors import ConfigError, PairingError
from .pairing import DEFAULT_PAIRS

__all__ = ['DistillLoss', 'YOLOv3LogitLoss', 'L2Distill',
           'FineGrainedDistill', 'KLDistill', 'LDDistill']

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


def _checked_temperature(value):
    """A finite float > 0: 0 divides by zero, a negative value flips the
    loss's sign."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float('nan')
    if not value > 0 or value == float('inf'):
        raise ValueError('temperature must be a finite number > 0, got '
                         '{!r}'.format(value))
    return value


class Temperature:
    """A loss's `temperature` attribute, checked whenever it is set (at
    construction and by the Distill block's options afterwards)."""

    def __get__(self, obj, owner=None):
        return self if obj is None else obj.__dict__['_temperature']

    def __set__(self, obj, value):
        obj.__dict__['_temperature'] = _checked_temperature(value)


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


class DistillLoss(nn.Layer):
    """What the distiller asks of a loss (subclasses override what differs).

    `groups`: None for a loss of one pair at a time, `forward(student,
    teacher)` on that pair's tensors; the distiller sums the components
    over the pairs. A tuple of group names for a loss of every pair at once,
    `forward(student, teacher, inputs)` with {group: [tensor per pair]} for
    each model and the batch; its pairs are then {group: [[s, t], ...]}.
    `needs_labels`: it reads the batch's ground truth, so unlabeled images
    cannot be distilled with it.
    `connects`: it compares feature maps (feature_losses.FeatureLoss): the
    distiller puts a connector on each pair (connectors.py) and calls
    `build(channels)` once, before training, with the teacher map's
    channels per pair, for the loss's own trainable parts.
    `default_pairs(student, teacher)`: the pairs used when the config names
    none (the models, not the Teacher wrapper).
    `teacher_loss(teacher, outputs, inputs)`: the teacher's own detection
    loss from its recorded outputs ({name: tensor}), logged to show that
    the teacher is good on this data; None when the loss cannot tell.
    """
    groups = None
    needs_labels = False
    connects = False

    def default_pairs(self, student, teacher):
        raise PairingError('{} has no default pairs: name them in '
                           'Distill.losses.<name>.pairs'.format(
                               type(self).__name__))

    def build(self, channels):
        """Per-pair trainable parts, from the teacher maps' channels."""

    def teacher_loss(self, teacher, outputs, inputs):
        return None

    def components(self, pairs, student_out, teacher_out, inputs,
                   connectors=None):
        """The loss's unweighted components on the recorded outputs
        (`connectors`: one per pair, for a loss that `connects`)."""
        if connectors is not None:
            raise ValueError('{} takes no connectors'.format(
                type(self).__name__))
        if self.groups is None:
            parts = collections.OrderedDict()
            for s, t in pairs:
                for k, v in self(student_out[s], teacher_out[t]).items():
                    parts[k] = parts[k] + v if k in parts else v
            return parts
        return self({g: [student_out[s] for s, _ in pairs[g]]
                     for g in self.groups},
                    {g: [teacher_out[t] for _, t in pairs[g]]
                     for g in self.groups}, inputs)


class YOLOv3LogitLoss(DistillLoss):
    """A loss on a YOLOv3 head's raw outputs: by default the head's three
    output convolutions, which have the same names in every ppdet YOLOv3;
    the teacher's detection loss comes from its head."""

    def default_pairs(self, student, teacher):
        return [tuple(p) for p in DEFAULT_PAIRS]

    def teacher_loss(self, teacher, outputs, inputs):
        head = getattr(teacher, 'yolo_head', None)
        names = [s for s, _ in DEFAULT_PAIRS]
        if head is None or any(n not in outputs for n in names):
            return None
        with paddle.no_grad():
            return head.loss([outputs[n] for n in names], inputs,
                             head.anchors)['loss']


@register
@serializable
class L2Distill(YOLOv3LogitLoss):
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
class FineGrainedDistill(YOLOv3LogitLoss):
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
class KLDistill(YOLOv3LogitLoss):
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
    the teacher is of any class.
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

    temperature = Temperature()

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


def _flatten_levels(outputs):
    """[N, ch, H_l, W_l] per level -> [N, sum_l H_l W_l, ch]: per image,
    levels one after the other, each row-major (y, then x), the layout of
    ppdet's Gt2GFLTarget assignment (labels, vlr_regions: [N, locations])."""
    return paddle.concat([x.transpose([0, 2, 3, 1]).reshape(
        [x.shape[0], -1, x.shape[1]]) for x in outputs], axis=1)


def _softmax_kl(s_logit, t_logit):
    """KL(softmax(t) ‖ softmax(s)) over the last axis, from log-softmaxes."""
    log_pt = F.log_softmax(t_logit, axis=-1)
    return (log_pt.exp() * (log_pt - F.log_softmax(s_logit, axis=-1))).sum(
        axis=-1)


@register
@serializable
class LDDistill(DistillLoss):
    """Localization distillation (Zheng et al., CVPR 2022) for GFL heads,
    whose box branch predicts, per location and box edge, a distribution
    over reg_max + 1 distances. With T the temperature, KL_e(p) =
    KL(softmax(t_pe/T) ‖ softmax(s_pe/T)) for edge e of location p, and
    KL_c(p) the same over the C class logits:

      ld     = ld_weight     · T²/(4(n+1))  Σ_{p∈P} w_p Σ_e KL_e(p)
      vlr_ld = vlr_ld_weight · T²/(16(n+1)) Σ_{p∈V} v_p Σ_e KL_e(p)
      kd     = kd_weight     · T²/C · Σ_l mean_{p∈P_l} KL_c(p)
      vlr_kd = vlr_kd_weight · T²/C · Σ_l mean_{p∈V_l} KL_c(p)

    P: the positive locations of the batch's ATSS assignment (`labels` <
    C), P_l those of level l; w_p = max_c σ(s_cls) (the student's own
    score, no gradient: GFL's weighting of its box losses); V: locations
    with `vlr_regions` v_p > 0 that are not positive (Gt2LDTarget's
    valuable localization region; v_p the anchor's IoU with its box);
    levels without locations of a region add nothing. Sums run over every
    image of the batch. These are the normalisations of the authors' LDHead
    and ppdet's LDGFLHead (KnowledgeDistillationKLDivLoss: a mean over the
    n+1 bins or C classes, avg_factor 4 and 16, per-level means for KD), so
    their weights carry over; the defaults (T = 10, ld and vlr_ld 0.25) are
    the paper's. Class KD takes a softmax over the classes like theirs
    (GFL's classifier is per-class sigmoid; the KL loss's Bernoulli form is
    not used here). kd and vlr_kd are off by default (the authors' LDHead
    uses 0.5 at T = 10 for kd, and multiplies its VLR KD by 0); a
    component with weight 0 is neither computed nor logged.

    Pairs (`default_pairs`), in two groups, levels in the head's order:
    `reg`, every level's distribution output (the GFL head's
    `p{log2 stride}_feat` scale layers, [N, 4(n+1), H, W]); `cls`, every
    level's class logits (the shared `gfl_head_cls`, one call per level,
    [N, C, H, W]).
    """
    __shared__ = ['num_classes']
    groups = ('reg', 'cls')
    needs_labels = True
    _COMPONENTS = ('ld', 'vlr_ld', 'kd', 'vlr_kd')

    def __init__(self, num_classes=80, temperature=10., ld_weight=0.25,
                 vlr_ld_weight=0.25, kd_weight=0., vlr_kd_weight=0.):
        super().__init__()
        self.num_classes = num_classes
        self.temperature = temperature
        self.weights = {}
        for name, w in zip(self._COMPONENTS, (ld_weight, vlr_ld_weight,
                                               kd_weight, vlr_kd_weight)):
            if not isinstance(w, (int, float)) or not 0 <= w < float('inf'):
                raise ValueError('LDDistill.{}_weight must be a number >= 0, '
                                 'got {!r}'.format(name, w))
            self.weights[name] = float(w)
        if not any(self.weights.values()):
            raise ValueError('LDDistill: every component weight is 0 '
                             '(ld_weight, vlr_ld_weight, kd_weight, '
                             'vlr_kd_weight): nothing to distill')

    temperature = Temperature()

    def default_pairs(self, student, teacher):
        """The GFL head's distribution and class outputs, level by level."""
        head = getattr(student, 'head', None)
        if head is None or not hasattr(head, 'gfl_head_cls'):
            raise PairingError(
                'the ld loss pairs the outputs of a GFL head (head.p*_feat, '
                'head.gfl_head_cls#level); this model has none: use a GFL '
                'config (configs/demo/gfl_r18_demo.yml) or set the pairs')
        levels = [int(round(math.log2(s))) for s in head.fpn_stride]
        reg = ['head.p{}_feat'.format(lvl) for lvl in levels]
        cls = ['head.gfl_head_cls#{}'.format(i) for i in range(len(levels))]
        return {'reg': [(n, n) for n in reg], 'cls': [(n, n) for n in cls]}

    def _check(self, outputs, role):
        reg, cls = outputs['reg'], outputs['cls']
        shapes = {g: [list(x.shape) for x in outputs[g]] for g in outputs}
        if len(reg) != len(cls) or any(
                r.ndim != 4 or c.ndim != 4 or r.shape[1] % 4 or
                c.shape[1] != self.num_classes or r.shape[2:] != c.shape[2:]
                for r, c in zip(reg, cls)):
            raise ValueError(
                'LDDistill: {} outputs {}: expected per level a distribution '
                '[N, 4*(reg_max+1), H, W] (reg) and class logits [N, '
                'num_classes={}, H, W] of the same H, W (cls)'.format(
                    role, shapes, self.num_classes))
        return reg, cls

    def forward(self, student, teacher, inputs):
        s_reg, s_cls = self._check(student, 'student')
        t_reg, t_cls = self._check({g: [t.detach() for t in teacher[g]]
                                    for g in teacher}, 'teacher')
        sizes = [x.shape[2] * x.shape[3] for x in s_cls]
        labels = inputs['labels']
        n, locations = s_cls[0].shape[0], sum(sizes)
        if list(labels.shape) != [n, locations]:
            raise ValueError(
                'LDDistill: the batch assigns {} locations per image (labels '
                '{}) but the head outputs {} ([N={}]): the reader\'s '
                'Gt2LDTarget/Gt2GFLTarget downsample_ratios must be the '
                'head\'s fpn_stride'.format(labels.shape[1],
                                            list(labels.shape), locations, n))
        T = self.temperature
        w = self.weights
        pos = paddle.logical_and(labels >= 0, labels < self.num_classes
                                 ).astype('float32')
        vlr = None
        if w['vlr_ld'] or w['vlr_kd']:
            if 'vlr_regions' not in inputs:
                raise ConfigError(
                    'LDDistill: vlr_ld_weight / vlr_kd_weight need '
                    '`vlr_regions` in the batch: use Gt2LDTarget instead of '
                    'Gt2GFLTarget in TrainReader.batch_transforms (the GFL '
                    'configs do), or set both weights to 0')
            vlr = inputs['vlr_regions'].astype('float32') * (1 - pos)
        sc = _flatten_levels(s_cls)
        out = collections.OrderedDict()
        if w['ld'] or w['vlr_ld']:
            s = _flatten_levels(s_reg)
            bins = s.shape[2] // 4
            s = s.reshape([n, locations, 4, bins])
            t = _flatten_levels(t_reg).reshape([n, locations, 4, bins])
            kl = _softmax_kl(s / T, t / T).sum(axis=2)  # [N, locations]
            scale = T * T / bins
            if w['ld']:
                score = F.sigmoid(sc.detach()).max(axis=2)
                out['ld'] = w['ld'] * scale * (kl * score * pos).sum() / 4
            if w['vlr_ld']:
                out['vlr_ld'] = w['vlr_ld'] * scale * (kl * vlr).sum() / 16
        if w['kd'] or w['vlr_kd']:
            kl = _softmax_kl(sc / T, _flatten_levels(t_cls) / T)
            scale = T * T / self.num_classes
            if w['kd']:
                out['kd'] = w['kd'] * scale * _level_means(kl, pos, sizes)
            if w['vlr_kd']:
                out['vlr_kd'] = w['vlr_kd'] * scale * _level_means(
                    kl, (vlr > 0).astype('float32'), sizes)
        return out

    def teacher_loss(self, teacher, outputs, inputs):
        """The teacher's GFL detection loss from its recorded outputs (the
        raw head outputs a training forward would return)."""
        names = self.default_pairs(teacher, teacher)
        if any(t not in outputs for g in names.values() for _, t in g):
            return None
        reg = [outputs[t] for _, t in names['reg']]
        cls = [outputs[t] for _, t in names['cls']]
        head = teacher.head
        project = head.distribution_project
        was = project.training
        # Integral reshapes its output per box only in training mode, which
        # GFLHead.get_loss expects; the teacher itself stays in eval mode.
        project.training = True
        try:
            with paddle.no_grad():
                losses = head.get_loss((cls, reg), inputs)
        finally:
            project.training = was
        return paddle.add_n(list(losses.values()))


def _level_means(values, mask, sizes):
    """Σ over levels of the mean of `values` [N, locations] where `mask` is
    1, levels whose mask is empty adding nothing."""
    total, start = paddle.zeros([]), 0
    for size in sizes:
        m = mask[:, start:start + size]
        count = m.sum()
        if float(count) > 0:
            total = total + (values[:, start:start + size] * m).sum() / count
        start += size
    return total
