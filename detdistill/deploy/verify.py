"""Is the exported model the trained one? Its outputs against the dygraph
detector's on the same preprocessed images, with stated tolerances:

- scores: |difference| <= SCORE_ATOL (scores are probabilities);
- boxes: |difference| <= BOX_RTOL x the original image's longer side
  (0.016 px on a 160 px image, 0.06 px at 608 px).

Seen on this stack: Paddle Inference (oneDNN off) equals dygraph to the bit
or within float rounding; ONNX Runtime differs by ~1e-6 relative.

Thresholds make some differences legitimate, and those are excused, not
hidden. YOLOBox zeroes the scores of a candidate whose objectness is under
`conf_thresh` (its box is then not compared: Paddle writes zeros, the ONNX
model can write NaN), so a candidate on that threshold may be kept by one
side only: excused if its best class score is within SCORE_ATOL of
`conf_thresh`. After NMS, a detection may be present on one side only if its
score is within SCORE_ATOL of `score_threshold`, or of the lowest kept score
when `keep_top_k` rows are kept. More than MAX_FLIP_SHARE of such cases means
nothing was really compared (a saturated model, all scores 1.0) and fails
too. Anything else fails the export with the numbers.

An INT8 network on ONNX Runtime is compared with the same tolerances, but
against the dygraph network fed, at every conv, ONNX Runtime's int8 input:
a value within float rounding of a half int8 step may round either way,
and end to end that difference spreads (quant/divergence.py). Such ties
are counted (`rounding_ties`); a conv input that differs otherwise fails.
"""
import os
import tempfile

import numpy as np
import paddle
from PIL import Image
from scipy.optimize import linear_sum_assignment

from ..errors import ExportCheckError
from ..logger import get_logger
from ..quant.qdq import int8_convs
from .layers import deploy_layer
from .nms import nms_settings
from .predictor import ExportedDetector

__all__ = ['SCORE_ATOL', 'BOX_RTOL', 'ExportCheckError', 'random_images',
           'compare_raw', 'compare_detections', 'check_export']

logger = get_logger()
SCORE_ATOL = 1e-4
BOX_RTOL = 1e-4
# More excused flips than this share says nothing was compared (e.g. a
# saturated model: all scores 1.0, ties at keep_top_k): the check fails.
MAX_FLIP_SHARE = 0.05


def random_images(out_dir, image_shape, n=2, seed=0):
    """n PNG files of random pixels at sizes around the model's input size
    (different aspect ratios, so scale_factor varies). Returns their paths."""
    rng = np.random.RandomState(seed)
    h, w = [s if s > 0 else 320 for s in image_shape[1:]]
    sizes = [(int(h * 1.5), w), (h, int(w * 0.75)), (h * 2, w * 2)]
    paths = []
    for i in range(n):
        size = sizes[i % len(sizes)]
        pixels = rng.randint(0, 256, size + (3,), dtype=np.uint8)
        path = os.path.join(out_dir, 'random_{}.png'.format(i))
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _box_tol(feed, box_rtol=BOX_RTOL):
    original = feed['im_shape'] / feed['scale_factor']  # [B, 2]: h, w
    return box_rtol * original.max(axis=1)


def _nonfinite(ref, got, what):
    bad = np.isfinite(ref) != np.isfinite(got)
    if bad.any():
        return ['{}: {} non-finite values where the other side is finite'
                .format(what, int(bad.sum()))]
    return []


def compare_raw(ref, got, feed, conf_thresh):
    """Outputs of a model exported without NMS: boxes [B, M, 4], scores
    [B, C, M]. Returns (stats, problems)."""
    score_atol, box_rtol = SCORE_ATOL, BOX_RTOL
    (rb, rs), (gb, gs) = ref, got
    if rb.shape != gb.shape or rs.shape != gs.shape:
        return {}, ['shapes: boxes {} vs {}, scores {} vs {} (dygraph vs '
                    'exported)'.format(rb.shape, gb.shape, rs.shape,
                                       gs.shape)]
    # Suppressed candidates (all scores 0) have no meaningful box: Paddle
    # writes zeros, paddle2onnx's yolo_box can give NaN (exp() of a large
    # logit times the 0 mask).
    zeroed_r = (rs == 0).all(1)  # [B, M]
    zeroed_g = (gs == 0).all(1)
    flipped = zeroed_r != zeroed_g
    kept = ~zeroed_r & ~zeroed_g
    problems = _nonfinite(rb[kept], gb[kept], 'boxes') + \
        _nonfinite(rs, gs, 'scores')
    kept_score = np.where(zeroed_r, gs.max(1), rs.max(1))
    unexcused = flipped & ~(kept_score <= conf_thresh + score_atol)
    box_diff = np.where(kept, np.nan_to_num(np.abs(rb - gb), nan=np.inf)
                        .max(-1), 0)
    score_diff = np.where(~flipped, np.nan_to_num(np.abs(rs - gs),
                                                  nan=np.inf).max(1), 0)
    tol = _box_tol(feed, box_rtol)
    stats = {'images': len(rb), 'candidates': int(rb.shape[0] * rb.shape[1]),
             'max_score_diff': float(score_diff.max()),
             'max_box_diff_px': float(box_diff.max()),
             'box_tol_px': float(tol.min()),
             'conf_thresh_flips': int(flipped.sum())}
    problems += _too_many_flips(int(flipped.sum()), int((~zeroed_r).sum()),
                                'candidates')
    if unexcused.any():
        problems.append('{} candidates kept by one side only, with scores up '
                        'to {:.6f} (conf_thresh {})'.format(
                            int(unexcused.sum()),
                            float(kept_score[unexcused].max()), conf_thresh))
    if stats['max_score_diff'] > score_atol:
        problems.append('max |score difference| {:.3g} > {:g}'.format(
            stats['max_score_diff'], score_atol))
    over = box_diff > tol[:, None]
    if over.any():
        i = int(np.argmax((box_diff / tol[:, None]).max(1)))
        problems.append('max |box difference| {:.3g} px > {:.3g} px (image '
                        '{})'.format(float(box_diff[i].max()), float(tol[i]),
                                     i))
    return stats, problems


def _too_many_flips(flips, total, what):
    if flips > max(2, MAX_FLIP_SHARE * total):
        return ['{} of {} {} sit on a threshold: too many to call the '
                'outputs equal (a saturated model?); check on other images '
                '(--check_dir)'.format(flips, total, what)]
    return []


def _split(bbox, bbox_num):
    out, start = [], 0
    for n in np.asarray(bbox_num).ravel():
        d = bbox[start:start + n]
        start += n
        out.append(d[d[:, 0] >= 0])
    return out


def _unmatched_excused(dets, unmatched, nms, score_atol=SCORE_ATOL):
    """Rows on a threshold: within SCORE_ATOL of score_threshold or, when
    keep_top_k rows are kept, of the lowest kept score."""
    bound = nms['score_threshold']
    if len(dets) >= nms['keep_top_k'] > 0:
        bound = max(bound, float(dets[:, 1].min()))
    return dets[unmatched, 1] <= bound + score_atol


def compare_detections(ref, got, feed, nms):
    """Outputs of a model exported with NMS: bbox [N, 6], bbox_num [B].
    Detections are paired per image by class and closeness (Hungarian
    matching). Returns (stats, problems)."""
    score_atol, box_rtol = SCORE_ATOL, BOX_RTOL
    refs, gots = _split(*ref), _split(*got)
    problems = []
    if len(refs) != len(gots):
        return {}, ['{} images in the dygraph output, {} exported'.format(
            len(refs), len(gots))]
    tol = _box_tol(feed, box_rtol)
    stats = {'images': len(refs), 'detections': int(sum(map(len, refs))),
             'max_score_diff': 0.0, 'max_box_diff_px': 0.0,
             'box_tol_px': float(tol.min()), 'threshold_flips': 0}
    for i, (r, g) in enumerate(zip(refs, gots)):
        if len(r) and len(g):
            box = np.abs(r[:, None, 2:] - g[None, :, 2:]).max(-1)
            score = np.abs(r[:, None, 1] - g[None, :, 1])
            cost = np.maximum(box / tol[i], score / score_atol)
            cost = np.nan_to_num(cost, nan=1e18)
            cost[r[:, None, 0] != g[None, :, 0]] = 1e18
            ri, gi = linear_sum_assignment(cost)
            ok = cost[ri, gi] <= 1.0
            ri, gi = ri[ok], gi[ok]
            if len(ri):
                stats['max_score_diff'] = max(stats['max_score_diff'],
                                              float(score[ri, gi].max()))
                stats['max_box_diff_px'] = max(stats['max_box_diff_px'],
                                               float(box[ri, gi].max()))
        else:
            ri = gi = np.zeros(0, int)
        for side, dets, matched in (('dygraph', r, ri), ('exported', g, gi)):
            unmatched = np.ones(len(dets), bool)
            unmatched[matched] = False
            excused = _unmatched_excused(dets, unmatched, nms, score_atol)
            stats['threshold_flips'] += int(excused.sum())
            if not excused.all():
                worst = dets[unmatched][~excused]
                problems.append(
                    'image {}: {} of {} {} detections have no counterpart '
                    'within tolerance (the other side has {}); first: class '
                    '{:g} score {:.6f} box {}'.format(
                        i, len(worst), len(dets), side,
                        len(g) if side == 'dygraph' else len(r), worst[0, 0],
                        worst[0, 1], [round(float(v), 2)
                                      for v in worst[0, 2:]]))
    problems += _too_many_flips(stats['threshold_flips'], sum(
        map(len, refs)) + sum(map(len, gots)), 'detections')
    return stats, problems


def _reference(detector, feed, with_nms):
    tensors = {k: paddle.to_tensor(v) for k, v in feed.items()}
    detector.eval()
    with paddle.no_grad():
        if with_nms:  # ppdet's own eval forward, as tools/infer.py runs it
            out = detector(tensors)
            return [out['bbox'].numpy(), out['bbox_num'].numpy()]
        layer = deploy_layer(detector, False)
        return [t.numpy() for t in layer(*[tensors[n] for n in layer.inputs])]


def _conf_thresh(detector):
    """The score under which decoding zeroes a candidate: YOLOBox's
    conf_thresh; GFL keeps every candidate's sigmoid score (0)."""
    post = getattr(detector, 'post_process', None)
    return post.decode.conf_thresh if post is not None else 0.


def _compare(ref, got, feed, detector, with_nms):
    if with_nms:
        return compare_detections(ref, got, feed, nms_settings(detector))
    return compare_raw(ref, got, feed, _conf_thresh(detector))


def _compare_int8_onnx(model_dir, detector, model, feed, with_nms):
    """Image by image, against the dygraph network fed ONNX Runtime's int8
    conv inputs (quant/divergence.py): its outputs within the tolerances,
    and its own rounding of each conv input off ONNX Runtime's only at
    ties. Returns (stats, problems)."""
    from ..quant.divergence import forced_reference, onnx_int8_reader
    read = onnx_int8_reader(os.path.join(model_dir, 'model.onnx'),
                            list(int8_convs(detector)),
                            model.backend.threads)
    stats, problems, ties = {}, [], 0
    for i in range(len(feed['image'])):
        one = {k: v[i:i + 1] for k, v in feed.items()}
        got, int8_inputs = read(one)
        if not all(np.array_equal(a, b, equal_nan=True)
                   for a, b in zip(got, model.run(one))):
            problems.append('image {}: the model gives other outputs when '
                            'its conv inputs are read too, so they cannot '
                            'explain them'.format(i))
            continue
        ref, parted = forced_reference(
            detector, one, int8_inputs,
            lambda m, f: _reference(m, f, with_nms))
        s, p = _compare(ref, got, one, detector, with_nms)
        for k, v in s.items():  # over the images
            stats[k] = (max if k.startswith('max') else min if k.endswith(
                'tol_px') else sum)((stats[k], v)) if k in stats else v
        problems += ['image {}: {}'.format(i, x.replace(' (image 0)', ''))
                     for x in p]
        for layer, d in parted.items():
            if d['tie']:
                ties += d['elements']
                continue
            problems.append(
                'image {}: the int8 input of {} differs at {} elements by up '
                'to {} steps, up to {:.3g} steps from a rounding tie: not '
                'float rounding, the export is wrong there'.format(
                    i, layer, d['elements'], d['max_steps'],
                    d['max_tie_distance']))
    stats['rounding_ties'] = ties
    return stats, problems


def check_export(model_dir, detector, images=None, backends=('paddle',)):
    """Run the export in model_dir with each backend on `images` (paths;
    None: two random images) and compare with `detector` in dygraph.
    Returns {backend: stats}; raises ExportCheckError with every
    problem."""
    int8 = bool(int8_convs(detector))
    with tempfile.TemporaryDirectory() as tmp:
        models, failures = {}, []
        for backend in backends:
            try:
                models[backend] = ExportedDetector(model_dir, backend)
            except Exception as e:
                failures.append('{}: cannot load the exported model: {}: {}'
                                .format(backend, type(e).__name__, e))
        if failures:
            raise ExportCheckError('{}: export check failed:\n  {}'.format(
                model_dir, '\n  '.join(failures)))
        first = next(iter(models.values()))
        if not images:
            images = random_images(tmp, first.infer_cfg['image_shape'])
        feed = first.preprocess(images)
        with_nms = first.with_nms
        ref = _reference(detector, feed, with_nms)
        report = {}
        for backend, model in models.items():
            try:
                got = model.run(feed)
            except Exception as e:
                failures.append('{}: running the exported model failed: {}: '
                                '{}'.format(backend, type(e).__name__, e))
                continue
            if int8 and backend == 'onnxruntime':
                stats, problems = _compare_int8_onnx(model_dir, detector,
                                                     model, feed, with_nms)
            else:
                stats, problems = _compare(ref, got, feed, detector,
                                           with_nms)
            report[backend] = stats
            logger.info('check {} vs dygraph on {} images: {}{}'.format(
                backend, len(images), ', '.join(
                    '{} {:.3g}'.format(k, v) if isinstance(v, float) else
                    '{} {}'.format(k, v) for k, v in stats.items()),
                ': OK' if not problems else ''))
            failures += ['{}: {}'.format(backend, p) for p in problems]
    if failures:
        raise ExportCheckError(
            '{}: exported model differs from the dygraph model beyond the '
            'tolerance (scores {:g}, boxes {:g} x image size):\n  {}'.format(
                model_dir, SCORE_ATOL, BOX_RTOL, '\n  '.join(failures)))
    return report
