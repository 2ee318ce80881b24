"""Multi-class NMS as ppdet's YOLOv3 and GFL post-processes run it, callable
both inside an exported program and on the host (for models exported
without it).

ppdet 2.6's `ops.multiclass_nms` builds a legacy-IR operator in static mode
(`LayerHelper.append_op`), which Paddle 3's PIR refuses; the phi operator
`multiclass_nms3` is the same kernel and works in both modes.
"""
import numpy as np
import paddle
from paddle import _C_ops

__all__ = ['nms_settings', 'multiclass_nms', 'multiclass_nms_numpy']


def nms_settings(detector):
    """The detector's MultiClassNMS arguments, as written to infer_cfg.yml."""
    if type(detector).__name__ == 'GFL':
        # GFLHead.post_process calls its NMS with the default background
        # label, -1: no class is dropped.
        nms, background = detector.head.nms, -1
    else:
        # BBoxPostProcess passes num_classes as the background label, i.e.
        # no class is dropped.
        nms = detector.post_process.nms
        background = detector.post_process.num_classes
    return {'score_threshold': float(nms.score_threshold),
            'nms_top_k': int(nms.nms_top_k),
            'keep_top_k': int(nms.keep_top_k),
            'nms_threshold': float(nms.nms_threshold),
            'normalized': bool(nms.normalized),
            'nms_eta': float(nms.nms_eta),
            'background_label': int(background)}


def multiclass_nms(boxes, scores, settings):
    """boxes [B, M, 4], scores [B, C, M] (tensors) -> bbox [N, 6] rows
    (class, score, x1, y1, x2, y2) and bbox_num [B]."""
    s = settings
    bbox, _, bbox_num = _C_ops.multiclass_nms3(
        boxes, scores, None, s['score_threshold'], s['nms_top_k'],
        s['keep_top_k'], s['nms_threshold'], s['normalized'], s['nms_eta'],
        s['background_label'])
    return bbox, bbox_num


def multiclass_nms_numpy(boxes, scores, settings):
    with paddle.no_grad():
        bbox, bbox_num = multiclass_nms(
            paddle.to_tensor(np.asarray(boxes, 'float32')),
            paddle.to_tensor(np.asarray(scores, 'float32')), settings)
    return bbox.numpy(), bbox_num.numpy()
