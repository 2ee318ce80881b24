"""PaddleDetection 0.5 (static graph) weights, read without Paddle.

The 0.5 model zoo released ``.tar`` archives of one folder with one file per
variable, as ``fluid.io.save_persistables`` wrote them. Each file is one
DenseTensor (LoDTensor) stream, the format of Paddle's ``save`` op:

    uint32  version, 0
    uint64  number of LoD levels; per level a uint64 byte size and the offsets
    uint32  tensor version, 0
    int32   byte size of a TensorDesc protobuf: data_type = 1, dims = 2
    ...     the data, C order, little endian

This module parses that with numpy: it reads straight from the tar stream
(no extraction of a few hundred files), checks every size and names the file
and the field when one is bad. Paddle's own readers do not do for this:
``paddle.static.load_program_state`` returns ``{}`` under PIR without a
word, and ``paddle.load(folder)`` (which reads good files the same, the tests
compare) needs the files on disk and fills a truncated tensor's missing bytes
from uninitialised memory without an error (docs/weights.md).
"""
import os
import re
import struct
import tarfile

import numpy as np

from ..logger import get_logger
from ..errors import WeightsFileError
from .static_names import detect_family, to_static, to_v2

__all__ = ['StaticArchive', 'read_static', 'parse_tensor', 'OPTIMIZER_STATE']

# Training archives also hold the optimizer's state: Momentum velocities,
# Adam moments, the learning rate and its step counter. Skipped, counted.
OPTIMIZER_STATE = re.compile(
    r'(_velocity|_moment[12]|_beta[12]_pow_acc)_\d+\Z'
    r'|\Alearning_rate_\d+\Z|\A@LR_DECAY_COUNTER@\Z')

# framework.proto VarType.Type -> numpy (BF16 and complex types: not weights
# of any 0.5 model)
_DTYPES = {0: np.bool_, 1: '<i2', 2: '<i4', 3: '<i8', 4: '<f2', 5: '<f4',
           6: '<f8', 20: np.uint8, 21: np.int8}
_SHOW = 6
_INFERENCE_HINT = ('; __model__ and __params__ make an exported inference '
                   'model, whose weights are one combined file: use the '
                   'training archive instead')
logger = get_logger()


class _Stream:
    """Reads fields off one file's bytes; errors name the file and field."""

    def __init__(self, data, where):
        self.data, self.where, self.pos = data, where, 0

    def fail(self, what):
        raise WeightsFileError('cannot read {}: {} (not a Paddle tensor '
                               'file, or a damaged one)'.format(
                                   self.where, what))

    def take(self, n, field):
        if self.pos + n > len(self.data):
            self.fail('truncated in {}: {} bytes, {} needed at offset {}'
                      .format(field, len(self.data), self.pos + n, self.pos))
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt, field):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), field))[0]


def _varint(buf, pos, s):
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            s.fail('TensorDesc: bad varint')
        b = buf[pos]
        pos += 1
        value |= (b & 0x7f) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _tensor_desc(buf, s):
    """The two fields of framework.proto's TensorDesc; `dims` may come
    packed or not (proto2 writers differ)."""
    dtype, dims, pos = None, [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, s)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, s)
            if field == 1:
                dtype = value
            elif field == 2:
                dims.append(value - (1 << 64) if value >> 63 else value)
        elif wire == 2:
            size, pos = _varint(buf, pos, s)
            end = pos + size
            if end > len(buf):
                s.fail('TensorDesc: field {} overruns'.format(field))
            while field == 2 and pos < end:
                value, pos = _varint(buf, pos, s)
                dims.append(value - (1 << 64) if value >> 63 else value)
            pos = end
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            s.fail('TensorDesc: wire type {}'.format(wire))
    if dtype is None:
        s.fail('TensorDesc: no data_type')
    return dtype, dims


def parse_tensor(data, where):
    """One variable's file (bytes) -> numpy array."""
    s = _Stream(data, where)
    version = s.unpack('<I', 'version')
    if version != 0:
        s.fail('version field is {}, expected 0'.format(version))
    levels = s.unpack('<Q', 'LoD level count')
    if levels > 32:
        s.fail('LoD level count is {}'.format(levels))
    for _ in range(levels):
        s.take(s.unpack('<Q', 'LoD level size'), 'LoD level')
    version = s.unpack('<I', 'tensor version')
    if version != 0:
        s.fail('tensor version field is {}, expected 0'.format(version))
    size = s.unpack('<i', 'TensorDesc size')
    if not 0 < size < 4096:
        s.fail('TensorDesc size is {}'.format(size))
    code, dims = _tensor_desc(s.take(size, 'TensorDesc'), s)
    if code not in _DTYPES:
        s.fail('data type {} is not supported'.format(code))
    if any(d < 0 for d in dims):
        s.fail('negative dimension in {}'.format(dims))
    dtype = np.dtype(_DTYPES[code])
    count = int(np.prod(dims, dtype=np.int64))
    raw = s.take(count * dtype.itemsize, 'data of shape {} {}'.format(
        dims, dtype.name))
    if s.pos != len(data):
        s.fail('{} bytes after the data of shape {} {}'.format(
            len(data) - s.pos, dims, dtype.name))
    return np.frombuffer(raw, dtype).reshape(dims).astype(dtype.newbyteorder(
        '='), copy=True)


def _files_in_folder(path):
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            yield name, full, lambda full=full: _read_file(full)


def _read_file(path):
    with open(path, 'rb') as f:
        return f.read()


def _files_in_tar(path, tar):
    for member in tar:
        if member.isfile() or member.islnk():  # tar stores a repeat as a link
            name = member.name.rstrip('/').rsplit('/', 1)[-1]
            yield name, '{} (member {})'.format(path, member.name), \
                lambda m=member: tar.extractfile(m).read()


def _read_variables(path):
    """{0.5 name: array}, skipped optimizer names, skipped other files."""
    arrays, optimizer, other, where_of = {}, [], [], {}

    def take(files):
        for name, where, read in files:
            if name.startswith('.') or name in ('__model__', '__params__'):
                other.append(name)  # tar metadata, or not a variable
            elif OPTIMIZER_STATE.search(name):
                optimizer.append(name)
            elif name in arrays:
                raise WeightsFileError(
                    'cannot read {}: variable {} appears twice ({} and {})'
                    .format(path, name, where_of[name], where))
            else:
                arrays[name] = parse_tensor(read(), where)
                where_of[name] = where

    if os.path.isdir(path):
        take(_files_in_folder(path))
    else:
        try:
            with tarfile.open(path, 'r:*') as tar:
                take(_files_in_tar(path, tar))
        except (tarfile.TarError, EOFError, OSError) as e:
            raise WeightsFileError('cannot read tar archive {}: truncated or '
                                   'corrupt ({}: {})'.format(
                                       path, type(e).__name__, e)) from None
    return arrays, optimizer, other


def _affine_channel(names):
    """Norm layers with scale and offset but no moving mean and variance:
    0.5's `affine_channel` norm (a frozen, folded batch norm)."""
    out = []
    for n in names:
        m = re.match(r'(.+)([_.])scale\Z', n)
        if m:
            base, sep = m.groups()
            var = 'variance' if sep == '_' else 'var'
            if base + sep + 'offset' in names and not (
                    base + sep + 'mean' in names or base + sep + var in names):
                out.append(base)
    return out


def _listed(names):
    return ', '.join(names[:_SHOW]) + (' ... and {} more'.format(
        len(names) - _SHOW) if len(names) > _SHOW else '')


class StaticArchive:
    """What read_static found: `state` maps ppdet 2.x names to arrays (a
    variable no rule knows keeps its 0.5 name, so a load reports it as
    unexpected); `skipped` lists the optimizer state, `other` the files that
    are not variables."""

    def __init__(self, path, family, state, source, skipped, other):
        self.path, self.family, self.state = path, family, state
        self._source, self.skipped, self.other = source, skipped, other

    def file_name(self, key):
        """The 0.5 name for a ppdet 2.x key (for messages)."""
        return self._source.get(key) or to_static(key, self.family)

    def describe(self):
        return 'PaddleDetection 0.5 archive, {} names mapped to ppdet 2.x' \
            .format(self.family)


def read_static(path):
    """A 0.5 archive (tar, tar.gz) or its extracted folder -> StaticArchive.
    Raises WeightsFileError for a damaged file, a model with affine_channel
    norms, or names of another architecture."""
    arrays, skipped, other = _read_variables(path)
    names = set(arrays)
    if not arrays:
        found = skipped + other
        raise WeightsFileError('weights archive {} holds no variables{}{}'
                               .format(path, ' (only: {})'.format(
                                   _listed(found)) if found else '',
                                   _INFERENCE_HINT if '__params__' in other
                                   else ''))
    affine = _affine_channel(names)
    if affine:
        raise WeightsFileError(
            '{} comes from a model with affine_channel norms: {} norm layers '
            'have a scale and an offset but no moving mean and variance ({}). '
            'ppdet 2.x YOLOv3 uses batch norm; these weights do not fit it.'
            .format(path, len(affine), _listed(sorted(affine))))
    family = detect_family(names)
    if family is None:
        raise WeightsFileError(
            'cannot read {} as a PaddleDetection 0.5 YOLOv3 archive: its '
            'variable names are neither ResNet\'s (bn_conv1_scale, '
            'res2a_branch2a_weights, ...) nor MobileNetV1\'s (conv1_bn_scale, '
            'conv2_1_dw_weights, ...); first names: {}'.format(
                path, _listed(sorted(names))))
    state, source = {}, {}
    for name, value in arrays.items():
        new = to_v2(name, family) or name
        if new in state:  # two 0.5 names for one 2.x name: a bug in the map
            raise WeightsFileError('cannot read {}: {} and {} both map to {}'
                                   .format(path, source[new], name, new))
        state[new], source[new] = value, name
    if other:
        logger.info('{}: skipped {} file(s) that are not variables: {}'
                    .format(path, len(other), _listed(other)))
    return StaticArchive(path, family, state, source, skipped, other)

