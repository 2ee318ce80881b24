"""Which outputs of the teacher and the student are distilled: pairs of
sublayer names, captured with forward hooks (MMRazor's recorders, by name).

The default pairs are the YOLO head's raw output convolutions, which have the
same names in every ppdet YOLOv3 (a loss may name its own: `LDDistill`'s are
the GFL head's; a feature loss's are the necks' outputs, paired by stride,
`neck_levels`). A config can name others as
`Distill.losses.<name>.pairs: [[student_name, teacher_name], ...]`.

A layer that runs several times in one forward (a GFL head's classifier is
one convolution shared by every pyramid level) is named per call:
`head.gfl_head_cls#2` is the output of its third call. A plain name of such a
layer is an error at the first step, since it would silently pair one level.

PaddleSlim's dygraph `Distill` pairs named sublayers the same way, but it owns
the training forward (it returns the student's and teacher's outputs and the
losses together), always runs the teacher's full forward (YOLOv3 post-process
and NMS included) and reports a bad name as a bare KeyError. Recording here
stops the teacher's forward as soon as its last paired layer has produced its
output, and name and shape errors list what both models offer.
"""
import paddle
from paddle import nn

from ..errors import PairingError

__all__ = ['DEFAULT_PAIRS', 'PROBE_SIZE', 'PairingError', 'OutputRecorder',
           'check_names', 'check_shapes', 'check_single_calls',
           'describe_outputs', 'split_name', 'probe_outputs', 'neck_levels',
           'pairs_by_stride']

DEFAULT_PAIRS = [('yolo_head.yolo_output.{}'.format(i),) * 2 for i in range(3)]
# The side of the blank image whose forward tells the paired maps' channels
# and strides before training: a multiple of 128, the largest stride of
# common pyramids.
PROBE_SIZE = 256


class _Done(Exception):
    """Raised by the last hook to skip the rest of the teacher's forward."""


def split_name(name):
    """'layer#k' -> ('layer', k); 'layer' -> ('layer', None)."""
    layer, sep, call = name.partition('#')
    if not sep:
        return name, None
    if not call.isdigit():
        raise PairingError("'{}': the part after '#' must be a call index "
                           "(0, 1, ...)".format(name))
    return layer, int(call)


class OutputRecorder:
    """`with OutputRecorder(model, names) as rec: model(x)` fills
    `rec.outputs[name]` (for 'layer#k', the k-th call's output; for a plain
    name, the latest call's) and `rec.calls[layer]`. With
    `stop_when_done=True` the forward ends as soon as every name has been
    recorded (the model's return value is then lost)."""

    def __init__(self, model, names, stop_when_done=False):
        layers = dict(model.named_sublayers())
        self.names = list(dict.fromkeys(names))
        self.wanted = {}  # layer name -> {call index or None: output name}
        for n in self.names:
            layer, call = split_name(n)
            self.wanted.setdefault(layer, {})[call] = n
        self.layers = {n: layers[n] for n in self.wanted}
        self.stop_when_done = stop_when_done
        self.outputs = {}
        self.calls = {}

    def __enter__(self):
        self.outputs = {}
        self.calls = {n: 0 for n in self.layers}
        self.handles = [layer.register_forward_post_hook(self._hook(name))
                        for name, layer in self.layers.items()]
        return self

    def _hook(self, layer_name):
        wanted = self.wanted[layer_name]

        def hook(layer, inputs, output):
            call = self.calls[layer_name]
            self.calls[layer_name] = call + 1
            for key in (None, call):
                if key in wanted:
                    self.outputs[wanted[key]] = output
            if self.stop_when_done and len(self.outputs) == len(self.names):
                raise _Done()
        return hook

    def __exit__(self, exc_type, exc, tb):
        for h in self.handles:
            h.remove()
        return exc_type is _Done  # swallow only our own early stop


def check_names(model, names, role):
    """Every paired name must be a sublayer of `model`."""
    layers = dict(model.named_sublayers())
    missing = [n for n in names if split_name(n)[0] not in layers]
    if missing:
        convs = [n for n, layer in layers.items()
                 if isinstance(layer, nn.Conv2D)]
        raise PairingError(
            '{} has no sublayer named {}. Its last convolutions are: {}. Set '
            'distill_pairs: [[student_name, teacher_name], ...] in the '
            'config.'.format(role, ', '.join(missing), ', '.join(convs[-8:])))


def describe_outputs(model, inputs):
    """'name: shape' of every Conv2D output in an eval forward, for error
    messages."""
    convs = [n for n, layer in model.named_sublayers()
             if isinstance(layer, nn.Conv2D)]
    was_training = model.training
    model.eval()
    with paddle.no_grad(), OutputRecorder(model, convs) as rec:
        model(inputs)
    if was_training:
        model.train()
    return ['{}: {}'.format(n, list(rec.outputs[n].shape)) for n in convs
            if n in rec.outputs][-8:]


def check_single_calls(recorder, role):
    """A plain name must be a layer that runs once per forward."""
    shared = ['{} ({} calls)'.format(n, recorder.calls[n])
              for n, wanted in recorder.wanted.items()
              if None in wanted and recorder.calls.get(n, 0) > 1]
    if shared:
        raise PairingError(
            'in {}, {} run(s) several times per forward (a layer shared by '
            'the pyramid levels): name each call, e.g. {}#0 for the first'
            .format(role, ', '.join(shared), shared[0].split(' ')[0]))


def check_shapes(pairs, student_out, teacher_out):
    """Logit losses compare element by element: shapes must be equal (same
    anchors, classes and strides in both heads)."""
    bad = ['{} {} vs {} {}'.format(s, list(student_out[s].shape), t,
                                   list(teacher_out[t].shape))
           for s, t in pairs
           if list(student_out[s].shape) != list(teacher_out[t].shape)]
    if bad:
        raise PairingError(
            'paired outputs differ in shape (student vs teacher): {}. The '
            'teacher and student need the same anchors, classes and strides '
            'for logit distillation.'.format('; '.join(bad)))


def probe_outputs(model, names, size=PROBE_SIZE):
    """{name: output} of an eval-mode forward of `model` on one blank
    `size` x `size` image, stopped after the last name: no gradient, no
    BatchNorm statistics updated, no random numbers drawn."""
    inputs = {'image': paddle.zeros([1, 3, size, size]),
              'im_shape': paddle.to_tensor([[size, size]], 'float32'),
              'scale_factor': paddle.ones([1, 2], 'float32')}
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad(), OutputRecorder(model, names,
                                              stop_when_done=True) as rec:
            model(inputs)
    finally:
        if was_training:
            model.train()
    return rec.outputs


def neck_levels(model, role):
    """{stride: name of the layer that outputs the neck's map at that
    stride}, deepest level last: ppdet's FPN (GFL, FCOS, RetinaNet: its
    `fpn_convs`, strides from `spatial_scales`) and the YOLOv3 necks
    (YOLOv3FPN, ScaledYOLOv3FPN: each `yolo_block`'s `tip`, whose output is
    the level's map, strides from the head's loss `downsample`, default
    32, 16, 8). PairingError for another neck: name the pairs."""
    neck = getattr(model, 'neck', None)
    names = {id(layer): 'neck.' + n for n, layer in
             (neck.named_sublayers() if neck is not None else [])}
    if hasattr(neck, 'fpn_convs') and hasattr(neck, 'spatial_scales'):
        levels = {int(round(1. / s)): names[id(conv)] for s, conv in
                  zip(neck.spatial_scales, neck.fpn_convs)}
    elif hasattr(neck, 'yolo_blocks'):
        loss = getattr(getattr(model, 'yolo_head', None), 'loss', None)
        strides = list(getattr(loss, 'downsample', [32, 16, 8]))
        levels = {stride: names[id(block.tip)] for stride, block in
                  zip(strides, neck.yolo_blocks)}
    else:
        raise PairingError(
            '{} has a neck ({}) whose levels are not known here (ppdet FPN '
            'and the YOLOv3 necks are): name the feature pairs in '
            'Distill.losses.<name>.pairs'.format(role, type(neck).__name__))
    return dict(sorted(levels.items()))


def pairs_by_stride(student, teacher):
    """[(student layer, teacher layer)] of the neck levels both models have
    at the same stride, finest first: a GFL teacher's FPN pairs with a
    YOLOv3 student's neck (and back) as well as with another GFL's."""
    s, t = neck_levels(student, 'the student'), neck_levels(teacher,
                                                            'the teacher')
    common = [stride for stride in s if stride in t]
    if not common:
        raise PairingError(
            'the student\'s neck has strides {} and the teacher\'s {}: no '
            'level to pair; name the pairs in Distill.losses.<name>.pairs'
            .format(sorted(s), sorted(t)))
    return [(s[stride], t[stride]) for stride in common]
