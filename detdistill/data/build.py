"""The training and evaluation loaders of a config: its datasets, checked
before any compute is spent on them, and its readers' transforms, read by
PrefetchLoader (loader.py) in an order seeded by (seed, epoch)."""
import os

import paddle
from ppdet.core.workspace import create

from ..config import activate
from ..errors import ConfigError
from ..logger import get_logger
from ..seeding import epoch_seed, run_seed
from .loader import build_loader
from .unlabeled import build_mixed_loader, load_unlabeled
from .voc import validate_voc_list

__all__ = ['validate_dataset', 'build_train_loader', 'build_eval_loader']

logger = get_logger()


def validate_dataset(dataset):
    """Check a VOC list (every image decodes, every XML parses and agrees)
    before training or evaluation starts; other dataset kinds as ppdet
    reads them."""
    if type(dataset).__name__ != 'VOCDataSet':
        return
    report = validate_voc_list(dataset.dataset_dir, dataset.anno_path,
                               os.path.join(dataset.dataset_dir,
                                            dataset.label_list))
    logger.info(report.format_counts())
    report.raise_if_problems()
    if report.notes:
        logger.warning(report.format_notes())


def build_train_loader(cfg, unlabeled=None):
    """TrainDataset through TrainReader; with `unlabeled` (the
    Distill.unlabeled settings naming a list or folder) each step also reads
    an unlabeled batch and the loader yields (labeled, unlabeled) pairs."""
    seed = run_seed(cfg)

    def seeds(epoch):
        return epoch_seed(seed, epoch)
    with activate(cfg):
        dataset = create('TrainDataset')()
        validate_dataset(dataset)
        reader = create('TrainReader')
        workers = cfg.get('worker_num', 0)
        if unlabeled:
            paths = load_unlabeled(unlabeled, dataset.dataset_dir, logger)
            size = unlabeled.get('batch_size') or reader.batch_size
            logger.info('Each step reads {} labeled and {} unlabeled images '
                        'per rank'.format(reader.batch_size, size))
            loader = build_mixed_loader(reader, dataset, workers, paths, size,
                                        seeds)
        else:
            loader = build_loader(reader, dataset, workers,
                                  epoch_seed=seeds)
    if len(loader) < 1:
        raise ConfigError('TrainReader.batch_size {} is larger than the {} '
                          'training images in {}'.format(
                              loader.batch_size, len(dataset),
                              dataset.anno_path))
    return loader


def build_eval_loader(cfg):
    """-> (EvalDataset through EvalReader, its class names). VOC ground
    truth differs in length per image: batches are not collated."""
    cfg = dict(cfg, EvalReader=dict(cfg.get('EvalReader') or {},
                                    collate_batch=False))
    with activate(cfg):
        dataset = create('EvalDataset')()
        validate_dataset(dataset)
        reader = create('EvalReader')
        loader = build_loader(reader, dataset, 0, paddle.io.BatchSampler(
            dataset, batch_size=reader.batch_size))
    return loader, os.path.join(dataset.dataset_dir, dataset.label_list)
