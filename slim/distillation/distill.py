"""Distill a teacher detector into a student:

python slim/distillation/distill.py -c STUDENT.yml -t TEACHER.yml \
    --teacher_pretrained URL_OR_PATH [-o use_fine_grained_loss=true ...] \
    [-r CKPT] [--eval] [--use_vdl --vdl_log_dir DIR] [--pretrained W]
    [--unlabeled_list FILE] [--unlabeled_dir DIR]

Everything but the teacher behaves as tools/train.py does on the student
config: same -o overrides, outputs, checkpoints and evaluation. Of the -o
overrides, num_classes applies to the teacher too (one global key in
PaddleDetection); the others are the student's.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', '..'))

from detdistill.cli import TrainArgsParser, main_guard, run_training  # noqa: E402
from detdistill.config import (build_model, load_config,  # noqa: E402
                               shared_overrides)
from detdistill.distill.distiller import build_distiller  # noqa: E402
from detdistill.engine import Trainer  # noqa: E402
from detdistill.engine.trainer import seed_everything, set_device  # noqa: E402
from detdistill.weights import load_weights  # noqa: E402


def parse_args(argv=None):
    p = TrainArgsParser(description=__doc__)
    p.add_argument('-t', '--teacher_config', required=True,
                   help='teacher configuration file')
    p.add_argument('--teacher_pretrained', required=True,
                   help='teacher weights: a path or a URL (downloaded once '
                        'into a cache)')
    p.add_argument('--temperature', type=float, default=None,
                   help='softening temperature of the kl loss')
    p.add_argument('--unlabeled_list', default=None,
                   help='extra images without labels, distilled only: one '
                        'path per line, relative to TrainDataset.dataset_dir '
                        '(split_voc.py --unlabeled writes unlabeled.txt)')
    p.add_argument('--unlabeled_dir', default=None,
                   help='extra images without labels: every image in DIR')
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.opt)
    for key in ('temperature', 'unlabeled_list', 'unlabeled_dir'):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    tcfg = load_config(args.teacher_config, shared_overrides(args.opt))
    set_device(cfg)
    # Seed, then build the student first: same initialisation as
    # tools/train.py gives the baseline with the same seed.
    seed_everything(int(cfg.get('seed', 0)))
    student = build_model(cfg)
    teacher = build_model(tcfg)
    load_weights(teacher, args.teacher_pretrained)
    distiller = build_distiller(cfg, student, teacher)
    trainer = Trainer(cfg, mode='train', model=distiller)
    run_training(trainer, args)
    return trainer


if __name__ == '__main__':
    main()
