"""Feature distillation: losses on paired intermediate maps [N, C, H, W], by
default each neck level of the student with the teacher's at the same
stride (pairing.pairs_by_stride: a GFL teacher and a YOLOv3 student pair
their FPN levels). Before a loss compares a pair, the pair's connector
(connectors.py) maps the student's map to the teacher's channels and size.
Components are summed over the pairs, as MMRazor and the papers' code sum
over levels.

Each loss is tested against a numpy reference of its paper's formula
(tests/test_feature_distill.py). ppdet 2.6 (ppdet/slim/distill_loss.py) has
one class per loss; each is used here where it computes the paper's loss,
always built with equal channels so that its own `align` conv does not
exist (the connectors align channels and strides, and train with the
student):

  mimic  ppdet MimicFeatureLoss, with normalize off by default (ppdet's
         default standardises both maps first, which makes it 2 x PKD).
  cwd    own code: ppdet's CWDFeatureLoss omits the paper's T² factor and
         adds 1e-5 to every probability inside its logs, a bias that grows
         as maps grow (1/(H W) is 1e-4 on a 100 x 100 map).
  pkd    ppdet PKDFeatureLoss (its formula is the authors' MMRazor code).
  mgd    ppdet MGDFeatureLoss for the generation block and its sum / N,
         with normalize off (the paper has none); the random mask, the
         method's point, is missing in ppdet and drawn here.
  fgd    ppdet FGDFeatureLoss for the feature, attention-loss and global
         (GcBlock) terms (its attention formula, recomputed here in
         float32 throughout); the foreground/background masks are
         computed here from the boxes in whichever form the reader leaves
         them (ppdet's reads pixel xyxy lists only, which neither the
         YOLOv3 nor the GFL reader gives), and the GcBlocks' first convs
         are re-initialised: ppdet zero-initialises both convs of each, so
         neither weight ever gets a gradient and the global term learns
         only a bias (the authors zero only the last conv, as GCNet does).
"""
import collections
import math

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn
from ppdet.core.workspace import register, serializable
from ppdet.slim.distill_loss import (FGDFeatureLoss, MGDFeatureLoss,
                                     MimicFeatureLoss, PKDFeatureLoss)

from ..errors import ConfigError
from .losses import DistillLoss, Temperature
from .pairing import pairs_by_stride

__all__ = ['FeatureLoss', 'MimicDistill', 'CWDDistill', 'PKDDistill',
           'MGDDistill', 'FGDDistill', 'gt_boxes', 'box_masks']


def _check_maps(student, teacher, name):
    ss, ts = list(student.shape), list(teacher.shape)
    if ss != ts or len(ss) != 4:
        raise ValueError('{}: the (connected) student map {} and the teacher '
                         'map {} must be equal [N, C, H, W] shapes'.format(
                             name, ss, ts))


class FeatureLoss(DistillLoss):
    """A loss on feature maps: `forward(student, teacher, inputs=None,
    pair=0)` on one pair's maps (already connected: equal shapes) returns
    named unweighted components; `pair` selects the pair's own parts
    (built by `build`)."""
    connects = True

    def default_pairs(self, student, teacher):
        return pairs_by_stride(student, teacher)

    def components(self, pairs, student_out, teacher_out, inputs,
                   connectors=None):
        parts = collections.OrderedDict()
        for i, (s, t) in enumerate(pairs):
            t_map = teacher_out[t].detach()
            s_map = student_out[s]
            if connectors is not None:
                s_map = connectors[i](s_map, t_map.shape[2:])
            for k, v in self(s_map, t_map, inputs, i).items():
                parts[k] = parts[k] + v if k in parts else v
        return parts

    def _part(self, layers, pair):
        if layers is None or pair >= len(layers):
            raise ValueError('{}: build(channels) first, with the teacher '
                             "maps' channels per pair".format(
                                 type(self).__name__))
        return layers[pair]


@register
@serializable
class MimicDistill(FeatureLoss):
    """{'mimic': mean_{N,C,H,W} (s - t)²}: L2 feature mimicking (FitNets'
    hints; Li et al. 2017, who compare inside the proposals only, with a
    halved sum: here every cell, averaged). `normalize`: standardise each
    channel of both maps first (ppdet's default)."""

    def __init__(self, normalize=False):
        super().__init__()
        self.loss = MimicFeatureLoss(1, 1, normalize=bool(normalize))

    def forward(self, student, teacher, inputs=None, pair=0):
        _check_maps(student, teacher, 'MimicDistill')
        return collections.OrderedDict(mimic=self.loss(student, teacher))


@register
@serializable
class CWDDistill(FeatureLoss):
    """Channel-wise distillation (Shu et al., ICCV 2021): each channel's map
    softened into a distribution over its H x W locations,

      cwd = T² / (N C) Σ_{n,c} Σ_i φ(t)_nci log(φ(t)_nci / φ(s)_nci),
      φ(x)_nci = exp(x_nci / T) / Σ_j exp(x_ncj / T)

    as in the paper and the authors' MMRazor code. From log-softmaxes, so
    saturated maps stay finite (ppdet: no T², +1e-5 inside the logs)."""

    def __init__(self, temperature=1.0):
        super().__init__()
        self.temperature = temperature

    temperature = Temperature()

    def forward(self, student, teacher, inputs=None, pair=0):
        _check_maps(student, teacher, 'CWDDistill')
        n, c, h, w = student.shape
        T = self.temperature
        log_ps = F.log_softmax(student.reshape([n * c, h * w]) / T, axis=1)
        log_pt = F.log_softmax(teacher.reshape([n * c, h * w]) / T, axis=1)
        kl = (log_pt.exp() * (log_pt - log_ps)).sum()
        return collections.OrderedDict(cwd=T * T * kl / (n * c))


@register
@serializable
class PKDDistill(FeatureLoss):
    """Pearson correlation distillation (Cao et al., NeurIPS 2022): both
    maps standardised per channel over (N, H, W) (sample std + 1e-6, the
    authors' code), then

      pkd = 1 / (2 N C H W) Σ (ŝ - t̂)²,

    which is ((n-1)/n) x mean over channels of 1 - Pearson r(s_c, t_c)
    (n = N H W): the student matches the teacher's pattern, not its
    magnitude. ppdet's PKDFeatureLoss, unchanged (its resize is never
    needed: the connector matched the sizes)."""

    def __init__(self):
        super().__init__()
        self.loss = PKDFeatureLoss(normalize=True, loss_weight=1.0,
                                   resize_stu=True)

    def forward(self, student, teacher, inputs=None, pair=0):
        _check_maps(student, teacher, 'PKDDistill')
        return collections.OrderedDict(pkd=self.loss(student, teacher))


@register
@serializable
class MGDDistill(FeatureLoss):
    """Masked generative distillation (Yang et al., ECCV 2022): a random
    mask M (per image and location, shared by the channels: M_ij = 0 where
    R_ij < mask_ratio, R ~ U(0, 1), drawn from Paddle's generator, so the
    run's seed fixes it) blanks part of the student's map, and a generation
    block G (3x3 conv, ReLU, 3x3 conv; one per pair, trained with the
    student) must rebuild the teacher's map from the rest:

      mgd = 1/N Σ_{n,c,i,j} (t_ncij - G(s · M)_ncij)²

    The paper's λ for detection is 0.65 and its weight α 2e-5 (this sum
    grows with C H W; the entry's default weight is auto). ppdet's
    MGDFeatureLoss builds G and the sum but never masks: it is then a
    mimic through a conv block."""

    def __init__(self, mask_ratio=0.65):
        super().__init__()
        if not isinstance(mask_ratio, (int, float)) or \
                not 0 <= mask_ratio < 1:
            raise ValueError('mask_ratio must be a number in [0, 1), got '
                             '{!r}'.format(mask_ratio))
        self.mask_ratio = float(mask_ratio)
        self.blocks = None

    def build(self, channels):
        self.blocks = nn.LayerList([MGDFeatureLoss(c, c, normalize=False)
                                    for c in channels])

    def forward(self, student, teacher, inputs=None, pair=0):
        _check_maps(student, teacher, 'MGDDistill')
        block = self._part(self.blocks, pair)
        n, _, h, w = student.shape
        keep = (paddle.rand([n, 1, h, w]) >= self.mask_ratio).astype(
            student.dtype)
        return collections.OrderedDict(mgd=block(student * keep, teacher))


def gt_boxes(inputs, num_classes):
    """Per image of the batch, its ground-truth boxes [M, 4] (x1, y1, x2,
    y2) in pixels of the batch's image tensor, from whichever form the
    reader left them in:
      - a YOLOv3 reader (Gt2YoloTarget's `target0`...): `gt_bbox`
        normalised (cx, cy, w, h), zero rows padding;
      - a GFL reader (Gt2GFLTarget, Gt2LDTarget), which drops `gt_bbox`:
        the boxes assigned to its positive locations (`bbox_targets` where
        `labels` < num_classes), each once; a box the assignment gave no
        location is missing;
      - otherwise `gt_bbox` in pixels (x1, y1, x2, y2), zero rows padding
        (ppdet FGD's convention)."""
    height, width = inputs['image'].shape[2:]
    if 'bbox_targets' in inputs and 'labels' in inputs:
        labels = inputs['labels'].numpy()
        targets = inputs['bbox_targets'].numpy()
        return [np.unique(t[(lab >= 0) & (lab < num_classes)], axis=0)
                for lab, t in zip(labels, targets)]
    if 'gt_bbox' not in inputs:
        raise ConfigError(
            'FGDDistill needs the ground-truth boxes: the batch has no '
            'gt_bbox (nor GFL targets); keep gt_bbox in the reader\'s '
            'output')
    out = []
    yolo = any(k.startswith('target') for k in inputs)
    for b in inputs['gt_bbox']:
        b = np.asarray(b.numpy() if isinstance(b, paddle.Tensor) else b,
                       'float64').reshape([-1, 4])
        if yolo:
            cx, cy, w, h = b.T
            b = np.stack([(cx - w / 2) * width, (cy - h / 2) * height,
                          (cx + w / 2) * width, (cy + h / 2) * height], 1)
        out.append(b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])])
    return out


def box_masks(boxes, image_size, map_size):
    """FGD's masks [N, H, W] on a map of `map_size` (H, W) covering an
    image of `image_size` (pixels): foreground, 1 / (cells of the box) on
    the cells a box overlaps (the smallest box where boxes overlap), so
    each box weighs 1 in all; background, 1 / (background cells) on the
    others (0 everywhere if there are none). The authors' code (and
    ppdet's) marks one more row and column per box (cells floor(y1) to
    ceil(y2) inclusive) and divides by that count; it scales boxes by the
    unpadded image size, here by the image tensor's, which the map
    covers."""
    h, w = map_size
    sy, sx = h / float(image_size[0]), w / float(image_size[1])
    fg = np.zeros([len(boxes), h, w], 'float32')
    for i, image_boxes in enumerate(boxes):
        for x1, y1, x2, y2 in image_boxes:
            c0, r0 = max(int(math.floor(x1 * sx)), 0), \
                max(int(math.floor(y1 * sy)), 0)
            c1 = min(max(int(math.ceil(x2 * sx)), c0 + 1), w)
            r1 = min(max(int(math.ceil(y2 * sy)), r0 + 1), h)
            if c1 <= c0 or r1 <= r0:
                continue
            cells = fg[i, r0:r1, c0:c1]
            fg[i, r0:r1, c0:c1] = np.maximum(cells, 1. / cells.size)
    bg = (fg == 0).astype('float32')
    bg /= np.maximum(bg.sum(axis=(1, 2), keepdims=True), 1.)
    return fg, bg


def _attention(x, T):
    """FGD's spatial [N, H, W] and channel [N, C] attention of `x`: ppdet's
    spatial_channel_attention, without its int64 x float32 products."""
    n, c, h, w = x.shape
    a = x.abs()
    spatial = F.softmax(a.mean(axis=1).reshape([n, h * w]) / T, axis=1)
    channel = F.softmax(a.mean(axis=[2, 3]) / T, axis=1)
    return (h * w) * spatial.reshape([n, h, w]), c * channel


@register
@serializable
class FGDDistill(FeatureLoss):
    """Focal and global distillation (Yang et al., CVPR 2022). With the
    masks of `box_masks` (M_fg, M_bg), the teacher's attention
    A^S = H W softmax_ij(mean_c |t| / T), A^C = C softmax_c(mean_ij |t| /
    T) (the student's likewise), per image and summed over the batch,
    divided by N:

      fg        = fg_weight        Σ M_fg A^S A^C (t - s)²
      bg        = bg_weight        Σ M_bg A^S A^C (t - s)²
      attention = attention_weight (Σ |A^C_t - A^C_s| + Σ |A^S_t - A^S_s|)
      global    = global_weight    Σ (GC_t(t) - GC_s(s))²

    GC(x) = x + W2 ReLU(LN(W1 Σ_ij softmax_ij(Wk x) x_ij)), a GcBlock per
    model and pair, trained with the student. Defaults: the paper's
    RetinaNet settings (T = 0.5; 1e-3, 5e-4, 1e-3, 5e-6), as ppdet's.
    Reads the batch's boxes (`gt_boxes`): needs labels. A component with
    weight 0 is neither computed nor logged."""
    __shared__ = ['num_classes']
    needs_labels = True
    _COMPONENTS = ('fg', 'bg', 'attention', 'global')
    temperature = Temperature()

    def __init__(self, num_classes=80, temperature=0.5, fg_weight=1e-3,
                 bg_weight=5e-4, attention_weight=1e-3, global_weight=5e-6):
        super().__init__()
        self.num_classes = num_classes
        self.temperature = temperature
        self.weights = {}
        for name, w in zip(self._COMPONENTS, (fg_weight, bg_weight,
                                               attention_weight,
                                               global_weight)):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or \
                    not 0 <= w < float('inf'):
                raise ValueError('{}_weight must be a number >= 0, got '
                                 '{!r}'.format(name, w))
            self.weights[name] = float(w)
        if not any(self.weights.values()):
            raise ValueError('every component weight is 0: nothing to '
                             'distill')
        self.blocks = None

    def build(self, channels):
        blocks = []
        for c in channels:
            block = FGDFeatureLoss(c, c, temp=self.temperature)
            for gc in (block.stu_conv_block, block.tea_conv_block):
                nn.initializer.KaimingUniform()(gc[0].weight)
            blocks.append(block)
        self.blocks = nn.LayerList(blocks)

    def forward(self, student, teacher, inputs=None, pair=0):
        _check_maps(student, teacher, 'FGDDistill')
        block = self._part(self.blocks, pair)
        if inputs is None:
            raise ValueError('FGDDistill needs the batch (its boxes)')
        fg, bg = box_masks(gt_boxes(inputs, self.num_classes),
                           inputs['image'].shape[2:], student.shape[2:])
        fg, bg = paddle.to_tensor(fg), paddle.to_tensor(bg)
        T, w = self.temperature, self.weights
        t_spatial, t_channel = _attention(teacher, T)
        out = collections.OrderedDict()
        if w['fg'] or w['bg']:
            fg_loss, bg_loss = block.feature_loss(student, teacher, fg, bg,
                                                  t_channel, t_spatial)
            if w['fg']:
                out['fg'] = w['fg'] * fg_loss
            if w['bg']:
                out['bg'] = w['bg'] * bg_loss
        if w['attention']:
            s_spatial, s_channel = _attention(student, T)
            out['attention'] = w['attention'] * block.mask_loss(
                s_channel, t_channel, s_spatial, t_spatial)
        if w['global']:
            out['global'] = w['global'] * block.relation_loss(student,
                                                              teacher)
        return out
