"""Settings of the worker processes these tests start: the test settings plus short recovery timings, read from the
environment the test passes (``start_worker(extra_env={"DJANGO_SETTINGS_MODULE": __name__, ...})``)."""

import os

from webapp.settings.test import *  # noqa: F401,F403
from webapp.settings.test import VIDEODPO

VIDEODPO = {
    **VIDEODPO,
    "STALE_RUNNING_S": float(os.environ.get("TEST_STALE_RUNNING_S", "300")),
    "HEARTBEAT_S": float(os.environ.get("TEST_HEARTBEAT_S", "10")),
    "X264_PRESET": "veryfast",
}
if os.environ.get("TEST_MODEL_CACHE_DIR"):
    VIDEODPO["MODEL_CACHE_DIR"] = os.environ["TEST_MODEL_CACHE_DIR"]
if os.environ.get("TEST_SPLIT_QUEUES"):
    VIDEODPO["SPLIT_QUEUES"] = os.environ["TEST_SPLIT_QUEUES"] == "1"
