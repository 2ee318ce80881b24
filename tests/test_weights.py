"""Weight loading reports every mismatch; URLs download once into a cache,
with checksums; unreachable URLs and truncated files give clear errors."""
import functools
import http.server
import os
import socket
import threading

import numpy as np
import paddle
import pytest

from conftest import STUDENT
from detdistill.config import build_model, load_config
from detdistill.weights import (WeightsDownloadError, WeightsMismatchError,
                                load_pretrain, load_weights, resolve_weights)


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp('w')
    paddle.seed(1)
    model = build_model(load_config(STUDENT))
    path = str(d / 'student.pdparams')
    paddle.save(model.state_dict(), path)
    coco = build_model(load_config(STUDENT, ['num_classes=80']))
    paddle.save(coco.state_dict(), str(d / 'coco80.pdparams'))
    paddle.save({k[len('backbone.'):]: v for k, v in
                 model.state_dict().items() if k.startswith('backbone.')},
                str(d / 'imagenet_backbone.pdparams'))
    return d, model.state_dict()


def test_round_trip_and_prefix_without_extension(ckpt):
    d, saved = ckpt
    model = build_model(load_config(STUDENT))
    report = load_weights(model, str(d / 'student'))  # PaddleDetection style
    assert len(report.matched) == len(saved)
    for k, v in model.state_dict().items():
        assert np.array_equal(v.numpy(), saved[k].numpy()), k


def test_other_class_count_is_reported_not_silent(ckpt, caplog):
    d, saved = ckpt
    with pytest.raises(WeightsMismatchError) as e:
        load_weights(build_model(load_config(STUDENT)),
                     str(d / 'coco80.pdparams'))
    assert 'coco80.pdparams' in str(e.value)
    assert 'yolo_head.yolo_output.0.weight [33, 128, 1, 1] in model vs ' \
        '[255, 128, 1, 1] in file' in str(e.value)
    model = build_model(load_config(STUDENT))
    head_init = model.state_dict()['yolo_head.yolo_output.0.weight'].numpy()
    report = load_pretrain(model, str(d / 'coco80.pdparams'))
    assert sorted(report.mismatched) == sorted(
        'yolo_head.yolo_output.{}.{}'.format(i, p) for i in range(3)
        for p in ('weight', 'bias'))
    state = model.state_dict()
    assert np.array_equal(state['yolo_head.yolo_output.0.weight'].numpy(),
                          head_init)
    coco = paddle.load(str(d / 'coco80.pdparams'))
    assert np.array_equal(state['backbone.conv1._conv.weight'].numpy(),
                          coco['backbone.conv1._conv.weight'].numpy())
    assert 'Kept the initialisation of 6 layer(s)' in caplog.text


def test_imagenet_backbone_checkpoint(ckpt):
    d, saved = ckpt
    model = build_model(load_config(STUDENT))
    report = load_pretrain(model, str(d / 'imagenet_backbone.pdparams'))
    assert all(k.startswith('backbone.') for k in report.matched)
    assert np.array_equal(model.state_dict()['backbone.conv1._conv.weight']
                          .numpy(), saved['backbone.conv1._conv.weight']
                          .numpy())


def test_truncated_file_is_named(ckpt, tmp_path):
    d, _ = ckpt
    data = open(d / 'student.pdparams', 'rb').read()
    bad = tmp_path / 'bad.pdparams'
    bad.write_bytes(data[:len(data) // 2])
    with pytest.raises(WeightsMismatchError, match='bad.pdparams'):
        load_weights(build_model(load_config(STUDENT)), str(bad))
    with pytest.raises(FileNotFoundError, match='nope'):
        resolve_weights(str(tmp_path / 'nope'))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_is_cached_and_checked(ckpt, tmp_path, monkeypatch):
    import hashlib
    d, _ = ckpt
    monkeypatch.setenv('DETDISTILL_CACHE', str(tmp_path / 'cache'))
    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(_Quiet, directory=str(d)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = 'http://127.0.0.1:{}/student.pdparams'.format(server.server_port)
    digest = hashlib.sha256(open(d / 'student.pdparams', 'rb').read()) \
        .hexdigest()
    try:
        with pytest.raises(WeightsDownloadError, match='checksum mismatch'):
            resolve_weights(url + '#sha256=' + '0' * 64)
        path = resolve_weights(url + '#sha256=' + digest)
    finally:
        server.shutdown()
        server.server_close()
    assert open(path + '.sha256').read().strip() == digest
    assert resolve_weights(url) == path  # server gone: served from the cache
    load_weights(build_model(load_config(STUDENT)), url)
    assert resolve_weights('file://' + str(d / 'student.pdparams'))


def test_unreachable_url_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv('DETDISTILL_CACHE', str(tmp_path / 'cache'))
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    url = 'http://127.0.0.1:{}/teacher.pdparams'.format(port)
    with pytest.raises(WeightsDownloadError, match='cannot download ' + url):
        resolve_weights(url)
    assert not os.listdir(tmp_path / 'cache' / os.listdir(
        tmp_path / 'cache')[0])  # no partial file left behind
