"""`make run` prints the "web on http://..." line only once the web server answers."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.conftest import free_port
from webapp.quickstart import wait_until_answering

LATE_SERVER = """
import http.server, sys, time
time.sleep(1.5)  # a server that takes a while to listen, like runserver loading the app
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.BaseHTTPRequestHandler).serve_forever()
"""


def test_waits_for_the_server_to_answer_and_gives_up_when_it_exits():
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", LATE_SERVER, str(port)])
    try:
        started = time.monotonic()
        assert wait_until_answering(f"http://127.0.0.1:{port}/", server, timeout_s=60)  # it answers 501: an answer
        assert time.monotonic() - started >= 1.4
    finally:
        server.kill()
        server.wait()
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    started = time.monotonic()
    assert not wait_until_answering(f"http://127.0.0.1:{free_port()}/", dead, timeout_s=60)
    assert time.monotonic() - started < 30
