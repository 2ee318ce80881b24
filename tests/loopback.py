"""A loopback HTTP server fixture for download tests: import `http_server`
into a test module to use it."""
import functools
import http.server
import threading
import time

import pytest


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
