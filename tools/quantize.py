"""An INT8 student: post-training quantization (PTQ) or quantization-aware
training (QAT) with distillation.

python tools/quantize.py -c STUDENT.yml -o weights=FLOAT_WEIGHTS --mode ptq \
    [--calib_images 32]
python tools/quantize.py -c STUDENT.yml -o weights=FLOAT_WEIGHTS --mode qat \
    [-t TEACHER.yml --teacher_pretrained W | --no_distill] [-r CKPT] \
    [--eval] [-o epoch=2 LearningRate.base_lr=0.0001 ...]

Writes save_dir/<config name>_<mode>/int8.pdparams, which tools/eval.py,
tools/export_model.py (--onnx: a QDQ model) and tools/infer.py take as
-o weights=.../int8. QAT trains as slim/distillation/distill.py does (same
checkpoints, -r, logs and Distill block), from the float weights, with the
float student itself as the teacher unless -t is given; the teacher check
is not run. docs/quantization.md: what was measured and what does not work.
"""
from detdistill.cli import TrainArgsParser, main_guard, run_training
from detdistill.config import build_model, load_config, shared_overrides
from detdistill.engine import set_device
from detdistill.errors import QuantizationError
from detdistill.quant.checkpoint import is_int8_checkpoint
from detdistill.quant.run import build_qat_trainer, finish_qat, run_ptq
from detdistill.weights import load_weights, resolve_weights


def parse_args(argv=None):
    p = TrainArgsParser(description=__doc__)
    p.add_argument('--mode', choices=['ptq', 'qat'], required=True)
    p.add_argument('--calib_images', type=int, default=32,
                   help='PTQ: calibrate on the first N training images')
    p.add_argument('-t', '--teacher_config', default=None,
                   help='QAT: teacher config (default: the float student)')
    p.add_argument('--teacher_pretrained', default=None,
                   help='QAT: teacher weights (with -t)')
    p.add_argument('--no_distill', action='store_true',
                   help='QAT with the detection loss alone (no teacher)')
    return p.parse_args(argv)


def _float_student(cfg):
    weights = cfg.get('weights')
    if not weights:
        raise QuantizationError('-o weights=... must name the float '
                                'student to quantize')
    path = resolve_weights(weights)
    if is_int8_checkpoint(path):
        raise QuantizationError('{} is already an INT8 checkpoint: quantize '
                                'the float student\'s weights'.format(path))
    student = build_model(cfg)
    load_weights(student, path)
    return student


def _teacher(args):
    if args.teacher_config is None:
        if args.teacher_pretrained:
            raise QuantizationError('--teacher_pretrained needs -t')
        return None
    if not args.teacher_pretrained:
        raise QuantizationError('-t needs --teacher_pretrained')
    teacher = build_model(load_config(args.teacher_config,
                                      shared_overrides(args.opt)))
    load_weights(teacher, resolve_weights(args.teacher_pretrained))
    return teacher


@main_guard
def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.opt)
    set_device(cfg)
    student = _float_student(cfg)
    if args.mode == 'ptq':
        return run_ptq(cfg, student, args.calib_images)[1]
    if args.no_distill and args.teacher_config:
        raise QuantizationError('--no_distill trains without a teacher: '
                                'drop -t/--teacher_pretrained')
    trainer = build_qat_trainer(cfg, student, _teacher(args),
                                distill=not args.no_distill)
    run_training(trainer, args, load_pretrained=False)
    return finish_qat(trainer)[1]


if __name__ == '__main__':
    main()
