"""Issue 18 items 6 and 7 in Chromium: navigation by role (no link to a 403 page, no entry twice), styled error
pages, the researcher's gallery and the prompt+seed comparison across checkpoints with the synchronized player,
and the review page on the same player."""

import pytest
from django.conf import settings as django_settings
from django.test import Client

from annotation.models import Candidate, ReviewItem
from tests.annotation.factories import CheckpointFactory, PromptFactory, RoundFactory, UserFactory, annotator

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
FRAME = 1 / 25
NAV_HREFS = "() => [...document.querySelectorAll('header nav a')].map(a => a.getAttribute('href'))"
SYNC_TIMES = "sel => [...document.querySelectorAll(sel + ' video[data-sync-video]')].map(v => v.currentTime)"


def login(page, live_server, user):
    client = Client()
    client.force_login(user)
    page.context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME,
                               "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
                               "url": live_server.url}])


def play_and_check_sync(page, root):
    page.wait_for_function(f"() => [...document.querySelectorAll('{root} video[data-sync-video]')].every(v => v.readyState >= 2)")
    page.click(f"{root} [data-sync=toggle]")
    page.wait_for_function(f"() => document.querySelector('{root} video[data-sync-video]').currentTime > 0.6", timeout=30_000)
    times = page.evaluate(SYNC_TIMES, root)
    assert max(times) - min(times) <= FRAME, times
    page.click(f"{root} [data-sync=toggle]")  # pause: all on the same frame
    page.wait_for_timeout(150)
    times = page.evaluate(SYNC_TIMES, root)
    assert max(times) - min(times) <= FRAME, times
    return times


def test_navigation_by_role_and_styled_error_pages(page, live_server, artifacts_dir):
    login(page, live_server, annotator())
    page.goto(f"{live_server.url}/")
    hrefs = page.evaluate(NAV_HREFS)
    assert hrefs == ["/", "/annotate/"], hrefs  # no Quality/Review links that lead to 403
    resp = page.goto(f"{live_server.url}/research/")
    assert resp.status == 403
    assert page.locator("#forbidden h1").inner_text() == "Not allowed"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != "rgba(0, 0, 0, 0)"  # the app's CSS
    page.screenshot(path=str(artifacts_dir / "error-403.png"))
    resp = page.goto(f"{live_server.url}/no-such-page/")
    assert resp.status == 404 and page.locator("#not-found").count() == 1
    assert "/no-such-page/" in page.inner_text("#not-found")
    page.context.clear_cookies()
    login(page, live_server, UserFactory(roles=["researcher"]))
    for path in ("/", "/research/", "/research/leaderboard/", "/research/exports/", "/qc/", "/review/",
                 "/research/gallery/"):
        page.goto(f"{live_server.url}{path}")
        hrefs = page.evaluate(NAV_HREFS)
        assert len(hrefs) == len(set(hrefs)), (path, hrefs)  # no entry twice
        assert "/annotate/" not in hrefs and {"/qc/", "/review/", "/research/", "/research/gallery/"} <= set(hrefs)
        assert page.locator("header nav a[aria-current=page]").count() <= 1


def test_gallery_filters_and_seed_across_checkpoints(page, live_server, media_group, artifacts_dir):
    prompt = PromptFactory(text="a paper boat on a river")
    base, dpo = CheckpointFactory(name="base-ckpt"), CheckpointFactory(name="dpo-ckpt")
    r1 = RoundFactory(policy_checkpoint=base, name="round-one")
    r2 = RoundFactory(policy_checkpoint=dpo, name="round-two")
    g1 = media_group(k=2, round=r1, prompt=prompt)
    media_group(k=2, round=r1, prompt=PromptFactory(text="a windmill at dusk"))
    g2 = media_group(k=2, round=r2, prompt=prompt)
    seeds = list(g1.candidates.order_by("id").values_list("seed", flat=True))
    for cand, seed in zip(g2.candidates.order_by("id"), seeds, strict=True):
        Candidate.objects.filter(pk=cand.pk).update(seed=seed)
    failed = g1.candidates.order_by("id").last()
    Candidate.objects.filter(pk=failed.pk).update(status=Candidate.Status.FAILED, error="CUDA out of memory")
    login(page, live_server, UserFactory(roles=["researcher"]))
    page.set_viewport_size({"width": 1366, "height": 768})
    page.goto(f"{live_server.url}/research/gallery/?round={r1.pk}")
    assert page.locator(".gallery-group").count() == 2
    page.fill("input[name=q]", "paper boat")
    page.click("#gallery-filters button[type=submit]")
    page.wait_for_selector(f"#gallery-group-{g1.pk}")
    assert page.locator(".gallery-group").count() == 1
    assert "CUDA out of memory" in page.inner_text(f"#gallery-group-{g1.pk}")
    page.select_option("select[name=status]", "failed")
    page.click("#gallery-filters button[type=submit]")
    page.wait_for_load_state()
    assert page.locator(f"#gallery-group-{g1.pk} figure").count() == 1
    page.goto(f"{live_server.url}/research/gallery/?round={r1.pk}&status=ready&q=boat")
    assert page.locator(f"#gallery-group-{g1.pk} video[data-sync-video]").count() == 1
    page.goto(f"{live_server.url}/research/gallery/?round={r1.pk}")
    play_and_check_sync(page, f"#gallery-group-{g1.pk}")
    page.screenshot(path=str(artifacts_dir / "gallery-1366x768.png"))
    # the same prompt and seed across the two checkpoints, side by side, in sync
    page.click(f"#gallery-group-{g1.pk} figure >> nth=0 >> text=across checkpoints")
    page.wait_for_selector("#compare")
    names = page.locator("#compare figcaption a:first-child").all_inner_texts()
    assert names == ["base-ckpt", "dpo-ckpt"], names
    assert f"Seed {seeds[0]}" in page.inner_text("#compare h1")
    play_and_check_sync(page, "#compare")
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.screenshot(path=str(artifacts_dir / "gallery-compare-1920x1080.png"))
    # bad input: a clear 4xx, never a 500
    assert page.goto(f"{live_server.url}/research/gallery/?round=abc").status == 400
    assert page.goto(f"{live_server.url}/research/gallery/?round=999999").status == 404
    assert page.goto(f"{live_server.url}/research/gallery/compare/?prompt=1").status == 400


def test_review_page_uses_the_synchronized_player(page, live_server, media_group):
    group = media_group(k=3)
    item = ReviewItem.objects.create(group=group, reason="split decision")
    login(page, live_server, UserFactory(roles=["reviewer"]))
    page.goto(f"{live_server.url}/review/{item.pk}/")
    assert page.locator("#review-player video[data-sync-video]").count() == 3
    assert page.locator("#review-player video[controls]").count() == 0
    play_and_check_sync(page, "#review-player")
