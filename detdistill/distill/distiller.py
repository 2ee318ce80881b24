"""The distiller: a frozen teacher, a trainable student, and the losses that
tie their paired outputs together.

Its `forward` in training mode returns the trainer's loss dict:
  loss          = det_loss + distill_loss   (what is optimised)
  det_loss      = the student's detection loss on labeled data
  distill_loss  = distill_loss_weight * sum over pairs of the loss components
  distill_<c>   = each weighted component, summed over pairs
  distill_loss_unlabeled = unlabeled_distill_weight * distill_loss_weight *
                  the same sum on the step's unlabeled batch, if any (added
                  to `loss`; an unlabeled image has no detection loss)
  teacher_loss  = the teacher's detection loss on the same batch, as a
                  LogOnly output: the trainer computes it only on logged
                  steps (it trains nothing and costs ~5 % of a step)
In eval mode it is the student, so evaluation and export see only the student.
A loss with `needs_batch = True` (LDDistill) is called once per step with
every pair's outputs and the batch (its regions come from the batch's
target assignment) instead of once per pair; it may name its own default
pairs (`default_pairs(student)`) and compute the teacher's detection loss
(`teacher_loss(teacher, outputs, inputs)`) for a head other than YOLOv3's.
"""
import collections

import paddle
from paddle import nn
from ppdet.core.workspace import create

from ..config import ConfigError, activate
from ..engine.callbacks import LogOnly
from ..logger import get_logger
from .compiled_teacher import TOLERANCE, CompiledTeacher
from .teacher_cache import build_teacher_cache
from .teacher_precision import TOLERANCE as PRECISION_TOLERANCE
from .teacher_precision import LowPrecisionTeacher, choose, parse_precision
from .pairing import (DEFAULT_PAIRS, OutputRecorder, PairingError,
                      check_names, check_shapes, check_single_calls,
                      describe_outputs)

__all__ = ['Distiller', 'build_distiller', 'LOSS_ALIASES', 'DEFAULT_WEIGHTS']

logger = get_logger()

LOSS_ALIASES = {'l2': 'L2Distill', 'fine_grained': 'FineGrainedDistill',
                'kl': 'KLDistill', 'ld': 'LDDistill'}
# L2 and fine-grained follow PaddleDetection's recipes (0.5 VOC L2: 100;
# DistillYOLOv3Loss: 1000). KL takes the fine-grained weight (its terms are
# means over the same cells); not tuned, see README. Others: 1 (LDDistill
# weighs its components itself).
DEFAULT_WEIGHTS = {'L2Distill': 100., 'FineGrainedDistill': 1000.,
                   'KLDistill': 1000.}


class Distiller(nn.Layer):
    def __init__(self, student, teacher, loss, pairs=DEFAULT_PAIRS, weight=1.,
                 unlabeled_weight=1., cache=None, compile_teacher=False,
                 precision='float32'):
        super().__init__()
        self.cache = cache  # a TeacherCache, or None
        self.student = student
        self.teacher = teacher
        self.distill_loss = loss
        self.pairs = [tuple(p) for p in pairs]
        self.weight = float(weight)
        self.unlabeled_weight = float(unlabeled_weight)
        self._checked = False
        check_names(student, [s for s, _ in self.pairs], 'the student')
        check_names(teacher, [t for _, t in self.pairs], 'the teacher')
        for p in teacher.parameters():
            p.stop_gradient = True
        teacher.eval()
        how, compile_teacher = choose(precision, compile_teacher)
        self.low_precision = LowPrecisionTeacher(
            teacher, precision, self._eager_teacher_forward
        ) if how in ('amp', 'emulated') else None
        bf16 = how == 'onednn'  # bfloat16 in the compiled teacher
        self.compiled = CompiledTeacher(
            teacher, [t for _, t in self.pairs], self._eager_teacher_forward,
            tolerance=PRECISION_TOLERANCE['bfloat16'] if bf16 else TOLERANCE,
            bfloat16=bf16) if compile_teacher else None

    def train(self):
        # The trainer calls train() every epoch; the teacher stays in eval mode
        # so its BatchNorm statistics never move.
        super().train()
        self.teacher.eval()
        return self

    def teacher_outputs(self, inputs):
        """The teacher's paired outputs, from an inference forward that stops
        after the last paired layer (no post-process, no NMS), or from the
        teacher cache for images it has seen."""
        if self.cache is not None:
            return self.cache.outputs(inputs, self._teacher_forward)
        return self._teacher_forward(inputs)

    def epoch_summary(self):
        """One log line at each epoch end (the trainer asks)."""
        return self.cache.summary() if self.cache is not None else None

    def _teacher_forward(self, inputs):
        if self.compiled is not None:
            return self.compiled(inputs)
        if self.low_precision is not None:
            return self.low_precision(inputs)
        return self._eager_teacher_forward(inputs)

    def _eager_teacher_forward(self, inputs):
        with paddle.no_grad(), OutputRecorder(
                self.teacher, [t for _, t in self.pairs],
                stop_when_done=True) as rec:
            self.teacher(inputs)
        return rec.outputs

    def student_outputs(self, inputs):
        """The student's paired outputs from a training-mode forward that
        stops after the last paired layer: the detection loss, which needs
        ground truth, is never reached. Unlike the teacher's, this forward
        keeps its graph (gradients) and BatchNorm in training mode, exactly
        as on labeled images; and it needs no knowledge of the architecture
        (which submodules to call in which order)."""
        with OutputRecorder(self.student, [s for s, _ in self.pairs],
                            stop_when_done=True) as rec:
            self.student(inputs)
        return rec.outputs

    def forward(self, inputs, unlabeled=None):
        if not self.training:
            return self.student(inputs)
        with OutputRecorder(self.student, [s for s, _ in self.pairs]) as rec:
            det = self.student(inputs)
        t_out = self.teacher_outputs(inputs)
        if not self._checked:
            check_single_calls(rec, 'the student')
            self._check(rec.outputs, t_out, inputs)
        parts = self.distill_parts(rec.outputs, t_out, inputs)
        out = collections.OrderedDict()
        distill = self.weight * paddle.add_n(list(parts.values()))
        out['loss'] = det['loss'] + distill
        out['det_loss'] = det['loss']
        out['distill_loss'] = distill
        if unlabeled is not None:
            parts_u = self.distill_parts(self.student_outputs(unlabeled),
                                         self.teacher_outputs(unlabeled))
            distill_u = self.unlabeled_weight * self.weight * paddle.add_n(
                list(parts_u.values()))
            out['loss'] = out['loss'] + distill_u
            out['distill_loss_unlabeled'] = distill_u
        for k, v in parts.items():
            out['distill_' + k] = self.weight * v.detach()
        for k, v in det.items():
            if k != 'loss':
                out[k] = v
        out['teacher_loss'] = LogOnly(
            lambda: self._teacher_loss(t_out, inputs))
        return out

    def distill_parts(self, s_out, t_out, inputs=None):
        """Loss components summed over the pairs (unweighted by
        distill_loss_weight)."""
        if getattr(self.distill_loss, 'needs_batch', False):
            return self.distill_loss([s_out[s] for s, _ in self.pairs],
                                     [t_out[t] for _, t in self.pairs],
                                     inputs)
        parts = collections.OrderedDict()
        for s, t in self.pairs:
            for k, v in self.distill_loss(s_out[s], t_out[t]).items():
                parts[k] = parts[k] + v if k in parts else v
        return parts

    def _teacher_loss(self, t_out, inputs):
        if hasattr(self.distill_loss, 'teacher_loss'):
            return self.distill_loss.teacher_loss(
                self.teacher, [t_out[t] for _, t in self.pairs], inputs)
        head = getattr(self.teacher, 'yolo_head', None)
        names = ['yolo_head.yolo_output.{}'.format(i) for i in range(3)]
        if head is None or any(n not in t_out for n in names):
            return None
        with paddle.no_grad():
            return head.loss([t_out[n] for n in names], inputs,
                             head.anchors)['loss']

    def _check(self, s_out, t_out, inputs):
        missing = [s for s, _ in self.pairs if s not in s_out] + \
            [t for _, t in self.pairs if t not in t_out]
        if missing:
            raise PairingError('paired layers produced no output in the '
                               'forward: {}'.format(', '.join(missing)))
        try:
            check_shapes(self.pairs, s_out, t_out)
        except PairingError as e:
            raise PairingError('{}\n  student outputs: {}\n  teacher outputs: '
                               '{}'.format(e, '; '.join(describe_outputs(
                                   self.student, inputs)), '; '.join(
                                   describe_outputs(self.teacher, inputs)))
                               ) from None
        self._checked = True


def build_distiller(cfg, student, teacher):
    """Read the distillation settings of the student config `cfg`:
    use_fine_grained_loss (the seeds' switch), distill_loss (l2 | fine_grained
    | kl, or a registered loss class), distill_loss_weight, distill_pairs,
    temperature, unlabeled_distill_weight, teacher_cache, teacher_cache_mb,
    teacher_compile, teacher_precision."""
    asked = cfg.get('distill_loss')
    name = LOSS_ALIASES.get(asked, asked)
    if cfg.get('use_fine_grained_loss'):
        if name not in (None, 'FineGrainedDistill'):
            raise ConfigError(
                'use_fine_grained_loss=true asks for the fine-grained loss '
                'but distill_loss={} asks for another: set one of '
                'them'.format(asked))
        name = 'FineGrainedDistill'
    name = name or 'L2Distill'
    weight = cfg.get('distill_loss_weight', DEFAULT_WEIGHTS.get(name, 1.))
    with activate(cfg):
        loss = create(name)
    if cfg.get('temperature') is not None:
        if not hasattr(loss, 'temperature'):
            raise ConfigError(
                'temperature (--temperature) softens the kl and ld losses '
                'only; this run uses {} (distill_loss=kl or ld to use '
                'it)'.format(name))
        try:
            loss.temperature = cfg['temperature']
        except ValueError as e:
            raise ConfigError(str(e)) from None
    pairs = cfg.get('distill_pairs') or (
        loss.default_pairs(student) if hasattr(loss, 'default_pairs')
        else DEFAULT_PAIRS)
    logger.info('Distillation: {} x {} on {} pairs ({})'.format(
        name, weight, len(pairs), ', '.join(
            s if s == t else '{}<-{}'.format(s, t) for s, t in pairs)))
    unlabeled_weight = cfg.get('unlabeled_distill_weight', 1.)
    if not isinstance(unlabeled_weight, (int, float)) or unlabeled_weight < 0:
        raise ConfigError('unlabeled_distill_weight must be a number >= 0, '
                          'got {!r}'.format(unlabeled_weight))
    if getattr(loss, 'needs_batch', False) and (
            cfg.get('unlabeled_list') or cfg.get('unlabeled_dir')):
        raise ConfigError(
            '{} distills regions chosen from the ground truth (positive '
            'and valuable localization locations): unlabeled images '
            '(unlabeled_list, unlabeled_dir) have none'.format(name))
    # On by default: the teacher forward in about a quarter of the eager
    # time on CPU, checked against the eager one at start-up
    # (compiled_teacher.py, benchmark/TEACHER_SPEED.md).
    compile_teacher = cfg.get('teacher_compile', True)
    if compile_teacher not in (True, False):
        raise ConfigError('teacher_compile must be true or false, got '
                          '{!r}'.format(compile_teacher))
    return Distiller(student, teacher, loss, pairs, weight, unlabeled_weight,
                     build_teacher_cache(cfg), compile_teacher,
                     parse_precision(cfg))
