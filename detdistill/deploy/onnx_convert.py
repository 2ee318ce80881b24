"""Paddle 3 PIR inference model -> model.onnx with paddle2onnx 2.1.0, without
changing the user's environment. What is worked around (verify.py then
compares the ONNX model's outputs with the dygraph model's anyway):

- Paddle 3.3 writes some float attributes as float64 (`a_f64` in
  model.json). paddle2onnx rejects nearest_interp's float64 `scale` array
  ("the 0th elementwise MUST be ir::FloatAttribute", Paddle2ONNX #1618) and
  its PIR parser reads float64 scalars such as leaky_relu's `negative_slope`
  as uninitialised memory (#1646: wrong outputs, sometimes). paddle2onnx gets
  a copy of the program with exactly those attributes as float32. Paddle
  itself requires them float64 (it refuses the copy), so model.json stays as
  Paddle wrote it.
- paddle2onnx's default `optimize_tool="polygraphy"` sets
  POLYGRAPHY_AUTOINSTALL_DEPS=1 and polygraphy then pip-installs packages
  (numpy 2 among them) into the running environment. We take the model
  bytes (`save_file=None`), a path that runs no optimizer, pass
  `optimize_tool="None"`, set POLYGRAPHY_AUTOINSTALL_DEPS=0 before the import,
  and requirements.txt installs paddle2onnx with --no-deps, so polygraphy is
  not even installed.
"""
import json
import os

from ..errors import OnnxExportError
from ..fileio import replaced
from ..logger import get_logger

__all__ = ['OnnxExportError', 'F64_ATTRS_READ_AS_F32', 'float32_attrs',
           'convert_to_onnx']

logger = get_logger()
# PaddleDetection's YOLOv3 ONNX recipe; paddle2onnx raises it if an op
# needs more
OPSET = 11

# (op, attribute) pairs that Paddle 3.3 stores as float64 and paddle2onnx
# 2.1.0 reads as float32. group_norm's epsilon (GFL's head): read as float64
# it made a GFL's ONNX scores differ by 0.005 and its boxes by 26.6 px.
F64_ATTRS_READ_AS_F32 = {('leaky_relu', 'negative_slope'),
                         ('nearest_interp', 'scale'),
                         ('bilinear_interp', 'scale'),
                         ('group_norm', 'epsilon')}


def _to_f32(attr):
    if attr.get('#') == '0.a_f64':
        attr['#'] = '0.a_f32'
        return True
    if attr.get('#') == '0.a_array':
        return any([_to_f32(e) for e in attr['D'] if isinstance(e, dict)])
    return False


def _walk_ops(blocks_owner):
    for region in blocks_owner.get('regions', []):
        for block in region.get('blocks', []):
            for op in block.get('ops', []):
                yield op
                yield from _walk_ops(op)


def float32_attrs(program):
    """Rewrite, in the parsed model.json `program`, the float64 attributes
    of F64_ATTRS_READ_AS_F32 as float32. Returns how many were rewritten."""
    changed = 0
    for op in _walk_ops(program['program']):
        op_name = op.get('#', '').split('.', 1)[-1]
        for attr in op.get('A', []):
            # parameter ops keep a plain list here, not named attributes
            if isinstance(attr, dict) and \
                    (op_name, attr.get('N')) in F64_ATTRS_READ_AS_F32:
                changed += _to_f32(attr['AT'])
    return changed


def _paddle2onnx():
    os.environ['POLYGRAPHY_AUTOINSTALL_DEPS'] = '0'
    try:
        import paddle2onnx
    except ImportError as e:
        raise OnnxExportError(
            '--onnx needs paddle2onnx (requirements.txt: paddle2onnx, onnx, '
            'onnxruntime): {}'.format(e)) from None
    return paddle2onnx


def _fix_batch(model, batch_size):
    for inp in model.graph.input:
        inp.type.tensor_type.shape.dim[0].dim_value = batch_size


def _rename_outputs(model, names):
    if len(names) != len(model.graph.output):
        raise OnnxExportError('ONNX model has {} outputs, expected {} ({})'
                              .format(len(model.graph.output), len(names),
                                      ', '.join(names)))
    for out, new in zip(model.graph.output, names):
        old = out.name
        for node in model.graph.node:
            for names_ in (node.input, node.output):
                for i, name in enumerate(names_):
                    if name == old:
                        names_[i] = new
        out.name = new


def convert_to_onnx(model_dir, batch_size=None, output_names=None,
                    opset=OPSET, rewrite=None, out_dir=None):
    """model_dir/model.{json,pdiparams} -> model_dir/model.onnx (or
    out_dir/model.onnx). batch_size fixes the inputs' batch dimension (ONNX
    Runtime then refuses other batch sizes with a clear message);
    output_names renames the outputs; rewrite(model) edits the ModelProto
    before it is checked and saved (the INT8 export's QDQ nodes, opset >=
    13)."""
    import onnx
    p2o = _paddle2onnx()
    src = os.path.join(model_dir, 'model.json')
    params = os.path.join(model_dir, 'model.pdiparams')
    with open(src) as f:
        program = json.load(f)
    n = float32_attrs(program)
    patched = os.path.join(model_dir, '.model.paddle2onnx.json')
    with open(patched, 'w') as f:
        json.dump(program, f, separators=(',', ':'))
    try:
        # On a conversion error paddle2onnx prints it and calls
        # sys.exit(-1) (its logging.error): caught here, not our exit.
        data = p2o.export(patched, params, save_file=None,
                          opset_version=opset, auto_upgrade_opset=True,
                          enable_onnx_checker=True, optimize_tool='None')
    except (Exception, SystemExit) as e:
        data = None
        logger.error('paddle2onnx: {}: {}'.format(type(e).__name__, e))
    finally:
        os.remove(patched)
    if not data:
        raise OnnxExportError('paddle2onnx {} could not convert {} (see its '
                              'error above)'.format(p2o.__version__, src))
    model = onnx.load_from_string(data)
    if batch_size:
        _fix_batch(model, batch_size)
    if output_names:
        _rename_outputs(model, output_names)
    if rewrite is not None:
        rewrite(model)
    onnx.checker.check_model(model)
    out = os.path.join(out_dir or model_dir, 'model.onnx')
    replaced(out, lambda tmp: onnx.save(model, tmp))
    logger.info('ONNX: model.onnx (opset {}, {} float64 attributes passed to '
                'paddle2onnx as float32{})'.format(
                    max(o.version for o in model.opset_import), n,
                    ', batch {}'.format(batch_size) if batch_size else ''))
    return out
