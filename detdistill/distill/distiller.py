"""The distiller: a trainable student, a frozen Teacher, and the losses of
the Distill block (settings.py) that tie their paired outputs together.

Its `forward(batch)` in training mode returns the trainer's loss dict:
  loss          = det_loss + distill_loss   (what is optimised)
  det_loss      = the student's detection loss on labeled data
  distill_loss  = sum over losses of weight x its components summed over
                  its pairs
  distill_<c>   = each weighted component (distill_<loss>_<c> when the
                  block lists several losses)
  distill_loss_unlabeled = Distill.unlabeled.weight x the same sum on the
                  step's unlabeled batch, if the batch is a (labeled,
                  unlabeled) pair (added to `loss`; an unlabeled image has
                  no detection loss)
  teacher_loss  = the teacher's detection loss on the same batch, as a
                  LogOnly output: the trainer computes it only on logged
                  steps (it trains nothing and costs ~5 % of a step)
In eval mode it is the student, so evaluation and export see only the
student.

Feature losses (feature_losses.py) get a connector per pair
(connectors.py), built here from a probe forward of both models, and may
own trainable parts (MGD's generation blocks, FGD's GcBlocks). Both live
in `extra`, which the trainer optimises with the student and saves in the
checkpoint's .pdopt (never in the .pdparams: the student's alone).
"""
import collections
import difflib

import paddle
from paddle import nn
from ppdet.core import workspace
from ppdet.core.workspace import create

from ..config import activate
from ..engine.callbacks import LogOnly
from ..errors import ConfigError, PairingError
from ..logger import get_logger
from .connectors import build_connector
from .losses import DistillLoss
from .pairing import (PROBE_SIZE, OutputRecorder, check_names, check_shapes,
                      check_single_calls, describe_outputs, probe_outputs)
from .settings import LOSS_TYPES, distill_settings
from .teacher import Teacher

__all__ = ['Distiller', 'build_distiller', 'build_losses',
           'build_distill_trainer']

logger = get_logger()


class _Loss:
    """A Distill.losses entry, built: its module, its pairs, and (a feature
    loss, once the distiller has built them) a connector per pair."""

    def __init__(self, entry, module, pairs):
        self.name, self.weight, self.ratio = entry.name, entry.weight, \
            entry.ratio
        self.module, self.pairs = module, pairs
        self.entry = entry
        self.connectors = None

    def weight_for(self, raw, det):
        """The step's weight: the fixed one, or for `auto` ratio x det /
        raw (both detached), so that the weighted term equals ratio x the
        detection loss and its gradient is ratio x det x grad log(raw): the
        pull towards the teacher scales with the detection loss, whatever
        the size of the distillation loss on this data."""
        if self.weight != 'auto':
            return self.weight
        return self.ratio * det.detach() / paddle.clip(raw.detach(),
                                                       min=1e-12)

    def pair_list(self):
        if isinstance(self.pairs, dict):
            return [p for group in self.pairs.values() for p in group]
        return list(self.pairs)


class Distiller(nn.Layer):
    def __init__(self, student, teacher, losses, unlabeled_weight=1.):
        super().__init__()
        self.student = student
        self.teacher = teacher  # a Teacher: not a sublayer, never trained
        self.losses = losses
        self.unlabeled_weight = float(unlabeled_weight)
        pairs = [p for loss in losses for p in loss.pair_list()]
        self.student_names = list(dict.fromkeys(s for s, _ in pairs))
        check_names(student, self.student_names, 'the student')
        check_names(teacher.model, [t for _, t in pairs], 'the teacher')
        _connect([loss for loss in losses if loss.module.connects], student,
                 teacher.model)
        # Trained and saved beside the student, never part of it: the
        # connectors and the losses' own parameters.
        self.extra = nn.LayerDict({
            'connectors': nn.LayerDict({loss.name: loss.connectors
                                        for loss in losses
                                        if loss.connectors is not None}),
            'losses': nn.LayerDict({loss.name: loss.module
                                    for loss in losses})})
        self._checked = False

    def student_outputs(self, inputs):
        """The student's paired outputs from a training-mode forward that
        stops after the last paired layer: the detection loss, which needs
        ground truth, is never reached. Unlike the teacher's, this forward
        keeps its graph (gradients) and BatchNorm in training mode, exactly
        as on labeled images; and it needs no knowledge of the architecture
        (which submodules to call in which order)."""
        with OutputRecorder(self.student, self.student_names,
                            stop_when_done=True) as rec:
            self.student(inputs)
        return rec.outputs

    def forward(self, batch):
        labeled, unlabeled = batch if isinstance(batch, tuple) else \
            (batch, None)
        if not self.training:
            return self.student(labeled)
        with OutputRecorder(self.student, self.student_names) as rec:
            det = self.student(labeled)
        t_out = self.teacher.outputs(labeled)
        if not self._checked:
            check_single_calls(rec, 'the student')
            self._check(rec.outputs, t_out, labeled)
        raw = self.raw_parts(rec.outputs, t_out, labeled)
        weights = [loss.weight_for(paddle.add_n(list(p.values())), det['loss'])
                   for loss, p in zip(self.losses, raw)]
        parts = self.weighted_parts(raw, weights)
        out = collections.OrderedDict()
        distill = paddle.add_n([total for total, _ in parts])
        out['loss'] = det['loss'] + distill
        out['det_loss'] = det['loss']
        out['distill_loss'] = distill
        if unlabeled is not None:
            # no detection loss there: the labeled step's weights
            parts_u = self.weighted_parts(self.raw_parts(
                self.student_outputs(unlabeled),
                self.teacher.outputs(unlabeled)), weights,
                scale=self.unlabeled_weight)
            distill_u = paddle.add_n([total for total, _ in parts_u])
            out['loss'] = out['loss'] + distill_u
            out['distill_loss_unlabeled'] = distill_u
        for _, logged in parts:
            out.update(logged)
        for k, v in det.items():
            if k != 'loss':
                out[k] = v
        out['teacher_loss'] = LogOnly(
            lambda: self._teacher_loss(t_out, labeled))
        return out

    def raw_parts(self, s_out, t_out, inputs=None):
        """Per loss, its unweighted components on the recorded outputs."""
        return [loss.module.components(loss.pairs, s_out, t_out, inputs,
                                       loss.connectors)
                for loss in self.losses]

    def weighted_parts(self, raw, weights, scale=1.):
        """Per loss: (scale x weight x the sum of its components `raw`, and
        each weighted component, detached, under its log name; for an
        `auto` weight also the weight itself)."""
        out = []
        prefix = len(self.losses) > 1
        for loss, parts, weight in zip(self.losses, raw, weights):
            name = 'distill_' + (loss.name + '_' if prefix else '')
            w = scale * weight
            logged = collections.OrderedDict(
                (name + k, weight * v.detach()) for k, v in parts.items())
            if loss.weight == 'auto':
                logged[name + 'weight'] = weight
            out.append((w * paddle.add_n(list(parts.values())), logged))
        return out

    def _teacher_loss(self, t_out, inputs):
        for loss in self.losses:
            value = loss.module.teacher_loss(self.teacher.model, t_out,
                                             inputs)
            if value is not None:
                return value
        return None

    def _check(self, s_out, t_out, inputs):
        pairs = [p for loss in self.losses for p in loss.pair_list()]
        missing = [s for s, _ in pairs if s not in s_out] + \
            [t for _, t in pairs if t not in t_out]
        if missing:
            raise PairingError('paired layers produced no output in the '
                               'forward: {}'.format(', '.join(missing)))
        try:  # feature pairs: aligned by their connectors
            check_shapes([p for loss in self.losses if not loss.module.connects
                          for p in loss.pair_list()], s_out, t_out)
        except PairingError as e:
            raise PairingError('{}\n  student outputs: {}\n  teacher outputs: '
                               '{}'.format(e, '; '.join(describe_outputs(
                                   self.student, inputs)), '; '.join(
                                   describe_outputs(self.teacher.model,
                                                    inputs)))) from None
        self._checked = True


def _connect(losses, student, teacher):
    """Each feature loss's connectors and per-pair parts, from the channels
    and sizes of a probe forward of both models: built before the trainer
    builds its optimizer, which then trains them from the first step."""
    if not losses:
        return
    s_out = probe_outputs(student, [s for loss in losses
                                    for s, _ in loss.pairs])
    t_out = probe_outputs(teacher, [t for loss in losses
                                    for _, t in loss.pairs])
    missing = [s for loss in losses for s, _ in loss.pairs
               if s not in s_out] + [t for loss in losses
                                     for _, t in loss.pairs if t not in t_out]
    if missing:
        raise PairingError('paired layers produced no output in the '
                           'forward: {}'.format(', '.join(missing)))
    for loss in losses:
        connectors = []
        for s, t in loss.pairs:
            c = build_connector(s, s_out[s], t, t_out[t],
                                loss.entry.connector)
            connectors.append(c)
            s_size, t_size = list(s_out[s].shape[2:]), list(t_out[t].shape[2:])
            logger.info('  {}: {} [{} ch, stride {:g}] -> {} [{} ch, stride '
                        '{:g}]: connector {}'.format(
                            loss.name, s, s_out[s].shape[1],
                            PROBE_SIZE / s_size[0], t, t_out[t].shape[1],
                            PROBE_SIZE / t_size[0],
                            c.describe(s_size, t_size)))
        loss.connectors = nn.LayerList(connectors)
        loss.module.build([int(t_out[t].shape[1]) for _, t in loss.pairs])


def _pairs(entry, module, student, teacher):
    """The entry's pairs (config), else the loss's own, in the shape the
    loss takes: [[s, t], ...], or {group: [[s, t], ...]}."""
    pairs = entry.pairs if entry.pairs is not None else \
        module.default_pairs(student, teacher)
    where = 'Distill.losses.{}.pairs'.format(entry.name)
    if module.groups is None:
        if not isinstance(pairs, (list, tuple)) or not pairs:
            raise ConfigError('{} must be a list of [student_layer, '
                              'teacher_layer], got {!r}'.format(where, pairs))
        groups = {None: pairs}
    else:
        if not isinstance(pairs, dict) or set(pairs) != set(module.groups):
            raise ConfigError('{} must map {} to lists of [student_layer, '
                              'teacher_layer], got {!r}'.format(
                                  where, ' and '.join(module.groups), pairs))
        groups = pairs
    out = {}
    for g, group in groups.items():
        if not isinstance(group, (list, tuple)) or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 and
                all(isinstance(n, str) for n in p) for p in group):
            raise ConfigError('{} must list [student_layer, teacher_layer] '
                              'pairs, got {!r}'.format(where, group))
        out[g] = [tuple(p) for p in group]
    return out[None] if module.groups is None else out


def build_losses(cfg, settings, student, teacher):
    """The loss modules of `settings.losses` (DistillLoss classes registered
    with ppdet; options from the entry, num_classes from the config), with
    their pairs (defaults from both models)."""
    built = []
    registered = workspace.get_registered_modules()
    for entry in settings.losses:
        where = 'Distill.losses.{}'.format(entry.name)
        schema = registered.get(entry.type)
        if schema is None:
            raise ConfigError("{}: unknown loss type '{}' (known: {})".format(
                where, entry.type, ', '.join(LOSS_TYPES)))
        for key in entry.options:
            if key not in schema.schema:
                hint = difflib.get_close_matches(key, list(schema.schema), 1)
                raise ConfigError("{}: {} has no option '{}'{}".format(
                    where, entry.type, key, " (did you mean '{}'?)".format(
                        hint[0]) if hint else ''))
        with activate(dict(cfg, **{entry.type: entry.options})):
            try:
                module = create(entry.type)
            except (TypeError, ValueError) as e:
                raise ConfigError('{} ({}): {}'.format(where, entry.type,
                                                       e)) from None
        if not isinstance(module, DistillLoss):
            raise ConfigError('Distill.losses.{}: {} is not a DistillLoss '
                              '(detdistill/distill/losses.py)'.format(
                                  entry.name, entry.type))
        if entry.connector_declared and not module.connects:
            raise ConfigError(
                '{}.connector: {} compares head outputs element by element '
                'and takes no connector (feature losses do: mimic, cwd, pkd, '
                'mgd, fgd)'.format(where, entry.type))
        built.append(_Loss(entry, module, _pairs(entry, module, student,
                                                 teacher)))
    return built


def build_distiller(cfg, student, teacher, settings=None):
    """The distiller of the student config `cfg` (its Distill block) for
    `student` and the teacher model `teacher` (weights loaded)."""
    settings = settings or distill_settings(cfg)
    for notice in settings.notices:
        logger.warning(notice)
    losses = build_losses(cfg, settings, student, teacher)
    for loss in losses:
        logger.info('Distillation: {} x {} on {} pairs ({})'.format(
            type(loss.module).__name__, loss.entry.describe_weight(),
            len(loss.pair_list()),
            ', '.join(s if s == t else '{}<-{}'.format(s, t)
                      for s, t in loss.pair_list())))
        if loss.module.needs_labels and settings.has_unlabeled:
            raise ConfigError(
                '{} distills regions chosen from the ground truth: unlabeled '
                'images (Distill.unlabeled) have none'.format(
                    type(loss.module).__name__))
    names = [t for loss in losses for _, t in loss.pair_list()]
    return Distiller(student, Teacher(teacher, names, settings.teacher,
                                      cfg.get('TrainReader')),
                     losses, settings.unlabeled['weight'])


def build_distill_trainer(cfg, student, teacher):
    """What distill.py trains: the distiller of `cfg`'s Distill block, the
    training loader (with the block's unlabeled images, if any) and a
    Trainer that evaluates and saves the student alone, and optimises it
    with the distiller's `extra` layers (connectors), kept in the .pdopt."""
    from ..data.build import build_train_loader
    from ..engine import Trainer
    settings = distill_settings(cfg)
    distiller = build_distiller(cfg, student, teacher, settings)
    loader = build_train_loader(
        cfg, settings.unlabeled if settings.has_unlabeled else None)
    return Trainer(cfg, model=distiller, detector=student, loader=loader,
                   extra=distiller.extra)
