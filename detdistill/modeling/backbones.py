"""Backbones registered with ppdet's workspace."""
from numbers import Integral

import paddle.nn.functional as F
from paddle import nn
from ppdet.core.workspace import register, serializable
from ppdet.modeling.backbones.resnet import (BasicBlock, Blocks, ConvNormLayer,
                                             NameAdapter, ResNet_cfg)
from ppdet.modeling.shape_spec import ShapeSpec

__all__ = ['ScaledResNet']


@register
@serializable
class ScaledResNet(nn.Layer):
    """ResNet-18/34 (variant b) with a width multiplier.

    ppdet's ResNet hard-codes 64/128/256/512 stage widths. A teacher that is
    deeper than the student but narrow enough to train in minutes on a CPU needs
    a width knob; with `width=1.0` the sublayers, parameter names and shapes are
    those of ppdet's ResNet, so released ResNet weights load unchanged.
    """
    __shared__ = ['norm_type']

    def __init__(self, depth=34, width=1.0, norm_type='bn', norm_decay=0.,
                 freeze_norm=False, return_idx=[1, 2, 3]):
        super().__init__()
        assert depth in (18, 34), 'ScaledResNet supports depth 18 and 34'
        if isinstance(return_idx, Integral):
            return_idx = [return_idx]
        self.depth, self.variant, self.return_idx = depth, 'b', return_idx
        na = NameAdapter(self)
        ch_in = int(64 * width)
        self.conv1 = nn.Sequential()
        self.conv1.add_sublayer(na.fix_c1_stage_name(), ConvNormLayer(
            ch_in=3, ch_out=ch_in, filter_size=7, stride=2, act='relu',
            norm_type=norm_type, norm_decay=norm_decay,
            freeze_norm=freeze_norm))
        self._out_channels = [int(c * width) for c in (64, 128, 256, 512)]
        self._out_strides = [4, 8, 16, 32]
        self.res_layers = []
        num_stages = max(return_idx) + 1
        for i in range(num_stages):
            stage = self.add_sublayer('res{}'.format(i + 2), Blocks(
                BasicBlock, ch_in, self._out_channels[i],
                count=ResNet_cfg[depth][i], name_adapter=na, stage_num=i + 2,
                norm_type=norm_type, norm_decay=norm_decay,
                freeze_norm=freeze_norm))
            self.res_layers.append(stage)
            ch_in = self._out_channels[i]

    @property
    def out_shape(self):
        return [ShapeSpec(channels=self._out_channels[i],
                          stride=self._out_strides[i]) for i in self.return_idx]

    def forward(self, inputs):
        x = F.max_pool2d(self.conv1(inputs['image']), kernel_size=3, stride=2,
                         padding=1)
        outs = []
        for idx, stage in enumerate(self.res_layers):
            x = stage(x)
            if idx in self.return_idx:
                outs.append(x)
        return outs
