"""Training targets for localization distillation (LD) on GFL heads.

`Gt2LDTarget` is ppdet's `Gt2GFLTarget` (ATSS assignment: grid_cells,
labels, label_weights, bbox_targets, pos_num) plus `vlr_regions`: for every
anchor of the image, its IoU with a ground-truth box when it lies in that
box's *valuable localization region* (VLR), else 0.

The VLR (Zheng et al., Localization Distillation, CVPR 2022, sec. 3.3; the
authors' `get_vlr_region`, ported to ppdet's ATSSAssigner): with t_g the ATSS
threshold of box g (mean + standard deviation of the IoUs of the `topk`
anchors nearest to g's centre on each level), the anchors with

    alpha * t_g <= DIoU(anchor, g) < t_g          (alpha = 0.25)

i.e. anchors that overlap g well but not enough to be ATSS positives. Like
the reference, the band uses DIoU, the threshold uses IoU with a Bessel-
corrected deviation, the value is the largest IoU over the boxes whose band
the anchor is in, and positives are not excluded here: a positive can fall
in the band (DIoU <= IoU), and the loss (`LDDistill`) removes them, so the
main and VLR regions never share a location.

ppdet's own `Gt2GFLTarget(compute_vlr_region=True)` computes the same band
but returns a tuple instead of an array for an image without boxes; this
computes the band once for all boxes (no sort over all anchors).
"""
import math

import numpy as np
from ppdet.data import transform as ppdet_transforms
from ppdet.data.transform.batch_operators import Gt2GFLTarget
from ppdet.data.transform.operators import register_op

__all__ = ['Gt2LDTarget', 'vlr_region', 'box_iou', 'box_diou']


def box_iou(a, b):
    """[len(a), len(b)] IoU of xyxy boxes."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-6)


def box_diou(a, b):
    """[len(a), len(b)] distance-IoU: IoU minus the squared centre distance
    over the squared diagonal of the smallest box enclosing both."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ca = (a[:, :2] + a[:, 2:]) / 2
    cb = (b[:, :2] + b[:, 2:]) / 2
    rho2 = ((ca[:, None] - cb[None]) ** 2).sum(axis=2)
    lt = np.minimum(a[:, None, :2], b[None, :, :2])
    rb = np.maximum(a[:, None, 2:], b[None, :, 2:])
    diag2 = ((rb - lt) ** 2).sum(axis=2)
    return box_iou(a, b) - rho2 / np.maximum(diag2, 1e-6)


def vlr_region(anchors, num_level_anchors, gt_boxes, topk=9, alpha=0.25):
    """[num_anchors] float32: the IoU of each anchor with the box whose VLR
    it is in (the largest, if several), 0 outside every VLR.

    anchors: [A, 4] xyxy, levels concatenated (`num_level_anchors` each);
    gt_boxes: [G, 4] xyxy. Nearest anchors are ranked by centre distance,
    ties by index."""
    anchors = np.asarray(anchors, np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    out = np.zeros(len(anchors), np.float32)
    if len(anchors) == 0 or len(gt_boxes) == 0:
        return out
    iou = box_iou(anchors, gt_boxes)
    diou = box_diou(anchors, gt_boxes)
    centre = (anchors[:, :2] + anchors[:, 2:]) / 2
    gt_centre = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    dist = np.sqrt(((centre[:, None] - gt_centre[None]) ** 2).sum(axis=2))
    nearest, start = [], 0
    for n in num_level_anchors:
        order = np.argsort(dist[start:start + n], axis=0, kind='stable')
        nearest.append(order[:min(topk, n)] + start)
        start += n
    nearest = np.concatenate(nearest)                  # [K, G]
    cand = np.take_along_axis(iou, nearest, axis=0)    # their IoUs
    std = cand.std(axis=0, ddof=1) if len(cand) > 1 else 0.
    thr = cand.mean(axis=0) + std                      # [G]
    band = (diou >= alpha * thr) & (diou < thr)
    best = np.where(band, iou, -np.inf).max(axis=1)
    inside = np.isfinite(best)
    out[inside] = best[inside]
    return out


@register_op
class Gt2LDTarget(Gt2GFLTarget):
    """Gt2GFLTarget plus `vlr_regions` [num_anchors] (see the module doc).
    Takes Gt2GFLTarget's arguments, plus `vlr_topk` and `vlr_alpha`."""

    def __init__(self, num_classes=80, downsample_ratios=[8, 16, 32, 64, 128],
                 grid_cell_scale=4, cell_offset=0, vlr_topk=9,
                 vlr_alpha=0.25):
        super().__init__(num_classes, downsample_ratios, grid_cell_scale,
                         cell_offset)
        self.vlr_topk = vlr_topk
        self.vlr_alpha = vlr_alpha

    def __call__(self, samples, context=None):
        # The anchors Gt2GFLTarget assigns (it drops gt_bbox, so the VLR is
        # computed first).
        h, w = samples[0]['image'].shape[1:3]
        levels = [self.get_grid_cells(
            (int(math.ceil(h / s)), int(math.ceil(w / s))),
            self.grid_cell_scale, s, self.cell_offset)
            for s in self.downsample_ratios]
        anchors = np.concatenate(levels)
        sizes = [len(cells) for cells in levels]
        vlr = [vlr_region(anchors, sizes, s['gt_bbox'], self.vlr_topk,
                          self.vlr_alpha) for s in samples]
        samples = super().__call__(samples, context)
        for sample, v in zip(samples, vlr):
            sample['vlr_regions'] = v
        return samples


# ppdet's readers look transforms up as attributes of ppdet.data.transform.
setattr(ppdet_transforms, 'Gt2LDTarget', Gt2LDTarget)
