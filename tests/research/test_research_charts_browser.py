"""The chart layer in Chromium: the DPO run page and the QC page draw their charts with axes (titles and ticks), hover
values rounded for people, smoothing and log scale on the curves, and several DPO runs overlaid on one chart."""

from __future__ import annotations

import math
import re

import pytest
from playwright.sync_api import expect

from annotation.models import DPOMetric, DPORun
from annotation.services.reference_data import reference_data_ensure
from tests.exports.factories import build_loop

CHARTS_JS = """() => [...document.querySelectorAll('figure[data-chart-source]')].map(fig => {
  const chart = Chart.getChart(fig.querySelector('canvas'));
  const axes = Object.values(chart.scales).map(s => ({id: s.id, type: s.type, title: s.options.title.display ?
    s.options.title.text : '', ticks: s.ticks.length}));
  return {id: fig.dataset.chartSource, ready: fig.dataset.chartReady === '1', axes,
          datasets: chart.data.datasets.filter(d => !d.raw).map(d => d.label),
          width: chart.width, height: chart.height};
})"""


def login(page, live_server, username: str, password: str, next_url: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/?next={next_url}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}{next_url}")


def runs_with_curves(loop) -> list[DPORun]:
    runs = []
    for n, (name, lr) in enumerate((("lr-1e-5", 1.0), ("lr-3e-5", 3.0), ("lr-1e-4", 10.0))):
        run = DPORun.objects.create(name=name, init_checkpoint=loop.base, reference_checkpoint=loop.base,
                                    status=DPORun.Status.DONE, progress_step=120, progress_total=120)
        DPOMetric.objects.bulk_create([
            DPOMetric(run=run, step=step, values={
                "loss": math.log(2) * math.exp(-lr * step / 200) + 0.02 * math.sin(step + n),  # noisy, positive
                "rewards/accuracies": min(1.0, 0.5 + lr * step / 1000),
                "rewards/margins": lr * step / 300 - 0.1,  # negative at first: no log scale for it
                "learning_rate": lr * 1e-5,
            }) for step in range(1, 121)
        ])
        runs.append(run)
    return runs


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_run_and_qc_charts_have_axes_and_runs_overlay(live_server, page, artifacts_dir):
    reference_data_ensure()  # roles, categories, flaw tags: a transactional test before this one flushed them
    loop = build_loop(n_prompts=4)
    first, *others = runs_with_curves(loop)
    login(page, live_server, loop.researcher.username, "pw-123456", "/research/")

    # one run: three curves with both axes titled and ticked, rounded last values
    page.goto(f"{live_server.url}/research/dpo-runs/{first.id}/")
    page.wait_for_selector("figure[data-chart-ready='1']")
    charts = page.evaluate(CHARTS_JS)
    assert [c["id"] for c in charts] == ["curve-loss", "curve-rewards-accuracies", "curve-rewards-margins"]
    for c in charts:
        assert c["ready"] and c["width"] > 200 and c["height"] > 150
        titles = {a["id"]: a["title"] for a in c["axes"]}
        assert titles["x"] == "step" and titles["y"] == c["id"].removeprefix("curve-").replace("-", "/", 1)
        assert all(a["ticks"] >= 2 for a in c["axes"])
        assert c["datasets"] == ["lr-1e-5"]
    last = page.inner_text("#run-last-values")
    assert re.search(r"learning_rate\t(0\.00001|1e-05)\n", last) and re.search(r"loss\t0\.\d{1,4}\n", last), last
    for cell in page.locator("#run-last-values td:nth-child(2)").all_inner_texts():
        assert len(cell.replace("-", "").replace(".", "").replace("e", "")) <= 8, cell  # no 16-digit floats

    # hover shows the value, rounded
    canvas = page.locator("#figure-curve-loss canvas")
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    tooltip = page.evaluate("""() => { const t = Chart.getChart(document.querySelector('#figure-curve-loss canvas'))
      .tooltip; return {title: t.title, body: t.body.map(b => b.lines).flat()}; }""")
    assert tooltip["title"][0].startswith("step ") and tooltip["body"][0].startswith("lr-1e-5: ")
    assert len(tooltip["body"][0].split(": ")[1]) <= 6  # 4 significant digits

    # smoothing and log scale (the margins can go negative: no log scale there)
    page.locator("#figure-curve-loss input.chart-smoothing").evaluate(
        "el => { el.value = '0.9'; el.dispatchEvent(new Event('input', {bubbles: true})); }")
    page.locator("#figure-curve-loss input.chart-log").check()
    scale = page.evaluate("() => Chart.getChart(document.querySelector('#figure-curve-loss canvas')).scales.y.type")
    assert scale == "logarithmic"
    expect(page.locator("#figure-curve-rewards-margins input.chart-log")).to_be_disabled()
    page.wait_for_timeout(2500)  # one htmx poll: the chart updates in place and keeps the reader's settings
    assert page.locator("#figure-curve-loss input.chart-smoothing").input_value() == "0.9"
    assert page.evaluate("() => Chart.getChart(document.querySelector('#figure-curve-loss canvas')).scales.y.type") \
        == "logarithmic"

    # several runs overlaid on each chart (the form's multi-select)
    page.select_option("#compare-form select[name=compare]", [str(r.id) for r in others])
    page.click("#compare-form button[type=submit]")
    page.wait_for_url(f"**/research/dpo-runs/{first.id}/?compare=*")
    page.wait_for_selector("figure[data-chart-ready='1']")
    for c in page.evaluate(CHARTS_JS):
        assert c["datasets"][0] == "lr-1e-5" and sorted(c["datasets"]) == ["lr-1e-4", "lr-1e-5", "lr-3e-5"], c
    page.screenshot(path=str(artifacts_dir / "dpo-runs-overlaid.png"), full_page=True)

    # the QC page: bar charts with a value axis (alpha from -1 to 1) and the annotators as categories
    page.goto(f"{live_server.url}/qc/?round={loop.gen_round.id}")
    page.wait_for_selector("figure[data-chart-ready='1']")
    qc = {c["id"]: c for c in page.evaluate(CHARTS_JS)}
    assert set(qc) == {"chart-alpha", "chart-position-bias", "chart-gold"}
    alpha_axes = {a["id"]: a for a in qc["chart-alpha"]["axes"]}
    assert alpha_axes["x"]["title"] == "alpha" and alpha_axes["x"]["ticks"] >= 3 and alpha_axes["y"]["type"] == "category"
    assert {a["id"]: a for a in qc["chart-position-bias"]["axes"]}["y"]["ticks"] >= 3  # one bar per annotator
    assert page.evaluate("() => document.querySelectorAll('[onchange],[onclick]').length") == 0
    page.screenshot(path=str(artifacts_dir / "qc-charts.png"), full_page=True)

    # the leaderboard: strengths with their intervals on an Elo axis around 1000 (not from 0)
    page.goto(f"{live_server.url}/research/leaderboard/")
    page.wait_for_selector("figure[data-chart-ready='1']")
    board = page.evaluate("""() => { const c = Chart.getChart(document.querySelector('#figure-chart-strengths canvas'));
      return {min: c.scales.x.min, max: c.scales.x.max, title: c.scales.x.options.title.text,
              labels: c.data.labels, ranges: c.data.datasets[0].data}; }""")
    assert board["labels"] == ["dpo-r1", "base-v1"] and board["title"] == "Elo"
    assert 0 < board["min"] < 1000 < board["max"] and all(lo <= hi for lo, hi in board["ranges"])
