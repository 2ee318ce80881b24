"""Export a trained YOLOv3 or GFL in PaddleDetection's deploy layout:

    DIR/model.json, model.pdiparams   Paddle Inference (Paddle 3's PIR)
    DIR/infer_cfg.yml                 arch, preprocessing, input size,
                                      labels, draw threshold
    DIR/model.onnx                    with onnx=True

Inputs, as PaddleDetection's deploy code feeds them: `image` [B, 3, H, W]
(preprocessed), `im_shape` [B, 2] (resized h, w), `scale_factor` [B, 2]
(resized / original, y then x). Outputs, in this order: `bbox` [N, 6], rows
(class, score, x1, y1, x2, y2) in original-image pixels, and `bbox_num` [B];
with `exclude_nms`, `boxes` [B, M, 4] and `scores` [B, C, M], the decoded
candidates NMS would take (its settings go to infer_cfg.yml under `NMS`):
YOLOBox's for YOLOv3, for GFL the head's own decoding (the expected edge
distances of its distributions around each location) rescaled as
GFLHead.post_process does.

The export is written to a temporary directory beside DIR and checked against
the dygraph model (verify.check_export) before it is renamed into place: a
failed check leaves nothing that could be deployed by mistake.
"""
import copy
import os
import shutil
import tempfile

import paddle
import yaml
from paddle.static import InputSpec

from ..errors import ExportError
from ..logger import get_logger
from ..quant.qdq import int8_convs, onnx_mode
from .layers import OUTPUTS, deploy_layer
from .nms import nms_settings
from .verify import check_export

__all__ = ['ExportError', 'image_shape', 'label_list', 'infer_config',
           'save_inference_model', 'export']

logger = get_logger()
# infer_cfg.yml's arch and min_subgraph_size, as PaddleDetection 2.6 writes
# them (ppdet/engine/export_utils.py)
ARCH = {'YOLOv3': ('YOLO', 3), 'GFL': ('GFL', 16)}


def _check_architecture(cfg, detector):
    arch = cfg.get('architecture')
    if arch == 'GFL':
        nms = getattr(getattr(detector, 'head', None), 'nms', None)
        ok = type(nms).__name__ == 'MultiClassNMS'
        got = 'a head with {}'.format(type(nms).__name__)
    else:
        post = getattr(detector, 'post_process', None)
        ok = (arch == 'YOLOv3' and type(post).__name__ == 'BBoxPostProcess'
              and type(post.decode).__name__ == 'YOLOBox' and
              type(post.nms).__name__ == 'MultiClassNMS')
        got = type(post).__name__
    if not ok:
        raise ExportError(
            '{}: export supports YOLOv3 with BBoxPostProcess (YOLOBox + '
            'MultiClassNMS) and GFL with MultiClassNMS; got architecture {!r} '
            'with {}'.format(cfg.get('config_path'), arch, got))


def image_shape(cfg):
    """[3, H, W] from TestReader.inputs_def.image_shape (-1: any size)."""
    shape = cfg.get('TestReader', {}).get('inputs_def', {}).get('image_shape')
    if shape is None:
        return [3, -1, -1]
    if len(shape) != 3 or shape[0] != 3:
        raise ExportError('{}: TestReader.inputs_def.image_shape must be '
                          '[3, H, W], got {}'.format(cfg.get('config_path'),
                                                     shape))
    return [int(s) for s in shape]


def _preprocess(cfg, shape):
    """TestReader's sample transforms after Decode, as PaddleDetection's
    infer_cfg.yml lists them ({'type': name, **args})."""
    steps = []
    for item in cfg.get('TestReader', {}).get('sample_transforms', []):
        (name, args), = item.items()
        if name == 'Decode':
            continue
        step = {'type': name}
        step.update(copy.deepcopy(args or {}))
        if name == 'Resize':
            step.setdefault('interp', 1)  # ppdet's default, cv2.INTER_LINEAR
            if shape[1] != -1 and list(step['target_size']) != shape[1:]:
                raise ExportError(
                    '{}: TestReader Resize target_size {} differs from '
                    'inputs_def.image_shape {}: the exported input size and '
                    'the preprocessing would disagree'.format(
                        cfg.get('config_path'), step['target_size'], shape))
        steps.append(step)
    return steps


def label_list(cfg):
    """Class names from TestDataset.anno_path (PaddleDetection's label
    file), or Pascal VOC's 20 names for a 20-class VOC config without one."""
    path = cfg.get('TestDataset', {}).get('anno_path')
    num = cfg.get('num_classes')
    if path and os.path.isfile(path):
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
        if num is not None and len(names) != int(num):
            raise ExportError('{}: {} class names, but num_classes is {}'
                              .format(path, len(names), num))
        return names
    if cfg.get('metric') == 'VOC' and num == 20:
        from ppdet.data.source.voc import pascalvoc_label
        ids = pascalvoc_label()
        logger.info('label list {} not found: writing the 20 Pascal VOC '
                    'class names'.format(path))
        return sorted(ids, key=ids.get)
    raise ExportError('label list {} (TestDataset.anno_path) not found: '
                      'infer_cfg.yml needs the class names'.format(path))


def infer_config(cfg, detector, with_nms=True):
    """infer_cfg.yml's content: PaddleDetection 2.6's keys (its deploy code
    reads these), then ours."""
    shape = image_shape(cfg)
    arch, min_subgraph = ARCH[cfg.get('architecture', 'YOLOv3')]
    out = {
        'mode': 'paddle',
        'draw_threshold': float(cfg.get('draw_threshold', 0.5)),
        'metric': cfg.get('metric', 'VOC'),
        'use_dynamic_shape': shape[1] == -1,
        'arch': arch,
        'min_subgraph_size': min_subgraph,
        'Preprocess': _preprocess(cfg, shape),
        'label_list': label_list(cfg),
        # detdistill's additions
        'image_shape': shape,
        'exclude_nms': not with_nms,
        'outputs': OUTPUTS[with_nms],
    }
    if not with_nms:  # as PaddleDetection does for models exported without NMS
        out['NMS'] = nms_settings(detector)
    return out


def save_inference_model(detector, cfg, out_dir, with_nms=True):
    """paddle.jit.save the deployed network to out_dir/model.{json,pdiparams}
    and write out_dir/infer_cfg.yml."""
    _check_architecture(cfg, detector)
    shape = image_shape(cfg)
    detector.eval()
    layer = deploy_layer(detector, with_nms)
    spec = [InputSpec([None] + shape if name == 'image' else [None, 2],
                      'float32', name) for name in layer.inputs]
    paddle.jit.save(layer, os.path.join(out_dir, 'model'), input_spec=spec)
    for name in ('model.json', 'model.pdiparams'):
        if not os.path.isfile(os.path.join(out_dir, name)):
            raise ExportError('paddle.jit.save did not write {}'.format(
                os.path.join(out_dir, name)))
    with open(os.path.join(out_dir, 'infer_cfg.yml'), 'w') as f:
        yaml.safe_dump(infer_config(cfg, detector, with_nms), f,
                       sort_keys=False, default_flow_style=None)


def export_int8_onnx(detector, cfg, out_dir, with_nms=True):
    """out_dir/model.onnx of an INT8 network (quant/qdq.py): its program
    without the input fake-quantization, converted by paddle2onnx at opset
    13, then given QuantizeLinear/DequantizeLinear nodes with the
    network's scales and int8 weights (quant/onnx_qdq.py)."""
    from ..quant.onnx_qdq import OPSET, conv_scales, insert_qdq
    from .onnx_convert import convert_to_onnx
    scales = conv_scales(detector)
    plain = tempfile.mkdtemp(prefix='.onnx-src-', dir=out_dir)
    try:
        with onnx_mode(detector):
            save_inference_model(detector, cfg, plain, with_nms)
        convert_to_onnx(plain, batch_size=1 if with_nms else None,
                        output_names=OUTPUTS[with_nms], opset=OPSET,
                        rewrite=lambda m: insert_qdq(m, scales),
                        out_dir=out_dir)
    finally:
        shutil.rmtree(plain, ignore_errors=True)
    logger.info('ONNX: QuantizeLinear/DequantizeLinear on the inputs and '
                'weights of {} convs'.format(len(scales)))


def _replace_dir(src, dst):
    """Put the finished export at dst; a previous export there is removed
    only once the new one is in place."""
    old = None
    if os.path.exists(dst):
        old = dst + '.old-{}'.format(os.getpid())
        os.rename(dst, old)
    os.rename(src, dst)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def export(detector, cfg, save_dir, exclude_nms=False, onnx=False,
           check_images=None):
    """Export, check against `detector` (dygraph) on `check_images` (paths;
    None: random images), then move into `save_dir`. Returns the check
    report; raises verify.ExportCheckError if an output differs beyond the
    tolerance."""
    from .onnx_convert import convert_to_onnx
    with_nms = not exclude_nms
    save_dir = os.path.abspath(save_dir)
    parent = os.path.dirname(save_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.{}.tmp-'.format(
        os.path.basename(save_dir)), dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private
    try:
        save_inference_model(detector, cfg, tmp, with_nms)
        backends = ['paddle']
        if onnx:
            # paddle2onnx converts multiclass_nms3 for batch 1 only.
            if int8_convs(detector):
                export_int8_onnx(detector, cfg, tmp, with_nms)
            else:
                convert_to_onnx(tmp, batch_size=1 if with_nms else None,
                                output_names=OUTPUTS[with_nms])
            backends.append('onnxruntime')
        report = check_export(tmp, detector, check_images, backends)
        _replace_dir(tmp, save_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info('Exported {} ({}) to {}'.format(
        cfg.get('filename'), ', '.join(sorted(os.listdir(save_dir))),
        save_dir))
    return report
