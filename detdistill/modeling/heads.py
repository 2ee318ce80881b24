"""Heads registered with ppdet's workspace."""
import math

import paddle
from ppdet.core.workspace import register
from ppdet.modeling.heads.yolo_head import YOLOv3Head

__all__ = ['PriorYOLOv3Head']


@register
class PriorYOLOv3Head(YOLOv3Head):
    """ppdet's YOLOv3Head with the objectness bias set to a prior probability.

    With a zero bias every cell starts at objectness 0.5, so a model trained
    from scratch spends its first hundreds of steps (and most of its loss)
    learning that almost every cell is background (RetinaNet's focal-loss paper,
    section 3.3, uses the same fix). Only the initial values differ from
    YOLOv3Head: parameter names and shapes are the same.
    """
    __shared__ = ['num_classes', 'data_format']
    __inject__ = ['loss']

    def __init__(self,
                 in_channels=[1024, 512, 256],
                 anchors=[[10, 13], [16, 30], [33, 23], [30, 61], [62, 45],
                          [59, 119], [116, 90], [156, 198], [373, 326]],
                 anchor_masks=[[6, 7, 8], [3, 4, 5], [0, 1, 2]],
                 num_classes=80,
                 loss='YOLOv3Loss',
                 iou_aware=False,
                 iou_aware_factor=0.4,
                 data_format='NCHW',
                 obj_prior=0.01):
        super().__init__(in_channels, anchors, anchor_masks, num_classes, loss,
                         iou_aware, iou_aware_factor, data_format)
        bias = -math.log((1 - obj_prior) / obj_prior)
        no = self.num_classes + (6 if self.iou_aware else 5)
        for conv, anchors in zip(self.yolo_outputs, self.anchors):
            b = conv.bias.numpy()
            na = len(anchors)
            offset = na if self.iou_aware else 0  # iou-aware channels first
            for a in range(na):
                b[offset + a * no + 4] = bias
            conv.bias.set_value(paddle.to_tensor(b))
