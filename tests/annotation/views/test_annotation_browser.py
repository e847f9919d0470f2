"""The workbench in Chromium (Playwright): keyboard-only flow, synchronized playback, inert XSS, a screenshot."""

import pytest
from django.conf import settings as django_settings
from django.test import Client

from annotation.models import Judgment, PreferencePair
from annotation.services.judgments import ERR_PLAYBACK_INCOMPLETE
from tests.annotation.factories import PromptFactory, RoundFactory, annotator

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
FRAME = 1 / 25
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>"); window.__xss=3; ("'
ALL_PLAYED = "() => { const c = [...document.querySelectorAll('.cand')]; return c.length > 0 && c.every(e => e.classList.contains('played')); }"
TIMES = "() => [...document.querySelectorAll('video.clip')].map(v => v.currentTime)"


def open_workbench(page, live_server, user):
    client = Client()
    client.force_login(user)
    page.context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME, "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value, "url": live_server.url}])
    page.goto(f"{live_server.url}/annotate/")
    page.wait_for_selector("#group-form, #no-work, #paused, #forbidden", state="attached")
    assert page.locator("#group-form").count() == 1, page.content()[:3000]


def spread(times):
    return max(times) - min(times)


def test_whole_annotator_flow_with_the_keyboard_only(page, live_server, media_group):
    rnd = RoundFactory(annotators_per_group=1, max_annotators_per_group=1, require_full_playback=True)
    media_group(k=2, round=rnd)
    media_group(k=2, round=rnd)
    user = annotator()
    from annotation.services.reference_data import demo_flaw_tags_ensure, reference_data_ensure

    reference_data_ensure()  # the flaw tags (a transactional test starts without the data migration's rows)
    demo_flaw_tags_ensure(hide_unseen=True)
    console_errors = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    open_workbench(page, live_server, user)
    assert page.is_visible("#legend") and "frame" in page.inner_text("#legend")
    first = page.input_value("input[name=assignment]")
    # submitting before every video played once is refused with the message
    page.keyboard.press("1")
    page.keyboard.press("p")
    page.keyboard.press("2")
    page.keyboard.press("n")
    page.keyboard.press("Enter")
    page.wait_for_selector("#submit-error .error")
    assert ERR_PLAYBACK_INCOMPLETE.split("(")[0].strip() in page.inner_text("#submit-error")
    page.wait_for_function(ALL_PLAYED, timeout=60_000)
    page.evaluate("window.__marker = 'same page'")
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => document.querySelector('input[name=assignment]') && document.querySelector('input[name=assignment]').value !== '{first}'")
    assert page.evaluate("window.__marker") == "same page"  # no full page reload
    # second group: all equally good, then skip -> reason by keyboard, submit
    page.wait_for_function(ALL_PLAYED, timeout=60_000)
    page.keyboard.press("t")
    assert "all equally good" in page.inner_text("#status")
    page.keyboard.press("s")
    page.keyboard.press("ArrowDown")  # the focused reason select
    page.keyboard.press("Enter")
    page.wait_for_selector("#no-work")
    judgments = list(Judgment.objects.filter(annotator=user).order_by("id"))
    assert [j.outcome for j in judgments] == ["labelled", "skipped"]
    assert judgments[1].skip_reason and judgments[0].time_spent_ms > 0
    labels = {lab.shown_position: lab for lab in judgments[0].labels.all()}
    assert labels[0].label == "preferred" and labels[1].label == "non_preferred"
    assert min(lab.playback_coverage for lab in labels.values()) >= 0.9
    pair = PreferencePair.objects.get()
    assert (pair.chosen_id, pair.rejected_id) == (labels[0].candidate_id, labels[1].candidate_id)
    # the next groups are swapped in by htmx: nothing they carry breaks the Content Security Policy
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors[:3]


def test_per_aspect_judgments_with_the_keyboard(page, live_server, media_group, artifacts_dir):
    rnd = RoundFactory(annotators_per_group=1, max_annotators_per_group=1, aspect_judgments=True)
    media_group(k=2, round=rnd)
    user = annotator()
    open_workbench(page, live_server, user)
    assert page.is_visible("#aspect-keys") and "motion quality" in page.inner_text("#aspect-keys")
    assert page.locator("fieldset.aspect").count() == 2 * 3
    page.keyboard.press("1")
    page.keyboard.press("p")
    page.keyboard.press("v")  # video 1 looks better
    page.keyboard.press("Shift+A")  # ... but follows the prompt worse
    page.keyboard.press("m")
    page.keyboard.press("m")  # the same key again: back to "same"
    page.keyboard.press("2")
    page.keyboard.press("n")
    page.keyboard.press("a")
    assert page.inner_text("#answer-0") == "preferred · VQ ▲ · TA ▼"
    assert page.inner_text("#answer-1") == "non-preferred · TA ▲"
    page.screenshot(path=str(artifacts_dir / "workbench-aspects.png"), full_page=True)
    page.keyboard.press("t")  # "all equally good" clears the overall labels, not the aspects
    assert page.inner_text("#answer-0") == "neutral · VQ ▲ · TA ▼"
    page.keyboard.press("1")
    page.keyboard.press("p")
    page.keyboard.press("2")
    page.keyboard.press("n")
    page.keyboard.press("Enter")
    page.wait_for_selector("#no-work")
    labels = {lab.shown_position: lab for lab in Judgment.objects.get(annotator=user).labels.all()}
    assert labels[0].aspects == {"vq": "preferred", "mq": "neutral", "ta": "non_preferred"}
    assert labels[1].aspects == {"vq": "neutral", "mq": "neutral", "ta": "preferred"}
    assert PreferencePair.objects.get().aspects == {"vq": "chosen", "mq": "same", "ta": "rejected"}


def test_per_segment_judgments_with_the_keyboard(page, live_server, media_group, artifacts_dir):
    rnd = RoundFactory(annotators_per_group=1, max_annotators_per_group=1, segment_judgments=True, num_frames=50, fps=25)
    media_group(k=2, round=rnd)
    user = annotator()
    open_workbench(page, live_server, user)
    assert page.is_visible("#segment-keys") and page.locator(".segments .seg").count() == 2 * 2
    page.keyboard.press("1")
    page.keyboard.press("p")
    page.evaluate("window.workbench.clock.pause(); window.workbench.clock.seek(0.3)")
    page.keyboard.press("g")  # segment 1 playing: video 1 is better there
    page.evaluate("window.workbench.clock.seek(1.5)")
    page.keyboard.press("Shift+G")  # segment 2: worse there
    assert page.locator("#seg-0-1.current").count() == 1
    page.keyboard.press("2")
    page.keyboard.press("n")
    page.click("#seg-1-1")  # a click cycles: same -> better
    assert set(page.get_attribute("#seg-1-1", "class").split()) == {"seg", "better", "current"}
    page.screenshot(path=str(artifacts_dir / "workbench-segments.png"), full_page=True)
    page.keyboard.press("Enter")
    page.wait_for_selector("#no-work")
    labels = {lab.shown_position: lab for lab in Judgment.objects.get(annotator=user).labels.all()}
    assert labels[0].segments == ["preferred", "non_preferred"] and labels[1].segments == ["neutral", "preferred"]
    assert PreferencePair.objects.get().segments == ["chosen", "rejected"]


def test_synchronized_playback_and_screenshot(page, live_server, media_group, artifacts_dir):
    media_group(k=4, round=RoundFactory(annotators_per_group=1, max_annotators_per_group=1))
    open_workbench(page, live_server, annotator())
    page.wait_for_function("() => window.workbench && window.workbench.clock.playing && window.workbench.clock.time() > 0.5", timeout=60_000)
    playing = page.evaluate(TIMES)
    assert spread(playing) <= FRAME, playing
    page.keyboard.press(" ")  # pause
    page.wait_for_timeout(200)
    paused = page.evaluate(TIMES)
    assert spread(paused) <= FRAME, paused
    page.keyboard.press("Home")
    page.evaluate("window.workbench.clock.seek(1.3)")
    page.wait_for_function("() => [...document.querySelectorAll('video.clip')].every(v => !v.seeking)")
    seeked = page.evaluate(TIMES)
    assert spread(seeked) <= FRAME and abs(seeked[0] - 1.3) <= FRAME, seeked
    page.keyboard.press(".")  # one frame forward, all together
    page.wait_for_function("() => [...document.querySelectorAll('video.clip')].every(v => !v.seeking)")
    stepped = page.evaluate(TIMES)
    assert spread(stepped) <= FRAME and 0 < stepped[0] - seeked[0] <= 2 * FRAME, (seeked, stepped)
    page.keyboard.press("]")
    assert page.evaluate("[...document.querySelectorAll('video.clip')].map(v => v.playbackRate)") == [1.5] * 4
    page.keyboard.press(" ")  # play again after the seek
    page.wait_for_timeout(600)
    replay = page.evaluate(TIMES)
    assert spread(replay) <= FRAME, replay
    page.keyboard.press("3")
    page.keyboard.press("e")
    assert page.is_visible("#cand-2.enlarged")
    page.keyboard.press("e")
    page.screenshot(path=str(artifacts_dir / "annotation-group-page.png"), full_page=True)


def test_prompt_with_html_and_script_is_inert(page, live_server, media_group):
    media_group(k=2, prompt=PromptFactory(text=XSS))
    open_workbench(page, live_server, annotator())
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert page.inner_text("#prompt-text") == XSS
    assert page.locator("#prompt-text img, #prompt-text script").count() == 0
