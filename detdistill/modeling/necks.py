"""Necks registered with ppdet's workspace, so configs (not code) choose them."""
import paddle
import paddle.nn.functional as F
from paddle import nn
from ppdet.core.workspace import register, serializable
from ppdet.modeling.necks.yolo_fpn import ConvBNLayer, YoloDetBlock
from ppdet.modeling.shape_spec import ShapeSpec

__all__ = ['ScaledYOLOv3FPN']


@register
@serializable
class ScaledYOLOv3FPN(nn.Layer):
    """ppdet's YOLOv3FPN with a configurable width.

    YOLOv3FPN hard-codes 512/256/128 channels whatever the backbone, which makes
    a 0.25-width MobileNet no faster on CPU (the neck is most of the step). With
    `channels=512` this builds exactly YOLOv3FPN: same sublayers, same parameter
    names and shapes, so released YOLOv3 weights still load.
    """
    __shared__ = ['norm_type', 'data_format']

    def __init__(self, in_channels=[256, 512, 1024], channels=512,
                 norm_type='bn', freeze_norm=False, data_format='NCHW'):
        super().__init__()
        assert channels % 4 == 0, 'channels must be divisible by 4'
        self.data_format = data_format
        self.yolo_blocks, self.routes, self._out_channels = [], [], []
        num_blocks = len(in_channels)
        for i in range(num_blocks):
            width = channels // (2**i)
            ch_in = in_channels[-i - 1] + (width if i > 0 else 0)
            name = 'yolo_block.{}'.format(i)
            block = self.add_sublayer(name, YoloDetBlock(
                ch_in, channel=width, norm_type=norm_type,
                freeze_norm=freeze_norm, data_format=data_format, name=name))
            self.yolo_blocks.append(block)
            self._out_channels.append(width * 2)
            if i < num_blocks - 1:
                name = 'yolo_transition.{}'.format(i)
                self.routes.append(self.add_sublayer(name, ConvBNLayer(
                    ch_in=width, ch_out=width // 2, filter_size=1, stride=1,
                    padding=0, norm_type=norm_type, freeze_norm=freeze_norm,
                    data_format=data_format, name=name)))

    def forward(self, blocks, for_mot=False):
        feats = []
        route = None
        axis = 1 if self.data_format == 'NCHW' else -1
        for i, block in enumerate(blocks[::-1]):
            if i > 0:
                block = paddle.concat([route, block], axis=axis)
            route, tip = self.yolo_blocks[i](block)
            feats.append(tip)
            if i < len(self.routes):
                route = F.interpolate(self.routes[i](route), scale_factor=2.,
                                      data_format=self.data_format)
        return feats

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {'in_channels': [i.channels for i in input_shape]}

    @property
    def out_shape(self):
        return [ShapeSpec(channels=c) for c in self._out_channels]
