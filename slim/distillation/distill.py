"""Distill a teacher detector into a student:

python slim/distillation/distill.py -c STUDENT.yml -t TEACHER.yml \
    --teacher_pretrained URL_OR_PATH [-o use_fine_grained_loss=true ...] \
    [-r CKPT] [--eval] [--use_vdl --vdl_log_dir DIR] [--pretrained W]
    [--unlabeled_list FILE] [--unlabeled_dir DIR]

Everything but the teacher behaves as tools/train.py does on the student
config: same -o overrides, outputs, checkpoints and evaluation. The
distillation settings are the student config's Distill block
(detdistill/distill/settings.py), e.g. -o Distill.losses.l2.weight=10. Of
the -o overrides, num_classes applies to the teacher too (one global key in
PaddleDetection); the others are the student's.
"""
import os

from detdistill.cli import TrainArgsParser, main_guard, run_training
from detdistill.config import build_model, load_config, shared_overrides
from detdistill.distill.distiller import build_distill_trainer
from detdistill.distill.settings import distill_settings
from detdistill.distill.teacher_check import check_teacher
from detdistill.engine import build_detector, set_device
from detdistill.engine.callbacks import EpochNote
from detdistill.weights import load_weights, resolve_weights
from paddle.distributed import get_rank


def parse_args(argv=None):
    p = TrainArgsParser(description=__doc__)
    p.add_argument('-t', '--teacher_config', required=True,
                   help='teacher configuration file')
    p.add_argument('--teacher_pretrained', required=True,
                   help='teacher weights: a path or a URL (downloaded once '
                        'into a cache)')
    p.add_argument('--temperature', type=float, default=None,
                   help='softening temperature of the kl or ld loss (the '
                        "loss entry's `temperature` option)")
    p.add_argument('--unlabeled_list', default=None,
                   help='extra images without labels, distilled only: one '
                        'path per line, relative to TrainDataset.dataset_dir '
                        '(split_voc.py --unlabeled writes unlabeled.txt); '
                        'Distill.unlabeled.list')
    p.add_argument('--unlabeled_dir', default=None,
                   help='extra images without labels: every image in DIR; '
                        'Distill.unlabeled.dir')
    p.add_argument('--baseline', default=None,
                   help='the student trained alone (a tools/train.py output '
                        'folder, or its weights): the teacher check warns '
                        'when the teacher is not clearly better; '
                        'Distill.check.baseline')
    return p.parse_args(argv)


def _flag_overrides(args):
    """The flags that are Distill settings, as -o overrides."""
    out = []
    if args.temperature is not None:
        out.append('temperature={}'.format(args.temperature))
    for flag, key in (('unlabeled_list', 'unlabeled.list'),
                      ('unlabeled_dir', 'unlabeled.dir'),
                      ('baseline', 'check.baseline')):
        if getattr(args, flag) is not None:
            out.append('Distill.{}={}'.format(key, getattr(args, flag)))
    return out


@main_guard
def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.opt + _flag_overrides(args))
    set_device(cfg)
    student = build_detector(cfg)  # the baseline's initialisation
    teacher = build_model(load_config(args.teacher_config,
                                      shared_overrides(args.opt)))
    weights = resolve_weights(args.teacher_pretrained)
    load_weights(teacher, weights)
    check = distill_settings(cfg).check
    if check['enabled'] and get_rank() == 0:
        check_teacher(cfg, args.teacher_config, teacher, weights, check,
                      os.path.join(cfg.get('save_dir', 'output'),
                                   cfg['filename']))
    trainer = build_distill_trainer(cfg, student, teacher)
    run_training(trainer, args, [EpochNote(trainer.model.teacher.summary)])
    return trainer


if __name__ == '__main__':
    main()
