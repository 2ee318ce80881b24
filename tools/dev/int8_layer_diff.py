"""Where do an INT8 student's ONNX Runtime and Paddle outputs part? Per
quantized conv, in forward order: the share of its fake-quantized input
elements that differ between ONNX Runtime (the QDQ export) and the dygraph
INT8 network, and by how many int8 steps at most, on one image.

python tools/dev/int8_layer_diff.py -c CFG -o weights=.../int8 [k=v ...] \
    --image IMG --out DIR

DIR receives an unchecked export (model.json, model.onnx, infer_cfg.yml;
--exclude_nms); an existing DIR/model.onnx is reused.
"""
import argparse
import os

import paddle

from detdistill.config import build_model, load_config
from detdistill.deploy.export import export_int8_onnx, save_inference_model
from detdistill.deploy.layers import deploy_layer
from detdistill.deploy.predictor import ExportedDetector
from detdistill.quant.checkpoint import load_int8
from detdistill.quant.divergence import classify, onnx_int8_reader
from detdistill.quant.qdq import int8_convs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('-c', '--config', required=True)
    p.add_argument('-o', '--opt', nargs='*', default=[])
    p.add_argument('--image', required=True)
    p.add_argument('--out', required=True)
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.opt)
    model = load_int8(build_model(cfg), cfg['weights'])
    os.makedirs(args.out, exist_ok=True)
    if not os.path.exists(os.path.join(args.out, 'model.onnx')):
        save_inference_model(model, cfg, args.out, with_nms=False)
        export_int8_onnx(model, cfg, args.out, with_nms=False)
    feed = ExportedDetector(args.out, 'paddle').preprocess([args.image])
    convs = int8_convs(model)
    acts = {}

    def hook(name):
        def record(layer, inputs):
            acts[name] = (inputs[0] / layer.act_scale).numpy()
        return record
    for name, layer in convs.items():
        layer.register_forward_pre_hook(hook(name))
    with paddle.no_grad():
        deploy_layer(model, False)(*[paddle.to_tensor(feed[k]) for k in
                                     ('image', 'im_shape', 'scale_factor')])
    _, got = onnx_int8_reader(os.path.join(args.out, 'model.onnx'),
                              list(acts))(feed)
    for i, name in enumerate(acts):  # forward order
        d = classify(acts[name], got[name]) or {
            'elements': 0, 'max_steps': 0}
        print('{:3d} {:50s} differ {:.2e}  max {:.0f} steps'.format(
            i, name, d['elements'] / acts[name].size, d['max_steps']))


if __name__ == '__main__':
    main()
