"""PaddleDetection 0.5 (static graph) variable names <-> ppdet 2.x names.

Read from PaddleDetection release/0.5: ``ppdet/modeling/backbones/resnet.py``
(with ``name_adapter.py``), ``mobilenet.py`` and
``ppdet/modeling/anchor_heads/yolo_head.py``, which name every parameter
through ``ParamAttr(name=...)``. The tensors themselves need no change: 0.5
and 2.x both store convolutions as OIHW and batch norm as four vectors.

Each rule is a pair of templates, 0.5 first; a ``{field}`` stands for a part
of the name that is copied (``s``, ``b``, ``x``, ``i``) or translated through
its table (the others). The same table maps both ways.
"""
import re

__all__ = ['FAMILIES', 'detect_family', 'to_v2', 'to_static']

# batch norm: the backbones write `_scale`, the YOLO head `.scale`, ...
_BN = {'scale': 'weight', 'offset': 'bias', 'mean': '_mean',
       'variance': '_variance'}
_NECK_BN = {'scale': 'weight', 'offset': 'bias', 'mean': '_mean',
            'var': '_variance'}
_BRANCH = {'2a': 'branch2a', '2b': 'branch2b', '2c': 'branch2c',
           '1': 'short'}
_DW_SEP = {'dw': '_depthwise_conv', 'sep': '_pointwise_conv'}
# YOLOv3Head._detection_block's '{j}.{0,1}', '2', 'tip' -> YoloDetBlock
_BLOCK = {'0.0': 'conv_module.conv0', '0.1': 'conv_module.conv1',
          '1.0': 'conv_module.conv2', '1.1': 'conv_module.conv3',
          '2': 'conv_module.route', 'tip': 'tip'}

# field -> regex (copied as is) or table (0.5 value -> 2.x value)
_FIELDS = {
    's': r'[2-5]',           # ResNet stage
    'b': r'[a-z]\d*',        # ResNet block: a, b, ... (res4b12 in deep nets)
    'x': r'\d+(?:_\d+)?',    # MobileNet layer: 2_1 ... 5_6, 6
    'i': r'\d+',             # YOLO level
    'bn': _BN, 'nbn': _NECK_BN, 'br': _BRANCH, 'dw': _DW_SEP,
    'blk': _BLOCK,
}

_YOLO = [
    ('yolo_block.{i}.{blk}.conv.weights',
     'neck.yolo_block.{i}.{blk}.conv.weight'),
    ('yolo_block.{i}.{blk}.bn.{nbn}',
     'neck.yolo_block.{i}.{blk}.batch_norm.{nbn}'),
    ('yolo_transition.{i}.conv.weights',
     'neck.yolo_transition.{i}.conv.weight'),
    ('yolo_transition.{i}.bn.{nbn}',
     'neck.yolo_transition.{i}.batch_norm.{nbn}'),
    ('yolo_output.{i}.conv.weights', 'yolo_head.yolo_output.{i}.weight'),
    ('yolo_output.{i}.conv.bias', 'yolo_head.yolo_output.{i}.bias'),
]

# Both backbones call their first convolution `conv1_weights`; the other
# names tell the family apart (detect_family).
FAMILIES = {
    'ResNet': [
        ('conv1_weights', 'backbone.conv1.conv1.conv.weight'),
        ('bn_conv1_{bn}', 'backbone.conv1.conv1.norm.{bn}'),
        ('res{s}{b}_branch{br}_weights',
         'backbone.res{s}.res{s}{b}.{br}.conv.weight'),
        ('bn{s}{b}_branch{br}_{bn}',
         'backbone.res{s}.res{s}{b}.{br}.norm.{bn}'),
    ] + _YOLO,
    'MobileNet': [
        ('conv1_weights', 'backbone.conv1._conv.weight'),
        ('conv1_bn_{bn}', 'backbone.conv1._batch_norm.{bn}'),
        ('conv{x}_{dw}_weights', 'backbone.conv{x}.{dw}._conv.weight'),
        ('conv{x}_{dw}_bn_{bn}', 'backbone.conv{x}.{dw}._batch_norm.{bn}'),
    ] + _YOLO,
}


def _regex(template, side):
    """A template as a regex with one named group per field; a field used
    twice (`res{s}{b}...res{s}{b}`) must match the same text both times."""
    out, seen, pos = [], set(), 0
    for m in re.finditer(r'\{(\w+)\}', template):
        out.append(re.escape(template[pos:m.start()]))
        name, pos = m.group(1), m.end()
        if name in seen:
            out.append('(?P={})'.format(name))
            continue
        seen.add(name)
        spec = _FIELDS[name]
        if isinstance(spec, dict):
            values = spec if side == 0 else spec.values()
            spec = '|'.join(re.escape(v) for v in
                            sorted(values, key=len, reverse=True))
        out.append('(?P<{}>{})'.format(name, spec))
    out.append(re.escape(template[pos:]))
    return re.compile(''.join(out) + r'\Z')


_RULES = {family: [(_regex(a, 0), _regex(b, 1), a, b) for a, b in rules]
          for family, rules in FAMILIES.items()}


def _translate(name, family, side):
    for rx in _RULES[family]:
        m = rx[side].match(name)
        if not m:
            continue
        fields = {}
        for k, v in m.groupdict().items():
            table = _FIELDS[k]
            if isinstance(table, dict):
                v = table[v] if side == 0 else \
                    next(a for a, b in table.items() if b == v)
            fields[k] = v
        return rx[3 - side].format(**fields)
    return None


def to_v2(name, family):
    """ppdet 2.x name of a 0.5 variable, or None if no rule knows it."""
    return _translate(name, family, 0)


def to_static(name, family):
    """0.5 variable name of a ppdet 2.x parameter, or None."""
    return _translate(name, family, 1)


def detect_family(names):
    """'ResNet' or 'MobileNet' from a 0.5 archive's variable names (by the
    names only one family has: `bn_conv1_scale` vs `conv1_bn_scale`), or
    None when neither or both fit."""
    found = [f for f in FAMILIES if any(
        to_v2(n, f) for n in names if n != 'conv1_weights'
        and not n.startswith('yolo_'))]
    return found[0] if len(found) == 1 else None
