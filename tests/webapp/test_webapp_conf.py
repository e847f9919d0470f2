"""One settings object: every default in ``webapp/settings/base.py``, read through the typed, frozen
``annotation.conf.videodpo()`` by the web side and the workers; no module keeps defaults of its own."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from annotation.conf import VideoDPOSettings, conf, videodpo

REPO = Path(__file__).resolve().parents[2]


def test_every_setting_is_a_typed_field(settings):
    values = videodpo()
    assert {f.name.upper() for f in dataclasses.fields(VideoDPOSettings)} == set(settings.VIDEODPO)
    assert isinstance(values.model_cache_dir, Path) and isinstance(values.split_queues, bool)
    assert isinstance(values.qc_min_gold, int) and isinstance(values.stale_running_s, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        values.qc_min_gold = 1
    assert conf("QC_MIN_GOLD") == values.qc_min_gold


def test_a_new_dict_is_seen_and_values_are_typed(settings):
    settings.VIDEODPO = {**settings.VIDEODPO, "BATCH_SEEDS": "true", "QC_MIN_GOLD": "7", "SCREENING": {"static_diff": 2}}
    assert videodpo().batch_seeds is True and videodpo().qc_min_gold == 7
    assert dict(videodpo().screening) == {"static_diff": 2.0}


@pytest.mark.parametrize(("change", "message"), [
    (lambda v: {k: x for k, x in v.items() if k != "HEARTBEAT_S"}, "missing key(s) HEARTBEAT_S"),
    (lambda v: {**v, "HEARTBEET_S": 1}, "unknown key(s) HEARTBEET_S"),
    (lambda v: {**v, "QC_MIN_GOLD": "five"}, "settings.VIDEODPO['QC_MIN_GOLD'] = 'five'"),
])
def test_a_wrong_settings_dict_fails_naming_the_key(settings, change, message):
    settings.VIDEODPO = change(settings.VIDEODPO)
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        videodpo()


def test_no_module_reads_the_settings_dict_with_defaults_of_its_own():
    """The duplicate ``_videodpo(name, default)`` helpers and inline ``getattr(settings, "VIDEODPO", {})`` are gone."""
    pattern = re.compile(r"""getattr\(settings,\s*["']VIDEODPO|VIDEODPO["']?\]?\.get\(|def _videodpo|settings\.VIDEODPO\[""")
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for package in ("annotation", "generation_workers", "webapp", "benchmarks")
        for path in (REPO / package).rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line) and "settings/" not in str(path) and path.name != "conf.py"
    ]
    assert offenders == []
