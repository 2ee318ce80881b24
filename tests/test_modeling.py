"""Our registered components reproduce ppdet's originals at their defaults
(same parameter names and shapes, so released weights load), and the demo
widths are what the configs say."""
import math

import paddle
from ppdet.modeling.backbones.resnet import ResNet
from ppdet.modeling.heads.yolo_head import YOLOv3Head
from ppdet.modeling.necks.yolo_fpn import YOLOv3FPN

from detdistill.modeling.backbones import ScaledResNet
from detdistill.modeling.heads import PriorYOLOv3Head
from detdistill.modeling.necks import ScaledYOLOv3FPN


def _shapes(layer):
    return {k: list(v.shape) for k, v in layer.state_dict().items()}


def test_scaled_fpn_at_512_is_yolov3fpn():
    a = ScaledYOLOv3FPN(in_channels=[128, 256, 512], channels=512)
    b = YOLOv3FPN(in_channels=[128, 256, 512])
    assert _shapes(a) == _shapes(b)
    x = [paddle.randn([1, c, s, s]) for c, s in ((128, 8), (256, 4), (512, 2))]
    a.set_state_dict(b.state_dict())
    a.eval(), b.eval()
    for fa, fb in zip(a(x), b(x)):
        assert paddle.allclose(fa, fb).item()


def test_scaled_resnet_at_width_1_is_resnet34():
    a = ScaledResNet(depth=34, width=1.0)
    b = ResNet(depth=34, return_idx=[1, 2, 3], freeze_at=-1,
               freeze_norm=False, norm_decay=0.)
    assert _shapes(a) == _shapes(b)
    assert [s.channels for s in a.out_shape] == [128, 256, 512]
    assert [s.channels for s in ScaledResNet(34, 0.25).out_shape] == \
        [32, 64, 128]


def test_prior_head_only_changes_the_objectness_bias():
    a = PriorYOLOv3Head(in_channels=[64, 32, 16], num_classes=6,
                        obj_prior=0.01)
    b = YOLOv3Head(in_channels=[64, 32, 16], num_classes=6)
    assert _shapes(a) == _shapes(b)
    bias = a.yolo_outputs[0].bias.numpy().reshape(3, 11)
    assert abs(bias[0, 4] - math.log(0.01 / 0.99)) < 1e-5
    assert abs(bias[:, [0, 1, 2, 3, 5]]).max() == 0
