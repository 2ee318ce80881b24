"""What Paddle 3.3.1's and PaddleSlim 2.6's own quantization paths do on this
stack (docs/quantization.md quotes these): each check runs in a child
process (paddle2onnx aborts the process on failure) and prints one line.

python tools/dev/quant_spike.py [CHECK ...]   (default: all)

A 2-conv toy network (conv-BN-ReLU-conv, 16x16 input) unless stated.
"""
import os
import subprocess
import sys
import tempfile

CHECKS = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def _toy():
    import paddle
    from paddle import nn

    class Toy(nn.Layer):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2D(3, 8, 3)
            self.bn = nn.BatchNorm2D(8)
            self.c2 = nn.Conv2D(8, 4, 1)

        def forward(self, x):
            return self.c2(nn.functional.relu(self.bn(self.c(x))))
    paddle.seed(0)
    m = Toy()
    m.eval()
    return m


def _paddle_ptq(model, x):
    from paddle.nn import Conv2D
    from paddle.quantization import PTQ, QuantConfig
    from paddle.quantization.observers import AbsmaxObserver
    from paddleslim.quant.observers import AbsMaxChannelWiseWeightObserver
    q = QuantConfig(activation=None, weight=None)
    q.add_type_config(Conv2D, activation=AbsmaxObserver(),
                      weight=AbsMaxChannelWiseWeightObserver())
    ptq = PTQ(q)
    qm = ptq.quantize(model)
    qm(x)
    return ptq, qm


def _save(layer, path, batch):
    import paddle
    paddle.jit.save(layer, path, input_spec=[paddle.static.InputSpec(
        [batch, 3, 16, 16], 'float32', 'x')])


def _predict(path, x, mode='off'):
    from paddle import inference
    c = inference.Config(path + '.json', path + '.pdiparams')
    if mode == 'off':
        c.disable_mkldnn()
    else:
        c.enable_mkldnn()
        if mode == 'int8':
            c.enable_mkldnn_int8()
    c.disable_glog_info()
    p = inference.create_predictor(c)
    h = p.get_input_handle('x')
    h.reshape(x.shape)
    h.copy_from_cpu(x.numpy())
    p.run()
    return p.get_output_handle(p.get_output_names()[0]).copy_to_cpu()


@check
def convert_jit_save_dynamic_batch(tmp):
    """Paddle's convert() then jit.save with a dynamic batch."""
    import paddle
    x = paddle.rand([2, 3, 16, 16])
    ptq, qm = _paddle_ptq(_toy(), x)
    cm = ptq.convert(qm)
    try:
        _save(cm, os.path.join(tmp, 'm'), None)
        return 'saved'
    except Exception as e:
        lines = [line.strip() for line in str(e).splitlines()
                 if 'InvalidArgument' in line or 'Error' in line]
        return 'FAILS: {}: {}'.format(type(e).__name__,
                                      (lines or [str(e)])[-1][:200])


@check
def convert_int8_weights_paddle_inference(tmp):
    """convert() (weights stored as integers), fixed batch, Paddle
    Inference with oneDNN off."""
    import paddle
    x = paddle.rand([2, 3, 16, 16])
    ptq, qm = _paddle_ptq(_toy(), x)
    cm = ptq.convert(qm)
    _save(cm, os.path.join(tmp, 'm'), 2)
    try:
        _predict(os.path.join(tmp, 'm'), x)
        return 'runs'
    except Exception as e:
        msg = [line for line in str(e).splitlines() if 'Error' in line]
        return 'FAILS to load: {}'.format(msg[-1].strip()[:160] if msg
                                          else str(e)[:160])


@check
def convert_remain_weight_paddle_inference(tmp):
    """convert(remain_weight=True), fixed batch: Paddle Inference output
    against the quantized dygraph model and against the float model."""
    import paddle
    model = _toy()
    x = paddle.rand([2, 3, 16, 16])
    ptq, qm = _paddle_ptq(model, x)
    cm = ptq.convert(qm, remain_weight=True)
    _save(cm, os.path.join(tmp, 'm'), 2)
    quant, flt = cm(x).numpy(), model(x).numpy()
    out = ['float vs quantized dygraph {:.4g}'.format(abs(flt - quant).max())]
    for mode in ('off', 'onednn', 'int8'):
        try:
            y = _predict(os.path.join(tmp, 'm'), x, mode)
            out.append('{}: vs quantized {:.4g}, vs float {:.4g}'.format(
                {'off': 'oneDNN off', 'onednn': 'oneDNN on',
                 'int8': 'oneDNN + enable_mkldnn_int8'}[mode],
                abs(y - quant).max(), abs(y - flt).max()))
        except Exception as e:
            out.append('{}: FAILS {}'.format(mode, str(e)[:100]))
    return '; '.join(out)


@check
def paddle2onnx_int8_qdq(tmp):
    """paddle2onnx 2.1.0 on the remain_weight=True program (int8
    quantize_linear / dequantize_linear)."""
    import paddle
    x = paddle.rand([2, 3, 16, 16])
    ptq, qm = _paddle_ptq(_toy(), x)
    _save(ptq.convert(qm, remain_weight=True), os.path.join(tmp, 'm'), 2)
    code = ('import os; os.environ["POLYGRAPHY_AUTOINSTALL_DEPS"]="0"; '
            'import paddle2onnx as p; d=p.export({!r}, {!r}, save_file=None, '
            'opset_version=13, optimize_tool="None"); print(len(d or b""))'
            .format(os.path.join(tmp, 'm.json'),
                    os.path.join(tmp, 'm.pdiparams')))
    r = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, timeout=300)
    err = [line for line in (r.stdout + r.stderr).splitlines()
           if 'ERROR' in line or 'Only support' in line]
    return 'exit code {}; {}'.format(r.returncode, err[0].strip()[:160]
                                     if err else r.stdout.strip()[-80:])


@check
def yolo_head_outputs_observed(tmp):
    """paddle.quantization PTQ on the demo student, without and with
    rebinding ppdet's Python lists of layers: how many quantized convs saw
    data in one forward."""
    import copy
    import paddle
    from detdistill.config import build_model, load_config
    from detdistill.quant.prepare import prepare, quanted_convs
    cfg = load_config('configs/demo/yolov3_mobilenet_v1_demo.yml')
    model = build_model(cfg)
    model.eval()
    batch = {'image': paddle.rand([1, 3, 160, 160]),
             'im_shape': paddle.to_tensor([[160., 160.]]),
             'scale_factor': paddle.to_tensor([[1., 1.]])}
    out = []
    for name in ('without rebinding', 'with rebinding'):
        if name == 'with rebinding':
            qm = prepare(model, 'ptq')
        else:
            ptq, qm = _paddle_ptq_only(copy.deepcopy(model))
        with paddle.no_grad():
            qm(batch)
        convs = quanted_convs(qm)
        seen = sum(c.activation_quanter._max is not None
                   for c in convs.values())
        out.append('{}: {} of {} observed'.format(name, seen, len(convs)))
    return '; '.join(out)


def _paddle_ptq_only(model):
    from paddle.quantization import PTQ
    from detdistill.quant.prepare import quant_config
    ptq = PTQ(quant_config('ptq'))
    return ptq, ptq.quantize(model, inplace=True)


@check
def paddleslim_dygraph_ptq(tmp):
    """PaddleSlim 2.6's dygraph PTQ class (paddleslim.PTQ) on the toy:
    quantize, calibrate, save_quantized_model."""
    import paddle
    from paddleslim import PTQ
    model = _toy()
    x = paddle.rand([2, 3, 16, 16])
    try:
        ptq = PTQ()
        qm = ptq.quantize(model)
        qm(x)
        ptq.save_quantized_model(qm, os.path.join(tmp, 'slim'), input_spec=[
            paddle.static.InputSpec([None, 3, 16, 16], 'float32', 'x')])
        return 'saved: ' + ', '.join(sorted(os.listdir(tmp)))
    except Exception as e:
        return 'FAILS: {}: {}'.format(type(e).__name__,
                                      str(e).strip().splitlines()[-1][:160])


@check
def onnx_qdq_bit_exact(tmp):
    """detdistill's fake quantization against ONNX Runtime's
    QuantizeLinear + DequantizeLinear on 76,800 random values."""
    import numpy as np
    import onnxruntime as ort
    import paddle
    from onnx import TensorProto, helper, numpy_helper
    from detdistill.quant.qdq import fake_quant
    x = (np.random.RandomState(0).randn(1, 3, 160, 160) * 2).astype(
        'float32')
    s = np.float32(2.64 / 127)
    g = helper.make_graph(
        [helper.make_node('QuantizeLinear', ['x', 's', 'z'], ['q']),
         helper.make_node('DequantizeLinear', ['q', 's', 'z'], ['y'])], 'g',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, x.shape)],
        [numpy_helper.from_array(np.array(s), 's'),
         numpy_helper.from_array(np.array(0, 'int8'), 'z')])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 13)])
    m.ir_version = 8
    y = ort.InferenceSession(m.SerializeToString(), providers=[
        'CPUExecutionProvider']).run(None, {'x': x})[0]
    p = fake_quant(paddle.to_tensor(x), paddle.to_tensor([s])).numpy()
    return '{} mismatches of {} values'.format(int((y != p).sum()), y.size)


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('checks', nargs='*', choices=[[]] + list(CHECKS),
                   help='default: all')
    p.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print('RESULT', CHECKS[args.child](tmp), flush=True)
        return
    for name in args.checks or list(CHECKS):
        r = subprocess.run([sys.executable, __file__, '--child', name],
                           capture_output=True, text=True, timeout=600)
        res = [line for line in r.stdout.splitlines()
               if line.startswith('RESULT ')]
        print('{}: {}'.format(name, res[-1][7:] if res else
                              'child exit {}: {}'.format(
                                  r.returncode, r.stderr.strip()[-300:])))


if __name__ == '__main__':
    main()
