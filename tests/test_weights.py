"""detdistill.weights on real (tiny) Paddle models: every mismatch is
reported or refused, never silent; URLs download once into a cache with
checksums; unreachable URLs and unreadable files give one clear error."""
import hashlib
import io
import os
import socket
import subprocess
import sys
import tarfile
import time

import numpy as np
import paddle
import pytest

from conftest import ROOT
from loopback import http_server  # noqa: F401  (a fixture)
from detdistill.errors import (WeightsDownloadError, WeightsFileError,
                               WeightsMismatchError)
from detdistill.config import build_model, load_config
from detdistill.weights import (HEAD_KEYS, load_pretrain, load_weights,
                                read_state_dict, resolve_weights)

# A small ppdet YOLOv3 (0.25-width MobileNetV1, ppdet's YOLOv3FPN and
# YOLOv3Head), the architecture of the student at a fraction of the size.
TINY_YOLOV3 = """
architecture: YOLOv3
norm_type: bn
num_classes: {num_classes}
YOLOv3:
  backbone: MobileNet
  neck: YOLOv3FPN
  yolo_head: YOLOv3Head
  post_process: BBoxPostProcess
MobileNet:
  scale: {scale}
  feature_maps: [4, 6, 13]
  with_extra_blocks: false
  extra_block_filters: []
YOLOv3Head:
  anchors: [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119],
            [116, 90], [156, 198], [373, 326]]
  anchor_masks: [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
  loss: YOLOv3Loss
YOLOv3Loss:
  ignore_thresh: 0.7
  downsample: [32, 16, 8]
  label_smooth: false
BBoxPostProcess:
  decode: {{name: YOLOBox, conf_thresh: 0.005, downsample_ratio: 32,
           clip_bbox: true}}
  nms: {{name: MultiClassNMS, keep_top_k: 100, score_threshold: 0.01,
        nms_threshold: 0.45, nms_top_k: 1000}}
"""
HEAD = ['yolo_head.yolo_output.{}.{}'.format(i, p) for i in range(3)
        for p in ('weight', 'bias')]
BACKBONE_KEY = 'backbone.conv1._conv.weight'


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """build(num_classes, scale, seed) -> model; ckpt: files of a 3-class
    model (and its state), a 5-class model and a 0.5-width model."""
    d = tmp_path_factory.mktemp('tiny')

    def build(num_classes=3, scale=0.25, seed=0):
        path = d / 'tiny_{}_{}.yml'.format(num_classes, scale)
        path.write_text(TINY_YOLOV3.format(num_classes=num_classes,
                                           scale=scale))
        paddle.seed(seed)
        return build_model(load_config(str(path)))

    saved = {k: v.numpy() for k, v in build(3, seed=1).state_dict().items()}
    paddle.save(saved, str(d / 'c3.pdparams'))
    paddle.save(build(5, seed=2).state_dict(), str(d / 'c5.pdparams'))
    paddle.save(build(3, scale=0.5, seed=3).state_dict(),
                str(d / 'wide.pdparams'))
    return build, d, saved


def _state(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def test_round_trip_and_paddledetection_style_prefix(tiny):
    build, d, saved = tiny
    model = build(seed=9)
    assert not np.array_equal(_state(model)[BACKBONE_KEY],
                              saved[BACKBONE_KEY])
    report = load_weights(model, str(d / 'c3'), log=[].append)  # no suffix
    assert report.path == str(d / 'c3.pdparams')
    assert report.complete and len(report.matched) == len(saved)
    for k, v in _state(model).items():
        assert np.array_equal(v, saved[k]), k


def test_other_class_count_is_refused_unless_allowed(tiny):
    build, d, saved = tiny
    with pytest.raises(WeightsMismatchError) as e:
        load_weights(build(), str(d / 'c5.pdparams'), log=[].append)
    msg = str(e.value)
    assert 'c5.pdparams' in msg and '6 shape-mismatched' in msg
    # 3 anchors x (5 + 3 classes) = 24 rows in the model, 30 in the file
    assert 'yolo_head.yolo_output.0.weight [24, 1024, 1, 1] in model vs ' \
        '[30, 1024, 1, 1] in file' in msg
    assert 'another number of classes' in msg


def test_allowed_head_mismatch_keeps_init_loads_the_rest_and_says_so(tiny):
    build, d, saved = tiny
    model = build(seed=4)
    before = _state(model)
    lines = []
    report = load_weights(model, str(d / 'c5.pdparams'),
                          allow_mismatch=[HEAD_KEYS], log=lines.append)
    assert sorted(report.kept) == sorted(report.mismatched) == sorted(HEAD)
    assert report.mismatched['yolo_head.yolo_output.2.bias'] == ([24], [30])
    assert len(report.matched) == len(before) - 6
    after, c5 = _state(model), paddle.load(str(d / 'c5.pdparams'))
    for k in HEAD:  # kept the model's initialisation
        assert np.array_equal(after[k], before[k]), k
    for k in (BACKBONE_KEY, 'neck.yolo_block.0.conv_module.conv0.conv.weight',
              'backbone.conv1._batch_norm._mean'):  # loaded from the file
        assert np.array_equal(after[k], c5[k].numpy()), k
        assert not np.array_equal(after[k], before[k]) or 'mean' in k
    warning = [ln for ln in lines if 'kept the model' in ln]
    assert len(warning) == 1  # one line per allowed group
    assert 'c5.pdparams' in warning[0] and '6 key(s)' in warning[0]
    for k in HEAD:
        assert k in warning[0]
    assert '[24, 256, 1, 1] in model vs [30, 256, 1, 1] in file' in warning[0]

    # load_pretrain (--pretrained) does the same with the head pattern
    model = build(seed=4)
    report = load_pretrain(model, str(d / 'c5.pdparams'), log=[].append)
    assert sorted(report.kept) == sorted(HEAD)


def test_unexpected_mismatches_are_errors_naming_file_and_keys(tiny, tmp_path):
    build, d, saved = tiny
    model = build(seed=5)
    before = _state(model)
    # another backbone width: shapes differ outside the allowed head
    with pytest.raises(WeightsMismatchError) as e:
        load_weights(model, str(d / 'wide.pdparams'),
                     allow_mismatch=HEAD_KEYS, log=[].append)
    msg = str(e.value)
    assert 'wide.pdparams' in msg and 'shape-mismatched' in msg
    assert 'backbone.conv1._conv.weight [8, 3, 3, 3] in model vs ' \
        '[16, 3, 3, 3] in file' in msg
    assert '... and' in msg  # long lists are cut
    for k, v in _state(model).items():  # nothing was loaded
        assert np.array_equal(v, before[k]), k
    # a key missing from the file, and one the model does not have
    state = dict(saved)
    del state['neck.yolo_block.0.conv_module.conv0.conv.weight']
    state['neck.extra.weight'] = np.zeros([2, 2], 'float32')
    paddle.save(state, str(tmp_path / 'odd.pdparams'))
    with pytest.raises(WeightsMismatchError) as e:
        load_weights(model, str(tmp_path / 'odd.pdparams'),
                     allow_mismatch=HEAD_KEYS, log=[].append)
    msg = str(e.value)
    assert 'odd.pdparams' in msg and '1 missing, 1 unexpected' in msg
    assert 'neck.yolo_block.0.conv_module.conv0.conv.weight [512, 256, 1, 1] '\
        'in model, missing from file' in msg
    assert 'neck.extra.weight [2, 2] in file, not in model' in msg
    # nothing fits at all (a distiller's whole state, say): say what differs
    paddle.save({'student.' + k: v for k, v in saved.items()},
                str(tmp_path / 'prefixed.pdparams'))
    with pytest.raises(WeightsMismatchError, match='No key matches: model '
                       'keys look like backbone.conv1._conv.weight'):
        load_weights(model, str(tmp_path / 'prefixed.pdparams'),
                     log=[].append)


def test_nested_checkpoint_and_imagenet_backbone(tiny, tmp_path):
    build, d, saved = tiny
    nested = str(tmp_path / 'ckpt.pdparams')
    paddle.save({'model': saved, 'epoch': 12, 'note': 'trainer state'}, nested)
    assert sorted(read_state_dict(nested)) == sorted(saved)
    model = build(seed=6)
    assert load_weights(model, nested, log=[].append).complete
    assert np.array_equal(_state(model)[HEAD[0]], saved[HEAD[0]])
    # PaddleDetection's ImageNet pretrain_weights: backbone keys, no prefix
    backbone = {k[len('backbone.'):]: v for k, v in saved.items()
                if k.startswith('backbone.')}
    backbone['fc.weight'] = np.zeros([8, 10], 'float32')
    paddle.save(backbone, str(tmp_path / 'imagenet.pdparams'))
    model = build(seed=7)
    report = load_pretrain(model, str(tmp_path / 'imagenet.pdparams'),
                           log=[].append)
    assert report.unexpected == ['backbone.fc.weight']
    assert all(k.startswith('backbone.') for k in report.matched)
    assert np.array_equal(_state(model)[BACKBONE_KEY], saved[BACKBONE_KEY])


def test_unreadable_files_are_named(tiny, tmp_path):
    build, d, saved = tiny
    data = (d / 'c3.pdparams').read_bytes()
    cases = {'half.pdparams': data[:len(data) // 2],
             'empty.pdparams': b'',
             'page.pdparams': b'<html><body>404 Not Found</body></html>'}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(WeightsFileError) as e:
            load_weights(build(), str(tmp_path / name), log=[].append)
        assert str(tmp_path / name) in str(e.value)
        assert isinstance(e.value, WeightsMismatchError)  # one handler: both
        assert 'Traceback' not in str(e.value)
    # not weights at all
    paddle.save({'epoch': 3}, str(tmp_path / 'meta.pdparams'))
    with pytest.raises(WeightsFileError, match='holds no weights'):
        read_state_dict(str(tmp_path / 'meta.pdparams'))
    # a static-graph era archive is recognised, not mistaken for a pickle,
    # and a damaged member is named with the field that is short
    with tarfile.open(tmp_path / 'yolov3_r34_voc.tar', 'w') as tar:
        info = tarfile.TarInfo('yolov3_r34_voc/conv1_weights')
        info.size = 4
        tar.addfile(info, io.BytesIO(b'\0' * 4))
    with pytest.raises(WeightsFileError, match=r'yolov3_r34_voc.tar \(member '
                       r'yolov3_r34_voc/conv1_weights\): truncated in LoD '
                       r'level count: 4 bytes, 12 needed at offset 4'):
        read_state_dict(str(tmp_path / 'yolov3_r34_voc.tar'))
    with pytest.raises(FileNotFoundError, match='nope.pdparams'):
        resolve_weights(str(tmp_path / 'nope'))


# -- downloads --------------------------------------------------------------

@pytest.fixture
def server(http_server):
    srv, root, base = http_server
    (root / 'w.pdparams').write_bytes(b'weights v1' * 1000)
    return srv, root, base


def _cached_files(cache):
    return sorted(os.path.relpath(os.path.join(r, f), cache)
                  for r, _, fs in os.walk(cache) for f in fs)


def test_download_once_then_offline(server, tmp_path):
    srv, root, base = server
    cache = str(tmp_path / 'cache')
    body = (root / 'w.pdparams').read_bytes()
    sha = hashlib.sha256(body).hexdigest()
    path = resolve_weights(base + 'w.pdparams#sha256=' + sha, cache,
                           progress=False)
    assert path.startswith(cache) and path.endswith('w.pdparams')
    assert open(path, 'rb').read() == body
    assert open(path + '.sha256').read().split() == [sha, 'w.pdparams']
    assert len(_cached_files(cache)) == 2  # no temporary file left
    srv.shutdown()
    srv.server_close()  # offline from here on
    assert resolve_weights(base + 'w.pdparams', cache) == path
    assert resolve_weights(base + 'w.pdparams', cache, sha256=sha) == path
    # the default cache is $DETDISTILL_CACHE
    os.environ['DETDISTILL_CACHE'] = cache
    try:
        assert resolve_weights(base + 'w.pdparams') == path
    finally:
        del os.environ['DETDISTILL_CACHE']


def test_checksums_are_checked(server, tmp_path):
    srv, root, base = server
    cache = str(tmp_path / 'cache')
    body = (root / 'w.pdparams').read_bytes()
    with pytest.raises(WeightsDownloadError) as e:
        resolve_weights(base + 'w.pdparams#sha256=' + '0' * 64, cache,
                        progress=False)
    assert 'checksum mismatch for {}w.pdparams: expected sha256'.format(
        base) in str(e.value)
    assert _cached_files(cache) == []  # nothing kept
    with pytest.raises(WeightsDownloadError, match='expected md5'):
        resolve_weights(base + 'w.pdparams', cache, md5='0' * 32,
                        progress=False)
    md5 = hashlib.md5(body).hexdigest()
    path = resolve_weights(base + 'w.pdparams#md5=' + md5, cache,
                           progress=False)
    # a cached copy changed on disk is fetched again
    open(path, 'wb').write(b'tampered')
    assert resolve_weights(base + 'w.pdparams', cache, progress=False) == path
    assert open(path, 'rb').read() == body


def test_unreachable_and_missing_urls_are_one_clear_error(server, tmp_path):
    srv, root, base = server
    cache = str(tmp_path / 'cache')
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    url = 'http://127.0.0.1:{}/teacher.pdparams'.format(port)
    t0 = time.time()
    with pytest.raises(WeightsDownloadError) as e:
        resolve_weights(url, cache, progress=False)
    assert time.time() - t0 < 10
    msg = str(e.value)
    assert msg.startswith('cannot download ' + url + ': ')
    assert '\n' not in msg and 'refused' in msg.lower()
    assert e.value.__suppress_context__  # no chained traceback
    with pytest.raises(WeightsDownloadError, match='HTTP 404'):
        resolve_weights(base + 'missing.pdparams', cache, progress=False)
    assert [f for f in _cached_files(cache) if 'part' in f] == []


def test_file_urls_and_loading_from_a_url(tiny, tmp_path):
    build, d, saved = tiny
    cache = str(tmp_path / 'cache')
    url = (d / 'c3.pdparams').as_uri()
    path = resolve_weights(url, cache, progress=False)
    assert path.startswith(cache)
    assert open(path, 'rb').read() == (d / 'c3.pdparams').read_bytes()
    model = build(seed=8)
    report = load_weights(model, url, cache_dir=cache, log=[].append)
    assert report.path == path and report.complete
    assert np.array_equal(_state(model)[BACKBONE_KEY], saved[BACKBONE_KEY])
    with pytest.raises(WeightsDownloadError, match='cannot download file:'):
        resolve_weights((tmp_path / 'none.pdparams').as_uri(), cache)


# -- several processes, one download ----------------------------------------

_RANK = """
import os, sys, time
from detdistill.weights import resolve_weights
url, cache, go = sys.argv[1:]
print('ready', flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
print(resolve_weights(url, cache, progress=False), flush=True)
"""


def test_processes_asking_at_once_download_once(server, tmp_path):
    """Two ranks of a distributed job (two processes, one cache) start the
    same download together: one GET reaches the server, the other process
    waits and uses the finished file."""
    srv, root, base = server
    srv.delay = 1.0  # the first answer is slow: the second asks meanwhile
    cache, go = str(tmp_path / 'cache'), str(tmp_path / 'go')
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = [subprocess.Popen(
        [sys.executable, '-c', _RANK, base + 'w.pdparams', cache, go],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)]
    for p in procs:  # both have imported paddle and wait at the line
        while p.stdout.readline() not in ('ready\n', ''):
            pass  # ppdet's import warnings
    open(go, 'w').close()
    results = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
    paths = [out.strip().splitlines()[-1] for out, _ in results]
    assert paths[0] == paths[1] and paths[0].startswith(cache)
    assert srv.gets == ['/w.pdparams']
    assert open(paths[0], 'rb').read() == (root / 'w.pdparams').read_bytes()
    assert sum('Waiting for ' in out for out, _ in results) == 1
    assert _cached_files(cache) == [  # no lock or temporary file left
        os.path.relpath(paths[0], cache),
        os.path.relpath(paths[0], cache) + '.sha256']


def test_a_stuck_download_elsewhere_is_an_error_not_a_hang(server, tmp_path):
    """Another process holds the download lock and its temporary file does
    not grow: give up with a message naming it, without a GET."""
    srv, root, base = server
    cache = str(tmp_path / 'cache')
    url = base + 'w.pdparams'
    dest = os.path.dirname(resolve_weights(url, str(tmp_path / 'probe'),
                                           progress=False))
    folder = os.path.join(cache, os.path.basename(dest))
    os.makedirs(folder)
    lock = os.path.join(folder, 'w.pdparams.lock')
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import fcntl, sys, time\n'
         'f = open(sys.argv[1], "w"); fcntl.flock(f, fcntl.LOCK_EX)\n'
         'f.write("4242"); f.flush(); print("locked", flush=True)\n'
         'time.sleep(60)', lock], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == 'locked\n'
        t0 = time.time()
        with pytest.raises(WeightsDownloadError) as e:
            resolve_weights(url, cache, timeout=0.5, progress=False)
        waited = time.time() - t0
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert 'process 4242 has been downloading it into {}'.format(
        os.path.join(folder, 'w.pdparams')) in str(e.value)
    assert 'for 3 s without progress' in str(e.value)
    assert 3 <= waited < 10
    assert srv.gets == ['/w.pdparams']  # only the probe's
