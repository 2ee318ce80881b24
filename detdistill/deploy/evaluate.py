"""VOC mAP of an exported model on a config's EvalDataset, through the same
eval reader (preprocessing, ground truth) as tools/eval.py's dygraph path."""
import time

import numpy as np

from ..engine import Trainer
from ..engine.evaluator import VOCEvaluator
from ..logger import get_logger

__all__ = ['evaluate_exported']


def evaluate_exported(cfg, model):
    """model: a predictor.ExportedDetector. Returns tools/eval.py's dict."""
    trainer = Trainer(cfg, mode='eval')  # for its eval loader and class names
    loader = trainer.eval_loader
    evaluator = VOCEvaluator(trainer.class_names)
    tic = time.time()
    for data in loader:
        feed = {k: np.asarray(data[k]) for k in
                ('image', 'im_shape', 'scale_factor')}
        evaluator.update(data, model(feed))
    cost = time.time() - tic
    res = evaluator.accumulate()
    res['images_per_sec'] = res['num_images'] / max(cost, 1e-9)
    get_logger().info('{} ({}): {} images, mAP(0.50, 11point) = {:.2f}%, '
                      'area = {:.2f}%'.format(
                          model.model_dir, model.backend.name,
                          res['num_images'], 100 * res['mAP']['11point'],
                          100 * res['mAP']['area']))
    return res
