"""Which outputs of the teacher and the student are distilled: pairs of
sublayer names, captured with forward hooks (MMRazor's recorders, by name).

The default pairs are the YOLO head's raw output convolutions, which have the
same names in every ppdet YOLOv3. A config can name others as
`distill_pairs: [[student_name, teacher_name], ...]`.

PaddleSlim's dygraph `Distill` pairs named sublayers the same way, but it owns
the training forward (it returns the student's and teacher's outputs and the
losses together), always runs the teacher's full forward (YOLOv3 post-process
and NMS included) and reports a bad name as a bare KeyError. Recording here
stops the teacher's forward as soon as its last paired layer has produced its
output, and name and shape errors list what both models offer.
"""
import paddle
from paddle import nn

__all__ = ['DEFAULT_PAIRS', 'PairingError', 'OutputRecorder', 'check_names',
           'check_shapes', 'describe_outputs']

DEFAULT_PAIRS = [('yolo_head.yolo_output.{}'.format(i),) * 2 for i in range(3)]


class PairingError(ValueError):
    pass


class _Done(Exception):
    """Raised by the last hook to skip the rest of the teacher's forward."""


class OutputRecorder:
    """`with OutputRecorder(model, names) as rec: model(x)` fills
    `rec.outputs[name]`. With `stop_when_done=True` the forward ends as soon
    as every name has been recorded (the model's return value is then lost)."""

    def __init__(self, model, names, stop_when_done=False):
        layers = dict(model.named_sublayers())
        self.layers = {n: layers[n] for n in names}
        self.stop_when_done = stop_when_done
        self.outputs = {}

    def __enter__(self):
        self.outputs = {}
        self.handles = [layer.register_forward_post_hook(self._hook(name))
                        for name, layer in self.layers.items()]
        return self

    def _hook(self, name):
        def hook(layer, inputs, output):
            self.outputs[name] = output
            if self.stop_when_done and len(self.outputs) == len(self.layers):
                raise _Done()
        return hook

    def __exit__(self, exc_type, exc, tb):
        for h in self.handles:
            h.remove()
        return exc_type is _Done  # swallow only our own early stop


def check_names(model, names, role):
    """Every paired name must be a sublayer of `model`."""
    layers = dict(model.named_sublayers())
    missing = [n for n in names if n not in layers]
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
