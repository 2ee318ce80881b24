"""Shared fixtures: a small demo VOC dataset on disk and tiny configs that
train in seconds on a CPU."""
import functools
import http.server
import os
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tools'))

STUDENT = os.path.join(ROOT, 'configs/demo/yolov3_mobilenet_v1_demo.yml')
TEACHER = os.path.join(ROOT, 'configs/demo/yolov3_r34_demo.yml')


@pytest.fixture(scope='session')
def demo_voc(tmp_path_factory):
    from detdistill.data.demo import make_demo_voc
    out = str(tmp_path_factory.mktemp('demo_voc'))
    make_demo_voc(out, num_images=40, ratio=0.8, seed=0)
    return out


def tiny_opts(data_dir, save_dir, epoch=1, **extra):
    """-o overrides: the demo configs on `data_dir`, batch 4, checkpoints
    under `save_dir`, a log line every 2 steps."""
    opts = {'TrainDataset.dataset_dir': data_dir,
            'EvalDataset.dataset_dir': data_dir,
            'TrainReader.batch_size': 4, 'save_dir': save_dir,
            'epoch': epoch, 'snapshot_epoch': 1, 'log_iter': 2}
    opts.update(extra)
    return ['{}={}'.format(k, v) for k, v in opts.items()]


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.gets.append(self.path)
        time.sleep(self.server.delay)
        super().do_GET()


@pytest.fixture
def http_server(tmp_path):
    """A loopback HTTP server over tmp_path/'www': yields (server, root,
    base URL). `server.gets` lists the paths of the GETs it received;
    `server.delay` (seconds) holds each answer back."""
    root = tmp_path / 'www'
    root.mkdir()
    srv = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(_Handler, directory=str(root)))
    srv.gets, srv.delay = [], 0
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, root, 'http://127.0.0.1:{}/'.format(srv.server_port)
    srv.shutdown()
    srv.server_close()
