"""Probe (not part of the export): can ONNX Runtime run this INT8 student
with integer convolutions, i.e. without oneDNN? Rewrites an INT8 export's
model.onnx (tools/export_model.py --exclude_nms --onnx on an int8.pdparams)
into the node units ORT's QDQ fusion needs, DQ -> Conv -> Q:

  - BatchNormalization (and the head convs' bias Add) folded into the conv:
    per output channel f = gamma / sqrt(var + eps), int8 weights q * sign(f)
    with scale s_w * |f| (the same integers), bias beta - mean * f as int32
    with scale s_x * s_w' (DequantizeLinear into the Conv's bias input);
  - a QuantizeLinear -> DequantizeLinear on every conv output, its scale the
    abs max of that output over the calibration images / 127 (a quantization
    point the INT8 network does not have: outputs change).

python tools/dev/ort_int8_probe.py --model_dir DIR --float_dir FDIR \
    --images IMG_DIR_OR_LIST [--calib 32] [--time 64] [--rounds 5] --out ODIR

Writes ODIR (infer_cfg.yml + the rewritten model.onnx, usable with
tools/eval.py --model_dir ODIR --backend onnxruntime) and prints: the ORT
optimized graph's op counts for the QDQ and the rewritten model, images/s
(batch 1, 1 thread) of float, QDQ and rewritten models, and the rewritten
model's largest differences from the QDQ one.
"""
import argparse
import collections
import glob
import json
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from detdistill.deploy.predictor import ExportedDetector


def _values(model):
    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == 'Constant':
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def _const(name, array):
    return helper.make_node('Constant', [], [name],
                            value=numpy_helper.from_array(array, name))


def fold(model):
    """BN / bias Add into each QDQ conv; returns the conv output names."""
    vals = _values(model)
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers = collections.defaultdict(list)
    for n in nodes:
        for i in n.input:
            consumers[i].append(n)
    drop, extra, outputs = set(), [], []
    for conv in [n for n in nodes if n.op_type == 'Conv']:
        wdq = producer[conv.input[1]]
        xdq = producer[conv.input[0]]
        if wdq.op_type != 'DequantizeLinear' or xdq.op_type != \
                'DequantizeLinear':
            continue
        q = vals[wdq.input[0]].astype('int32')
        s_w = vals[wdq.input[1]].astype('float32')
        s_x = float(vals[xdq.input[1]])
        nxt = consumers[conv.output[0]]
        c = q.shape[0]
        f = np.ones(c, 'float32')
        b = np.zeros(c, 'float32')
        follower = nxt[0] if len(nxt) == 1 else None
        if follower is not None and follower.op_type == 'BatchNormalization':
            gamma, beta, mean, var = (vals[i] for i in follower.input[1:5])
            eps = next(a.f for a in follower.attribute if a.name == 'epsilon')
            f = (gamma / np.sqrt(var + eps)).astype('float32')
            b = (beta - mean * f).astype('float32')
        elif follower is not None and follower.op_type == 'Add' and \
                follower.input[1] in vals:
            b = vals[follower.input[1]].reshape(-1).astype('float32')
        else:
            follower = None
        sign = np.where(f < 0, -1, 1).astype('int32')
        q2 = (q * sign.reshape([-1] + [1] * (q.ndim - 1))).astype('int8')
        s2 = (s_w * np.abs(f)).astype('float32')
        p = conv.output[0] + '.fold'
        b_scale = (s_x * s2).astype('float32')
        b_q = np.round(b / b_scale).astype('int32')
        extra += [_const(p + '.q', q2), _const(p + '.s', s2),
                  _const(p + '.z', np.zeros(c, 'int8')),
                  helper.make_node('DequantizeLinear',
                                   [p + '.q', p + '.s', p + '.z'],
                                   [p + '.w'], axis=0),
                  _const(p + '.bq', b_q), _const(p + '.bs', b_scale),
                  _const(p + '.bz', np.zeros(c, 'int32')),
                  helper.make_node('DequantizeLinear',
                                   [p + '.bq', p + '.bs', p + '.bz'],
                                   [p + '.b'], axis=0)]
        conv.input[1] = p + '.w'
        if len(conv.input) == 2:
            conv.input.append(p + '.b')
        else:
            conv.input[2] = p + '.b'
        if follower is not None:
            out = follower.output[0]
            drop.add(id(follower))
            conv.output[0] = out
        outputs.append(conv.output[0])
    kept = [n for n in nodes if id(n) not in drop]
    # put the new constants first (topological order)
    del model.graph.node[:]
    model.graph.node.extend(extra + kept)
    return outputs


def add_output_qdq(model, names, scales):
    consumers = collections.defaultdict(list)
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            consumers[name].append((n, i))
    graph_outputs = {o.name for o in model.graph.output}
    new = []
    for name in names:
        p = name + '.oq'
        new += [_const(p + '.s', np.array(scales[name], 'float32')),
                _const(p + '.z', np.array(0, 'int8'))]
    for n in list(model.graph.node):
        for i, name in enumerate(n.input):
            if name in scales:
                n.input[i] = name + '.oq.dq'
    nodes = list(model.graph.node)
    out = []
    for n in nodes:
        out.append(n)
        for o in n.output:
            if o in scales:
                p = o + '.oq'
                out += [helper.make_node('QuantizeLinear',
                                         [o, p + '.s', p + '.z'], [p + '.q']),
                        helper.make_node('DequantizeLinear',
                                         [p + '.q', p + '.s', p + '.z'],
                                         [p + '.dq'])]
                assert o not in graph_outputs
    del model.graph.node[:]
    model.graph.node.extend(new + out)


def session(model_or_path, optimized=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if optimized:
        so.optimized_model_filepath = optimized
    data = model_or_path if isinstance(model_or_path, str) else \
        model_or_path.SerializeToString()
    return ort.InferenceSession(data, so, providers=['CPUExecutionProvider'])


def optimized_ops(path):
    with tempfile.TemporaryDirectory() as tmp:
        opt = os.path.join(tmp, 'opt.onnx')
        session(path, opt)
        return dict(collections.Counter(
            n.op_type for n in onnx.load(opt).graph.node).most_common(8))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--model_dir', required=True)
    p.add_argument('--float_dir', required=True)
    p.add_argument('--images', required=True)
    p.add_argument('--calib', type=int, default=32)
    p.add_argument('--time', type=int, default=64)
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--out', required=True)
    args = p.parse_args(argv)
    images = sorted(glob.glob(os.path.join(args.images, '*.jpg'))) \
        if os.path.isdir(args.images) else \
        [line.split()[0] for line in open(args.images) if line.strip()]
    qdq = ExportedDetector(args.model_dir, 'onnxruntime')
    model = onnx.load(os.path.join(args.model_dir, 'model.onnx'))
    names = fold(model)
    # calibrate the conv outputs on the first --calib images
    probe = onnx.load_from_string(model.SerializeToString())
    for name in names:
        probe.graph.output.append(helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT, None))
    s = session(probe)
    inputs = [i.name for i in s.get_inputs()]
    amax = {n: 0. for n in names}
    for path in images[:args.calib]:
        feed = qdq.preprocess([path])
        outs = s.run(names, {k: feed[k] for k in inputs})
        for n, o in zip(names, outs):
            amax[n] = max(amax[n], float(np.abs(o).max()))
    add_output_qdq(model, names, {n: max(v, 1e-8) / 127
                                  for n, v in amax.items()})
    onnx.checker.check_model(model)
    os.makedirs(args.out, exist_ok=True)
    shutil.copy(os.path.join(args.model_dir, 'infer_cfg.yml'), args.out)
    onnx.save(model, os.path.join(args.out, 'model.onnx'))
    report = {'folded_convs': len(names), 'ops_qdq_export': optimized_ops(
        os.path.join(args.model_dir, 'model.onnx')),
        'ops_rewritten': optimized_ops(os.path.join(args.out,
                                                    'model.onnx'))}
    timed = images[args.calib:args.calib + args.time]
    models = {name: ExportedDetector(d, 'onnxruntime') for name, d in
              (('float', args.float_dir), ('qdq_export', args.model_dir),
               ('rewritten', args.out))}
    feeds = [qdq.preprocess([path]) for path in timed]
    ref = [models['qdq_export'].run(f) for f in feeds]
    got = [models['rewritten'].run(f) for f in feeds]
    report['max_score_diff_vs_qdq'] = float(max(
        np.abs(r[1] - g[1]).max() for r, g in zip(ref, got)))
    times = {k: [] for k in models}
    for _ in range(args.rounds):
        for k, m in models.items():
            tic = time.perf_counter()
            for f in feeds:
                m.run(f)
            times[k].append(time.perf_counter() - tic)
    report['images_per_sec'] = {k: round(len(feeds) / statistics.median(t),
                                         1) for k, t in times.items()}
    report['rewritten_time_over_float_per_round'] = [
        round(a / b, 2) for a, b in zip(times['rewritten'], times['float'])]
    print(json.dumps(report))


if __name__ == '__main__':
    main()
