"""PTQ calibration: the first N images of the training list, in list order,
through the evaluation transforms (no augmentation, no shuffling), so that
the same N and list give the same scales on every run."""
import paddle

from ..data.build import build_eval_loader
from ..errors import QuantizationError
from ..logger import get_logger

__all__ = ['calibration_batches', 'calibrate']

logger = get_logger()


def calibration_batches(cfg, num_images):
    """Batches (EvalReader's size) holding the first `num_images` images
    of TrainDataset's list."""
    if int(num_images) < 1:
        raise QuantizationError('calibration needs at least 1 image, got '
                                '--calib_images {}'.format(num_images))
    loader, _ = build_eval_loader(dict(cfg, EvalDataset=cfg['TrainDataset']))
    available = len(loader.dataset) if hasattr(loader, 'dataset') else None
    batches, seen = [], 0
    for batch in loader:
        take = min(int(num_images) - seen, int(batch['image'].shape[0]))
        if take < batch['image'].shape[0]:
            batch = {k: v[:take] for k, v in batch.items()}
        batches.append(batch)
        seen += take
        if seen >= num_images:
            break
    if seen < num_images:
        raise QuantizationError(
            'calibration asks for {} images but the training list {} has '
            '{}'.format(num_images, cfg['TrainDataset'].get('anno_path'),
                        seen if available is None else available))
    return batches


def calibrate(qmodel, batches):
    """Run the PTQ-prepared `qmodel` on `batches` (its observers record the
    abs max of every quantized input and weight)."""
    qmodel.eval()
    with paddle.no_grad():
        for batch in batches:
            qmodel(batch)
    logger.info('PTQ: calibrated on {} images'.format(
        sum(int(b['image'].shape[0]) for b in batches)))
