import json
import re

import pytest
from django.test import Client

from annotation.models import CandidateGroup, Judgment, PreferencePair, PromptSet, ReviewItem
from annotation.services import judgments as J
from annotation.services.quality import annotator_pause
from annotation.views import ERR_NOT_ANNOTATOR
from tests.annotation.factories import PromptFactory, RoundFactory, UserFactory, annotator, group_with_candidates
from tests.annotation.helpers import without_random_tokens

pytestmark = pytest.mark.django_db
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


def login(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def form_for(html: str) -> dict:
    return {"assignment": re.search(r'name="assignment" value="([0-9a-f-]{36})"', html).group(1)}


def test_group_page_is_blind_escaped_and_constant_in_queries(django_assert_max_num_queries, media_group):
    rnd = RoundFactory(annotators_per_group=1, max_annotators_per_group=1)
    group = media_group(k=4, round=rnd, prompt=PromptFactory(text=XSS))
    for _ in range(30):  # more data must not mean more queries
        group_with_candidates(k=4, round=rnd)
    client = login(annotator())
    with django_assert_max_num_queries(17):  # first page: the annotator's lock, reserves current + next group
        res = client.get("/annotate/")
    html = res.content.decode()
    assert res.status_code == 200
    assert "<script>window.__xss" not in html and "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    visible = without_random_tokens(html)
    assert visible.count("/m/<token>") >= 8  # the current group's videos and posters
    for secret in [rnd.name, rnd.policy_checkpoint.name, "rounds/", "seed", *[str(c.seed) for c in group.candidates.all()]]:
        assert secret not in visible, secret
    assert html.count('class="clip"') == 4 and 'data-prefetch="1"' in html
    with django_assert_max_num_queries(24):  # submit, then the next page (with the annotator's lock)
        res = client.post("/annotate/submit/", {**form_for(html), "outcome": "all_good"}, HTTP_HX_REQUEST="true")
    assert res.status_code == 200 and 'id="group-form"' in res.content.decode()
    assert "<html" not in res.content.decode()  # a partial, swapped by htmx


def test_submit_errors_come_back_as_4xx_partials(media_group):
    media_group(k=2, round=RoundFactory(require_full_playback=True))
    client = login(annotator())
    html = client.get("/annotate/").content.decode()
    data = {**form_for(html), "outcome": "labelled", "label_0": "preferred", "label_1": "non_preferred",
            "coverage_0": "1", "coverage_1": "0.2"}
    res = client.post("/annotate/submit/", data, HTTP_HX_REQUEST="true")
    assert res.status_code == 400 and res["HX-Retarget"] == "#submit-error"
    assert J.ERR_PLAYBACK_INCOMPLETE.format(missing="video 2") in res.content.decode()
    res = client.post("/annotate/submit/", {**data, "coverage_1": "1", "flaw_0": "<b>x</b>"}, HTTP_HX_REQUEST="true")
    assert res.status_code == 400 and "&lt;b&gt;x&lt;/b&gt;" in res.content.decode()
    assert not Judgment.objects.exists()
    res = client.post("/annotate/submit/", {**data, "coverage_1": "1"}, HTTP_HX_REQUEST="true")
    assert res.status_code == 200 and Judgment.objects.count() == 1


def test_csrf_is_enforced_on_the_submit_form(media_group):
    media_group(k=2)
    user = annotator()
    client = login(user, enforce_csrf_checks=True)
    html = client.get("/annotate/").content.decode()
    assert client.post("/annotate/submit/", {**form_for(html), "outcome": "all_good"}).status_code == 403
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    res = client.post("/annotate/submit/", {**form_for(html), "outcome": "all_good", "csrfmiddlewaretoken": token})
    assert res.status_code == 302 and Judgment.objects.count() == 1


def test_roles_and_paused_page():
    group_with_candidates(k=2)
    assert Client().get("/annotate/").status_code == 302  # to the login page
    reviewer = login(UserFactory(roles=["reviewer"]))
    res = reviewer.get("/annotate/")
    assert res.status_code == 403 and ERR_NOT_ANNOTATOR in res.content.decode()
    assert reviewer.get("/qc/").status_code == 200
    assert reviewer.get("/review/").status_code == 200
    user = annotator()
    assert login(user).get("/qc/").status_code == 403
    assert login(user).get("/review/").status_code == 403
    annotator_pause(annotator=user, reason="gold accuracy too low")
    res = login(user).get("/annotate/")
    assert res.status_code == 403 and "paused" in res.content.decode() and 'id="group-form"' not in res.content.decode()


def test_home_shows_safe_guidelines_progress_and_stats():
    PromptSet.objects.create(name="Motion", guidelines_md="# Look at *motion*\n<script>bad()</script> [x](javascript:alert(1))")
    html = login(annotator()).get("/").content.decode()
    assert "<h1>Look at <em>motion</em></h1>" in html
    assert "<script>bad()" not in html and "&lt;script&gt;bad()" in html
    assert 'href="javascript' not in html
    assert 'id="progress"' in html and 'id="stat-judgments"' in html


def test_media_links_support_range_requests(media_group):
    media_group(k=2)
    client = login(annotator())
    html = client.get("/annotate/").content.decode()
    url = re.search(r'<video id="video-0" class="clip" src="([^"]+)"', html).group(1)
    assert url.startswith("/m/")
    full = client.get(url)
    assert full.status_code == 200 and full["Accept-Ranges"] == "bytes"
    part = client.get(url, HTTP_RANGE="bytes=0-99")
    assert part.status_code == 206 and part["Content-Range"].startswith("bytes 0-99/")
    assert b"".join(part.streaming_content)[4:8] == b"ftyp"
    assert client.get(url[:-3] + "abc").status_code == 404  # tampered token


def test_review_queue_decision_replaces_pairs(media_group):
    group = media_group(k=2, round=RoundFactory(annotators_per_group=2, max_annotators_per_group=2))
    group.status = CandidateGroup.Status.REVIEW
    group.save()
    item = ReviewItem.objects.create(group=group, reason="split")
    x, y = sorted(group.candidates.values_list("id", flat=True))
    reviewer = login(UserFactory(roles=["reviewer"]))
    assert reviewer.get(f"/review/{item.pk}/").status_code == 200
    res = reviewer.post(f"/review/{item.pk}/", {f"decision_{x}": "non_preferred", f"decision_{y}": "preferred"})
    assert res.status_code == 302
    pair = PreferencePair.objects.get()
    assert (pair.chosen_id, pair.rejected_id, pair.source) == (y, x, "reviewer")
    item.refresh_from_db()
    group.refresh_from_db()
    assert item.status == "resolved" and group.status == CandidateGroup.Status.DONE


def test_qc_page_renders_charts_from_json():
    rnd = RoundFactory()
    group_with_candidates(k=2, round=rnd)
    html = login(UserFactory(roles=["researcher"])).get(f"/qc/?round={rnd.pk}").content.decode()
    assert "Krippendorff" in html and "chartjs-4.6.1/chart.umd.min.js" in html and "annotation/charts.js" in html
    for chart_id in ("chart-alpha", "chart-position-bias", "chart-gold"):
        assert f'data-chart-source="{chart_id}"' in html
        spec = json.loads(re.search(rf'<script id="{chart_id}" type="application/json">(.*?)</script>', html).group(1))
        assert spec["kind"] == "bar" and spec["min"] in (-1.0, 0.0) and spec["max"] == 1.0
    assert "onchange=" not in html and "<script>" not in html  # no inline script (a CSP would block it)
