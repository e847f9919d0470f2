"""The researcher's flow in Chromium, on real workers: import prompts, launch a round, watch it finish, launch a DPO
run, see its curves and the new checkpoint's lineage."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from annotation.models import Checkpoint, DPORun, Round
from annotation.services.accounts import user_create
from annotation.services.reference_data import reference_data_ensure


def annotate_everything(round: Round) -> int:
    """A scripted annotator (what simulate_loop uses): prefers the brighter video."""
    from io import StringIO

    from annotation.management.commands.simulate_loop import Command

    command = Command(stdout=StringIO())
    annotator = user_create(username="scripted", password="pw-scripted-1", roles=["annotator"])
    return command._annotate(annotator, round)


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_researcher_runs_a_round_and_a_dpo_run_from_the_browser(live_server, page, start_worker, tmp_path, artifacts_dir):
    reference_data_ensure()
    user_create(username="res", password="pw-research-1", roles=["researcher"])
    root = tmp_path / "tiny-root"
    subprocess.run([sys.executable, "-m", "model", "make-tiny", "--out", str(root)], check=True)
    Checkpoint.objects.create(name="tiny-base", uri=str(root), preset="tiny")
    start_worker(queues="gpu,train,default")

    page.goto(f"{live_server.url}/accounts/login/?next=/research/")
    page.fill("#id_username", "res")
    page.fill("#id_password", "pw-research-1")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/research/")

    # 1. import prompts (one bad row first: nothing imported, the line is reported)
    page.click("text=Import prompts")
    bad = tmp_path / "bad.txt"
    bad.write_text("A red fox runs through snow\n" + "x" * 5000 + "\n", encoding="utf-8")
    page.set_input_files("input[type=file]", str(bad))
    page.click("button:has-text('Import')")
    expect(page.locator("#import-report")).to_contain_text("1 rejected")
    good = tmp_path / "good.txt"
    good.write_text("A red fox runs through snow\n一只熊猫在竹林里吃竹子\n", encoding="utf-8")
    page.set_input_files("input[type=file]", str(good))
    page.click("button:has-text('Import')")
    # the previous page's report is still there until the new page has loaded: wait for the new one's text
    expect(page.locator("#import-report")).to_contain_text("2 created", timeout=30_000)

    # 2. launch a round (custom sampler: 2 steps) and watch it reach 'annotating' (htmx polling)
    page.click("text=New round")
    page.fill("input[name=name]", "browser-r0")
    page.select_option("select[name=sampler]", "custom")
    page.fill("input[name=num_steps]", "2")
    page.fill("input[name=cfg_scale]", "5")
    page.fill("input[name=shift]", "13")
    page.fill("input[name=seeds_per_prompt]", "2")
    page.fill("input[name=annotators_per_group]", "1")
    page.click("button:has-text('Validate and launch')")
    page.wait_for_selector("#round-status")
    page.wait_for_function("() => document.querySelector('#round-status').textContent.trim() === 'annotating'", timeout=240_000)
    round = Round.objects.get(name="browser-r0")
    assert annotate_everything(round) == 2

    # 3. launch a DPO run on it and see the curves fill in until it is done
    page.click("text=New DPO run")
    page.fill("input[name=name]", "browser-dpo1")
    page.check(f"input[name=rounds][value='{round.id}']")
    page.fill("input[name=config_overrides]", '{"max_steps": 3, "save_steps": 3}')
    page.click("button:has-text('Validate and launch')")
    page.wait_for_selector("#run-status")
    page.wait_for_function("() => document.querySelector('#run-status').textContent.trim() === 'done'", timeout=240_000)
    expect(page.locator("#run-charts figure[data-chart-ready='1'] canvas")).to_have_count(3)
    # the charts refresh on htmx:afterSettle, a moment after the poll that swapped in 'done': wait for that refresh
    lengths = ("() => [...document.querySelectorAll('#run-charts canvas')].map(c => "
               "Chart.getChart(c).data.datasets[0].data.length)")
    try:
        page.wait_for_function(f"() => ({lengths})().every(n => n === 3)", timeout=30_000)
    finally:
        points = page.evaluate(lengths)
    assert points == [3, 3, 3]  # max_steps 3: one point per logged step on each curve
    page.screenshot(path=str(artifacts_dir / "dpo-run.png"), full_page=True)
    run = DPORun.objects.get(name="browser-dpo1")
    page.locator("#run-progress a", has_text=run.output_checkpoint.name).click()
    lineage = page.inner_text("#lineage")
    assert re.search(r"browser-dpo1.*\n.*tiny-base", lineage)
