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


def test_listening_beyond_this_machine_turns_debug_off_and_names_the_allowed_hosts():
    """`make run HOST=0.0.0.0`: a debug page would show code, settings and every URL to the network, and the default
    allowed hosts (loopback only) would refuse every other machine's requests."""
    from webapp.quickstart import is_loopback, network_settings

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("[::1]") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("lab-box")
    assert network_settings("127.0.0.1", {}, ["lab-box"]) == ({}, [])
    extra, lines = network_settings("0.0.0.0", {}, ["lab-box", "10.1.2.3", "fe80::1"])
    assert extra["DJANGO_DEBUG"] == "false" and "DEBUG off" in lines[0]
    assert extra["DJANGO_ALLOWED_HOSTS"].split(",") == ["127.0.0.1", "localhost", "[::1]", "lab-box", "10.1.2.3",
                                                       "[fe80::1]"]
    extra, _ = network_settings("10.1.2.3", {}, [])
    assert extra["DJANGO_ALLOWED_HOSTS"].endswith(",10.1.2.3")
    # what the environment says wins
    assert network_settings("0.0.0.0", {"DJANGO_DEBUG": "true", "DJANGO_ALLOWED_HOSTS": "x.org"}, ["lab-box"]) == ({}, [])


def test_the_local_settings_follow_what_the_quick_start_sets(tmp_path):
    """DEBUG off and the named hosts reach Django's settings (the local settings only default DEBUG to on)."""
    import os

    code = "from django.conf import settings; print(settings.DEBUG, settings.ALLOWED_HOSTS)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings.local", "DJANGO_DEBUG": "false",
           "DJANGO_ALLOWED_HOSTS": "127.0.0.1,lab-box", "VIDEODPO_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", "import django; django.setup(); " + code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "False ['127.0.0.1', 'lab-box']"
