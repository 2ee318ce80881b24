"""Connectors: the student's map brought to the teacher's channels and size
before a feature loss compares them (FitNets' regressor, ppdet's `align`,
Ultralytics' projector).

Per pair: a 1x1 convolution from the student's channels to the teacher's
where they differ (Kaiming-uniform weights as ppdet's FGD/MGD `align`;
optionally BatchNorm, with the conv then bias-free, and ReLU), then, where
the maps' sizes differ, a resize of its output to the teacher map's H x W:
bilinear (align_corners=False: half-pixel centres, so halving the size
averages 2x2 cells) or nearest. One op covers a stride mismatch (a
stride-8 student map paired with a stride-16 teacher map) and the
one-cell rounding of equal strides on odd input sizes. MMRazor's connectors
fix channels only (its issue #620), ppdet's `align` too; ppdet's PKD resizes
on a height mismatch only.

Connectors are built before the first step from a probe forward of both
models (pairing.probe_outputs), so the optimizer holds their parameters
from the start. They belong to the distiller, not to the student: the
trainer optimises them with the student and saves them in the checkpoint's
.pdopt; the .pdparams, which evaluation, inference and export load, holds
the student alone.
"""
import paddle
import paddle.nn.functional as F
from paddle import nn

from .pairing import PROBE_SIZE, PairingError

__all__ = ['Connector', 'build_connector']


class Connector(nn.Layer):
    """`connector(student_map, (H, W))` -> the map in the teacher's
    channels at H x W. Without a channel change it has no parameters."""

    def __init__(self, student_channels, teacher_channels, bn=False,
                 relu=False, interpolation='bilinear'):
        super().__init__()
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.interpolation = interpolation
        self.conv = self.bn = None
        self.relu = relu and student_channels != teacher_channels
        if student_channels != teacher_channels:
            self.conv = nn.Conv2D(
                student_channels, teacher_channels, 1,
                weight_attr=paddle.ParamAttr(
                    initializer=nn.initializer.KaimingUniform()),
                bias_attr=False if bn else None)
            if bn:
                self.bn = nn.BatchNorm2D(teacher_channels)

    def forward(self, x, size):
        if self.conv is not None:
            x = self.conv(x)
            if self.bn is not None:
                x = self.bn(x)
            if self.relu:
                x = F.relu(x)
        size = [int(s) for s in size]
        if list(x.shape[2:]) != size:
            x = F.interpolate(x, size=size, mode=self.interpolation,
                              align_corners=False)
        return x

    def describe(self, student_size, teacher_size):
        """What it does, for the log: '1x1 conv 128->64 + BN, resize
        bilinear' or 'none'."""
        parts = []
        if self.conv is not None:
            parts.append('1x1 conv {}->{}{}{}'.format(
                self.student_channels, self.teacher_channels,
                ' + BN' if self.bn is not None else '',
                ' + ReLU' if self.relu else ''))
        if student_size != teacher_size:
            parts.append('resize {}'.format(self.interpolation))
        return ', '.join(parts) or 'none'


def _shape(x):
    if isinstance(x, paddle.Tensor):
        return list(x.shape)
    if isinstance(x, (list, tuple)):
        return '{} of {} tensors {}'.format(type(x).__name__, len(x), [
            list(v.shape) if isinstance(v, paddle.Tensor) else type(v)
            .__name__ for v in x])
    return type(x).__name__


def build_connector(s_name, s_out, t_name, t_out, options):
    """The Connector of the pair (student layer `s_name` with probe output
    `s_out`, teacher layer `t_name` with `t_out`) with the entry's
    connector `options`; PairingError naming both layers and shapes when
    the maps cannot be aligned (not one [N, C, H, W] tensor each)."""
    if not (isinstance(s_out, paddle.Tensor) and isinstance(
            t_out, paddle.Tensor) and s_out.ndim == 4 and t_out.ndim == 4):
        raise PairingError(
            'feature pair {} -> {}: a connector maps one [N, C, H, W] map to '
            'another, but on a {} px probe image the student layer {} gives '
            '{} and the teacher layer {} gives {}. Pair layers that output '
            'one feature map each (e.g. neck.yolo_block.0.tip, not '
            'neck.yolo_block.0, which returns (route, tip))'.format(
                s_name, t_name, PROBE_SIZE, s_name, _shape(s_out), t_name,
                _shape(t_out)))
    return Connector(int(s_out.shape[1]), int(t_out.shape[1]), **options)
