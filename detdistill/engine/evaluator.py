"""VOC mAP@0.5, 11-point and area (integral), with per-class AP.

Built on ppdet's DetectionMAP (the matching and AP code PaddleDetection
reports), fed directly instead of through VOCMetric because VOCMetric computes
one AP type per instance, returns early without counting ground truth when an
image has no detections (inflating mAP), and names per-class results by
position among non-empty classes.
"""
import numpy as np
import paddle
from ppdet.metrics.map_utils import DetectionMAP, prune_zero_padding

from ..errors import ConfigError

__all__ = ['VOCEvaluator', 'build_evaluator']

MAP_TYPES = {'11point': '11point', 'area': 'integral'}


def _np(x):
    return x.numpy() if isinstance(x, paddle.Tensor) else np.asarray(x)


class VOCEvaluator:
    def __init__(self, class_names, overlap_thresh=0.5,
                 evaluate_difficult=False):
        self.class_names = list(class_names)
        self.overlap_thresh = overlap_thresh
        self.evaluate_difficult = evaluate_difficult
        self.reset()

    def reset(self):
        self.maps = {
            name: DetectionMAP(class_num=len(self.class_names),
                               overlap_thresh=self.overlap_thresh,
                               map_type=kind,
                               evaluate_difficult=self.evaluate_difficult,
                               catid2name=dict(enumerate(self.class_names)))
            for name, kind in MAP_TYPES.items()}
        self.num_images = 0

    def update(self, inputs, outputs):
        """inputs: an EvalReader batch (collate_batch false: per-image gt
        lists); outputs: the detector's {'bbox': [M, 6], 'bbox_num': [N]}."""
        dets = _np(outputs['bbox'])
        nums = _np(outputs['bbox_num'])
        scale = _np(inputs['scale_factor']) if 'scale_factor' in inputs \
            else np.ones((len(nums), 2), 'float32')
        start = 0
        for i in range(len(nums)):
            det = dets[start:start + nums[i]]
            start += nums[i]
            det = det[det[:, 0] >= 0]  # NMS pads "no detection" with label -1
            h, w = scale[i]
            gt_box = _np(inputs['gt_bbox'][i]) / np.array([w, h, w, h])
            gt_label = _np(inputs['gt_class'][i]).ravel()
            difficult = None if self.evaluate_difficult else \
                _np(inputs['difficult'][i]).ravel()
            gt_box, gt_label, difficult = prune_zero_padding(
                gt_box, gt_label, difficult)
            for m in self.maps.values():
                m.update(det[:, 2:], det[:, 1], det[:, 0], gt_box, gt_label,
                         difficult)
            self.num_images += 1

    def accumulate(self):
        """{'mAP': {'11point': x, 'area': y}, 'per_class': {name: {...}}}
        with values in [0, 1]."""
        result = {'mAP': {}, 'per_class': {n: {} for n in self.class_names},
                  'num_images': self.num_images}
        for name, m in self.maps.items():
            m.accumulate()
            result['mAP'][name] = float(m.get_map())
            # eval_results lists classes with ground truth and detections,
            # in class order; map them back by that order.
            present = [c for c, (pos, cnt) in enumerate(
                zip(m.class_score_poss, m.class_gt_counts)) if cnt > 0]
            scored = [c for c in present if len(m.class_score_poss[c]) > 0]
            for c in present:
                result['per_class'][self.class_names[c]][name] = 0.0
            for c, r in zip(scored, m.eval_results):
                result['per_class'][self.class_names[c]][name] = float(r['ap'])
        return result


def build_evaluator(cfg, class_names):
    """The evaluator of the config's `metric` (VOC mAP@0.5; PaddleDetection's
    default for these configs). Other metrics are not implemented: asking
    for one is an error rather than a VOC number under another name."""
    metric = cfg.get('metric', 'VOC')
    if metric != 'VOC':
        raise ConfigError('metric: {} is not supported; this toolkit '
                          'evaluates VOC mAP@0.5 (metric: VOC)'.format(metric))
    return VOCEvaluator(class_names)
