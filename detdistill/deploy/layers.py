"""The networks that are exported: a detector's eval forward with
positional inputs (what paddle.jit.save needs), per architecture."""
import paddle

from .nms import multiclass_nms, nms_settings

__all__ = ['DeployYOLOv3', 'DeployGFL', 'deploy_layer', 'INPUTS', 'OUTPUTS']

INPUTS = ('image', 'im_shape', 'scale_factor')
OUTPUTS = {True: ['bbox', 'bbox_num'], False: ['boxes', 'scores']}


class DeployYOLOv3(paddle.nn.Layer):
    """ppdet's YOLOv3 eval forward with positional inputs, as exported:
    backbone, neck, head, YOLOBox decoding and (unless `with_nms` is False)
    multi-class NMS."""
    inputs = INPUTS

    def __init__(self, detector, with_nms=True):
        super().__init__()
        self.detector = detector
        self.with_nms = with_nms
        self.nms = nms_settings(detector)

    # jit.save matches InputSpecs to forward's arguments after the first,
    # which must be named `self`.
    def forward(self, image, im_shape, scale_factor):
        det = self.detector
        feats = det.neck(det.backbone({'image': image}))
        head_outs = det.yolo_head(feats)
        boxes, scores = det.post_process.decode(
            head_outs, det.yolo_head.mask_anchors, im_shape, scale_factor)
        if not self.with_nms:
            return boxes, scores
        return multiclass_nms(boxes, scores, self.nms)


class DeployGFL(paddle.nn.Layer):
    """ppdet's GFL eval forward with positional inputs: backbone, neck, the
    head's eval branch (sigmoid scores and decoded boxes per level), the
    rescaling of GFLHead.post_process and (unless `with_nms` is False)
    multi-class NMS. GFL does not clip its boxes to the image, so it takes no
    `im_shape` (an unused input is an error for paddle.jit.save)."""
    inputs = ('image', 'scale_factor')

    def __init__(self, detector, with_nms=True):
        super().__init__()
        self.detector = detector
        self.with_nms = with_nms
        self.nms = nms_settings(detector)

    def forward(self, image, scale_factor):
        det = self.detector
        scores, boxes = det.head(det.neck(det.backbone({'image': image})))
        boxes = paddle.concat(boxes, axis=1) / \
            scale_factor.flip([1]).tile([1, 2]).unsqueeze(1)
        scores = paddle.concat(scores, axis=1).transpose([0, 2, 1])
        if not self.with_nms:
            return boxes, scores
        return multiclass_nms(boxes, scores, self.nms)


DEPLOY = {'YOLOv3': DeployYOLOv3, 'GFL': DeployGFL}


def deploy_layer(detector, with_nms=True):
    """The exported network of `detector` (a ppdet YOLOv3 or GFL)."""
    return DEPLOY[type(detector).__name__](detector, with_nms)
