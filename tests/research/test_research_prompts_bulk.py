"""Issue 18 item 9: bulk edits of the prompt pool without hidden steps. The research prompt list (filters, ticks,
every-matching scope, activate / retire / held out / tag / category, refusals as 400 with the ticks kept), the admin's
tag and category actions with their intermediate form, and the list in Chromium."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.test import Client

from annotation.models import Category, Prompt
from annotation.services.prompt_bulk import prompts_bulk_set
from tests.annotation.factories import PromptFactory, UserFactory, annotator

URL, BULK = "/research/prompts/", "/research/prompts/bulk/"


def login(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def researcher() -> Client:
    return login(UserFactory(roles=["researcher"]))


def state(pk: int) -> Prompt:
    return Prompt.objects.select_related("category").get(pk=pk)


@pytest.mark.django_db
def test_prompt_list_filters_pages_and_roles():
    client = researcher()
    cats = list(Category.objects.order_by("slug")[:2])
    a = PromptFactory(text="a fox in the snow", category=cats[0], tags=["night"])
    b = PromptFactory(text="a cat on a roof", category=cats[1], is_held_out=True)
    c = PromptFactory(text="a fox on a boat", category=None, is_active=False)
    html = client.get(URL).content.decode()
    assert all(f'id="prompt-{p.pk}"' in html for p in (a, b, c)) and 'name="csrfmiddlewaretoken"' in html
    for query, expected in [("q=fox", {a, c}), (f"category={cats[1].pk}", {b}), ("category=none", {c}),
                            ("tag=night", {a}), ("active=no", {c}), ("held_out=yes", {b}),
                            ("q=fox&active=yes", {a})]:
        html = client.get(f"{URL}?{query}").content.decode()
        shown = {p for p in (a, b, c) if f'id="prompt-{p.pk}"' in html}
        assert shown == expected, query
    assert "No prompt matches this filter." in client.get(f"{URL}?q=zebra").content.decode()
    PromptFactory.create_batch(55)
    page2 = client.get(f"{URL}?page=2").content.decode()
    assert "page 2 of 2" in page2 and page2.count('name="ids"') == 58 - 50
    for bad in ("category=x", "active=maybe", "language=xx", "page=%C2%B2", "prompt_set=-1"):
        res = client.get(f"{URL}?{bad}")
        assert res.status_code == 400, bad
    assert login(annotator()).get(URL).status_code == 403
    assert Client().get(URL).status_code == 302  # to the login page


@pytest.mark.django_db
def test_bulk_actions_on_ticked_and_on_every_matching_prompt():
    client = researcher()
    cat = Category.objects.order_by("slug").first()
    foxes = [PromptFactory(text=f"a fox {i}", tags=["old"]).pk for i in range(3)]
    cat_prompt = PromptFactory(text="a cat").pk

    res = client.post(BULK, {"action": "retire", "scope": "selected", "ids": foxes[:2]})
    assert res.status_code == 302 and res["Location"] == URL
    assert [state(i).is_active for i in foxes] == [False, False, True] and state(cat_prompt).is_active
    assert "Retired 2 prompts (of 2 chosen)." in client.get(res["Location"]).content.decode()

    # every prompt the filter (in the form's URL) matches, whatever is ticked; back to the same filter
    res = client.post(f"{BULK}?q=fox", {"action": "activate", "scope": "all"})
    assert res["Location"] == f"{URL}?q=fox" and all(state(i).is_active for i in foxes)
    client.post(f"{BULK}?q=fox", {"action": "held_out", "scope": "all"})
    assert all(state(i).is_held_out for i in foxes) and not state(cat_prompt).is_held_out
    client.post(BULK, {"action": "not_held_out", "ids": [foxes[0]]})
    assert not state(foxes[0]).is_held_out and state(foxes[1]).is_held_out

    client.post(BULK, {"action": "add_tag", "bulk_tag": " rain ", "ids": foxes[:2]})
    assert [state(i).tags for i in foxes] == [["old", "rain"], ["old", "rain"], ["old"]]
    client.post(BULK, {"action": "remove_tag", "bulk_tag": "old", "ids": foxes})
    assert [state(i).tags for i in foxes] == [["rain"], ["rain"], []]

    client.post(BULK, {"action": "set_category", "set_category": str(cat.pk), "ids": foxes})
    assert all(state(i).category_id == cat.pk for i in foxes)
    client.post(BULK, {"action": "set_category", "set_category": "", "ids": foxes[:1]})
    assert state(foxes[0]).category_id is None and state(foxes[1]).category_id == cat.pk


@pytest.mark.django_db
def test_bulk_refusals_are_400_and_change_nothing():
    client = researcher()
    ids = [PromptFactory().pk for _ in range(2)]
    before = sorted(Prompt.objects.values_list("id", "is_active", "is_held_out", "tags", "category_id"))
    cases = [
        ({"action": "", "ids": ids}, "Choose an action"),
        ({"action": "explode", "ids": ids}, "Choose an action"),
        ({"action": "retire"}, "Tick at least one prompt"),
        ({"action": "retire", "ids": ["1x"]}, "must be a whole number"),
        ({"action": "add_tag", "bulk_tag": "  ", "ids": ids}, "Type the tag"),
        ({"action": "add_tag", "bulk_tag": "x" * 65, "ids": ids}, "A tag is 1 to 64 characters"),
        ({"action": "set_category", "set_category": "999999", "ids": ids}, "There is no category 999999"),
        ({"action": "set_category", "set_category": "²", "ids": ids}, "must be a whole number"),
    ]
    for data, message in cases:
        res = client.post(BULK, data)
        html = res.content.decode()
        assert res.status_code == 400 and message in html, data
    # the page comes back with the ticks and the chosen action kept
    html = client.post(BULK, {"action": "add_tag", "bulk_tag": "", "ids": ids[:1]}).content.decode()
    assert f'value="{ids[0]}" aria-label="Select prompt {ids[0]}" checked' in html
    assert f'value="{ids[1]}" aria-label="Select prompt {ids[1]}">' in html
    assert '<option value="add_tag" selected>' in html
    assert client.post(f"{BULK}?active=maybe", {"action": "retire", "scope": "all"}).status_code == 400
    assert client.get(BULK).status_code == 405
    assert login(annotator()).post(BULK, {"action": "retire", "ids": ids}).status_code == 403
    csrf = login(UserFactory(roles=["researcher"]), enforce_csrf_checks=True)
    assert csrf.post(BULK, {"action": "retire", "ids": ids}).status_code == 403
    assert sorted(Prompt.objects.values_list("id", "is_active", "is_held_out", "tags", "category_id")) == before


@pytest.mark.django_db
def test_admin_tag_and_category_actions_with_an_intermediate_form():
    admin = get_user_model().objects.create_superuser("boss", "boss@example.org", "pw-admin-1")
    client = login(admin)
    cat = Category.objects.order_by("slug").first()
    ids = [PromptFactory(tags=["x"], category=None).pk for _ in range(3)]
    page = client.get("/admin/annotation/prompt/").content.decode()
    for name in ("prompts_add_tag", "prompts_remove_tag", "prompts_set_category", "prompts_is_active_false"):
        assert f'value="{name}"' in page
    chosen = {"action": "prompts_add_tag", "_selected_action": ids[:2]}
    form = client.post("/admin/annotation/prompt/", chosen)
    html = form.content.decode()
    assert form.status_code == 200 and 'name="add_tags"' in html and "2 prompts selected." in html
    assert [state(i).tags for i in ids] == [["x"]] * 3  # nothing changed before Apply
    res = client.post("/admin/annotation/prompt/", {**chosen, "apply": "1", "add_tags": "dusk"})
    assert res.status_code == 302 and [state(i).tags for i in ids] == [["dusk", "x"], ["dusk", "x"], ["x"]]
    client.post("/admin/annotation/prompt/",
                {"action": "prompts_remove_tag", "_selected_action": ids, "apply": "1", "remove_tags": "x"})
    assert [state(i).tags for i in ids] == [["dusk"], ["dusk"], []]
    client.post("/admin/annotation/prompt/",
                {"action": "prompts_set_category", "_selected_action": ids[1:], "apply": "1", "category": cat.pk})
    assert [state(i).category_id for i in ids] == [None, cat.pk, cat.pk]
    for bad in ({"category": "999999"}, {"category": "x"}):
        res = client.post("/admin/annotation/prompt/",
                          {"action": "prompts_set_category", "_selected_action": ids, "apply": "1", **bad})
        assert res.status_code == 400 and "There is no category" in res.content.decode()
    res = client.post("/admin/annotation/prompt/",
                      {"action": "prompts_add_tag", "_selected_action": ids, "apply": "1", "add_tags": ""})
    assert res.status_code == 400 and "Type the tag" in res.content.decode()
    assert [state(i).category_id for i in ids] == [None, cat.pk, cat.pk]


@pytest.mark.django_db
def test_service_keeps_the_category_unless_told():
    cat = Category.objects.order_by("slug").first()
    p = PromptFactory(category=cat)
    assert prompts_bulk_set(prompt_ids=[p.pk], is_active=False) == 1 and state(p.pk).category_id == cat.pk
    assert prompts_bulk_set(prompt_ids=[p.pk], category_id=None) == 1 and state(p.pk).category_id is None
    assert prompts_bulk_set(prompt_ids=[p.pk], remove_tags=["absent"]) == 0


@pytest.mark.browser
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_bulk_retire_and_tag_in_the_browser(page, live_server, artifacts_dir):
    user = UserFactory(roles=["researcher"])
    client = Client()
    client.force_login(user)
    page.context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME,
                               "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
                               "url": live_server.url}])
    foxes = [PromptFactory(text=f"a fox runs, take {i}").pk for i in range(3)]
    other = PromptFactory(text="a cat sleeps").pk
    page.goto(f"{live_server.url}/research/")
    page.click("header nav a[href='/research/prompts/']")
    page.fill("#prompt-filters input[name=q]", "fox")
    page.click("#prompt-filters button[type=submit]")
    page.wait_for_url("**/research/prompts/?*q=fox*")
    assert page.locator("#prompt-table tbody tr").count() == 3
    page.check(f"#prompt-{foxes[0]} input[name=ids]")
    page.check(f"#prompt-{foxes[2]} input[name=ids]")
    page.select_option("#bulk-action", "retire")
    page.click("#bulk-apply")
    page.wait_for_selector("#messages li.success")
    assert "Retired 2 prompts" in page.locator("#messages").inner_text()
    assert page.locator(f"#prompt-{foxes[0]} .prompt-active").inner_text() == "retired"
    assert page.locator(f"#prompt-{foxes[1]} .prompt-active").inner_text() == "active"
    assert page.input_value("#prompt-filters input[name=q]") == "fox"  # back on the same filter
    # every prompt the filter matches: tag them all (no tick needed)
    page.select_option("#bulk-action", "add_tag")
    page.fill("#bulk-tag", "winter")
    page.check("#bulk-scope-all")
    page.click("#bulk-apply")
    page.wait_for_selector("#messages li.success")
    page.screenshot(path=str(artifacts_dir / "research-prompts-bulk.png"), full_page=True)
    assert [state(i).tags for i in foxes] == [["winter"]] * 3 and state(other).tags == []
    assert [state(i).is_active for i in foxes] == [False, True, False] and state(other).is_active
