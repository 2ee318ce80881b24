"""Run an exported model: Paddle Inference or ONNX Runtime, with the
preprocessing infer_cfg.yml lists (built from ppdet's own operators, so the
arrays are those the dygraph TestReader makes)."""
import os

import numpy as np
import yaml

from ..errors import InferCfgError
from .nms import multiclass_nms_numpy

__all__ = ['InferCfgError', 'read_infer_cfg', 'PaddleBackend', 'OnnxBackend',
           'BACKENDS', 'ExportedDetector']

REQUIRED = ('Preprocess', 'label_list', 'image_shape', 'exclude_nms')


def read_infer_cfg(model_dir):
    path = os.path.join(model_dir, 'infer_cfg.yml')
    if not os.path.isfile(path):
        raise FileNotFoundError('{} not found: is {} an exported model '
                                '(tools/export_model.py)?'.format(
                                    path, model_dir))
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    for key in REQUIRED:
        if key not in cfg:
            raise InferCfgError('{}: missing field {!r}'.format(path, key))
    if cfg['exclude_nms'] and 'NMS' not in cfg:
        raise InferCfgError('{}: exclude_nms is true but the NMS settings '
                            '(field NMS) are missing'.format(path))
    return cfg


def _model_file(model_dir, name):
    path = os.path.join(model_dir, name)
    if not os.path.isfile(path):
        raise FileNotFoundError('{} not found'.format(path))
    return path


class PaddleBackend:
    """Paddle Inference on CPU."""
    name = 'paddle'

    def __init__(self, model_dir, threads=1):
        import paddle  # noqa: F401  (initialises paddle before inference)
        from paddle import inference
        config = inference.Config(_model_file(model_dir, 'model.json'),
                                  _model_file(model_dir, 'model.pdiparams'))
        # Paddle 3.3's oneDNN passes break on YOLOv3 (seen here): a segfault
        # in conv_activation_onednn_fuse_pass and, without that pass, the
        # oneDNN executor rejecting nearest_interp's float64 scale array.
        config.disable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
        config.disable_glog_info()
        self.predictor = inference.create_predictor(config)
        self.input_names = self.predictor.get_input_names()

    def run(self, feed):
        for name in self.input_names:
            handle = self.predictor.get_input_handle(name)
            arr = np.ascontiguousarray(feed[name], dtype='float32')
            handle.reshape(arr.shape)
            handle.copy_from_cpu(arr)
        self.predictor.run()
        return [self.predictor.get_output_handle(n).copy_to_cpu()
                for n in self.predictor.get_output_names()]


def onnx_session(model, threads=1):
    """An ONNX Runtime CPU session of `model` (a path or a serialized
    ModelProto). The number of threads changes how convolutions split their
    sums, hence the float rounding: whatever looks inside a model to explain
    its outputs (quant/divergence.py) must use the same."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(model, opts,
                                providers=['CPUExecutionProvider'])


class OnnxBackend:
    """ONNX Runtime on CPU."""
    name = 'onnxruntime'

    def __init__(self, model_dir, threads=1):
        self.threads = threads
        self.session = onnx_session(_model_file(model_dir, 'model.onnx'),
                                    threads)
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        batch = inputs[0].shape[0]
        self.batch_size = batch if isinstance(batch, int) else None

    def run(self, feed):
        feed = {n: np.ascontiguousarray(feed[n], dtype='float32')
                for n in self.input_names}
        n = len(feed[self.input_names[0]])
        if self.batch_size in (None, n):
            return self.session.run(None, feed)
        # a batch-1 model (NMS): one image at a time, outputs concatenated
        # as a batched model returns them
        parts = [self.session.run(None, {k: v[i:i + 1]
                                         for k, v in feed.items()})
                 for i in range(n)]
        return [np.concatenate(p) for p in zip(*parts)]


BACKENDS = {'paddle': PaddleBackend, 'onnxruntime': OnnxBackend}


def _transforms(steps, path):
    from ppdet.data.transform import operators
    ops = [operators.Decode()]
    for step in steps:
        step = dict(step)
        name = step.pop('type', None)
        op = getattr(operators, str(name), None)
        if op is None:
            raise InferCfgError('{}: Preprocess step {!r} is not a ppdet '
                                'operator'.format(path, name))
        ops.append(op(**step))
    return ops


class ExportedDetector:
    """An exported model with its preprocessing. Called on a feed dict it
    returns {'bbox', 'bbox_num'} like the dygraph detector (NMS runs on the
    host for models exported without it)."""

    def __init__(self, model_dir, backend='paddle', threads=1):
        if backend not in BACKENDS:
            raise ValueError('unknown backend {!r}; choose from {}'.format(
                backend, ', '.join(BACKENDS)))
        self.model_dir = model_dir
        self.infer_cfg = read_infer_cfg(model_dir)
        self.label_list = self.infer_cfg['label_list']
        self.draw_threshold = self.infer_cfg.get('draw_threshold', 0.5)
        self.with_nms = not self.infer_cfg['exclude_nms']
        self.transforms = _transforms(self.infer_cfg['Preprocess'],
                                      os.path.join(model_dir,
                                                   'infer_cfg.yml'))
        self.backend = BACKENDS[backend](model_dir, threads)

    def preprocess(self, image_paths):
        samples = []
        for path in image_paths:
            sample = {'im_file': path}
            for op in self.transforms:
                sample = op(sample)
            samples.append(sample)
        return {k: np.stack([s[k] for s in samples]).astype('float32')
                for k in ('image', 'im_shape', 'scale_factor')}

    def run(self, feed):
        """The model's own outputs (see export.OUTPUTS)."""
        return self.backend.run(feed)

    def __call__(self, feed):
        outs = self.run(feed)
        if not self.with_nms:
            outs = multiclass_nms_numpy(outs[0], outs[1],
                                        self.infer_cfg['NMS'])
        return {'bbox': outs[0], 'bbox_num': outs[1]}

    def predict(self, image_paths, batch_size=1):
        """Yields (image_path, detections [[cls, score, x1, y1, x2, y2]])
        like detdistill.infer.predict."""
        for i in range(0, len(image_paths), batch_size):
            paths = image_paths[i:i + batch_size]
            out = self(self.preprocess(paths))
            start = 0
            for path, num in zip(paths, out['bbox_num']):
                dets = out['bbox'][start:start + num]
                start += num
                yield path, dets[dets[:, 0] >= 0]
