"""The two ways to an INT8 student, as tools/quantize.py runs them.

PTQ: float student -> observers -> calibration on the first N training
images -> INT8 network (convert) -> OUT/int8.pdparams.

QAT: float student -> fake quantization in training -> the project's
distillation loop (Distiller, Trainer: checkpoints, -r resume, logs, --eval)
with a teacher that is, by default, the float student itself (as
PaddleSlim's ACT distils a quantized model from its float original), or any
teacher config and weights -> INT8 network of the last weights ->
OUT/int8.pdparams. Checkpoints hold the fake-quantized model's state (its
weights and quantizer scales), so a resumed run continues exactly.
"""
import copy
import os

import paddle

from ..engine.checkpoint import atomic_save
from ..logger import get_logger
from .calibrate import calibrate, calibration_batches
from .prepare import convert, prepare

__all__ = ['output_dir', 'save_int8', 'run_ptq', 'build_qat_trainer',
           'finish_qat']

logger = get_logger()
INT8_NAME = 'int8'


def output_dir(cfg, mode):
    """save_dir/<config name>_<mode>: beside, never inside, the float
    student's own run folder."""
    return os.path.join(cfg.get('save_dir', 'output'),
                        '{}_{}'.format(cfg['filename'], mode))


def save_int8(model, out_dir):
    """OUT/int8.pdparams (atomic): what tools/eval.py, export_model.py and
    infer.py load as -o weights=OUT/int8."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, INT8_NAME + '.pdparams')
    atomic_save(model.state_dict(), path)
    logger.info('INT8 student: {}'.format(path))
    return path


def run_ptq(cfg, student, num_images):
    """Calibrate `student` (float weights loaded) on `num_images` training
    images; returns (INT8 network, path of its checkpoint)."""
    student.eval()
    batches = calibration_batches(cfg, num_images)
    qmodel = prepare(student, 'ptq')
    calibrate(qmodel, batches)
    int8 = convert(student, qmodel)
    return int8, save_int8(int8, output_dir(cfg, 'ptq'))


def build_qat_trainer(cfg, student, teacher=None, distill=True):
    """The distillation trainer of the fake-quantized `student` (float
    weights loaded); `teacher`: a loaded detector, default a frozen copy of
    the float student. `distill=False`: the detection loss alone (the
    comparison ACT users cannot make). Outputs go to output_dir(cfg,
    'qat')."""
    from ..distill.distiller import build_distill_trainer
    from ..engine import Trainer
    qat_cfg = dict(cfg, filename=os.path.basename(output_dir(cfg, 'qat')))
    if not distill:
        logger.info('QAT without distillation: the detection loss alone')
        qmodel = prepare(student, 'qat')
        trainer = Trainer(qat_cfg, model=qmodel)
        trainer.float_student = student
        return trainer
    if teacher is None:
        teacher = copy.deepcopy(student)
        logger.info('QAT teacher: the float student itself')
    teacher.eval()
    qmodel = prepare(student, 'qat')
    trainer = build_distill_trainer(qat_cfg, qmodel, teacher)
    trainer.float_student = student
    return trainer


def finish_qat(trainer):
    """The INT8 network of the trained model and its checkpoint."""
    int8 = convert(trainer.float_student, trainer.detector)
    return int8, save_int8(int8, trainer.output_dir)
