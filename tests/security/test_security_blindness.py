"""Finding 1: an annotator-side attacker who uses every response it can obtain cannot tell policy from reference.

An evaluation round is launched through the real service (candidates for policy and reference, same seeds), the
candidates are made ready as a worker would, and one annotator works through every group over the API and the HTML
page: the next-group JSON (media links, numbers), the HTML workbench, deliberately refused submits (a position
labelled twice, a position outside the group), the accepted submit, and its own judgment list afterwards. For each
group the attacker ranks the shown positions by every number it saw attached to them (database ids follow creation
order: the lowest would be the policy's) and by the media tokens, and picks the top half as "policy". Over many groups
its hit rate must be what chance gives (one-sided binomial test): before the fix, the judgment list and the error
messages carried candidate ids, and ids named policy first, so the same attacker was right every time. Reservations
are named by a random handle (never their sequential database id): the handles the attacker collects carry no
creation order."""

from __future__ import annotations

import math
import re

import pytest
from django.test import Client
from knox.models import AuthToken
from rest_framework.test import APIClient

from annotation.models import Candidate, Checkpoint, Prompt, Round
from annotation.services import candidates as svc

pytestmark = pytest.mark.django_db
N_PROMPTS = 48
SEEDS = 2
ALPHA = 1e-3
NUMBER = re.compile(r"\d+")


@pytest.fixture
def evaluation_round(tmp_path, monkeypatch, django_capture_on_commit_callbacks):
    from model.tiny import write_tiny_checkpoint

    monkeypatch.setattr("annotation.services.dispatch.generation_dispatch", lambda batches: None)  # no broker
    root = str(write_tiny_checkpoint(tmp_path / "tiny", seed=0))
    policy = Checkpoint.objects.create(name="policy-secret", uri=root, preset="tiny")
    reference = Checkpoint.objects.create(name="reference-secret", uri=root, preset="tiny")
    prompts = [Prompt.objects.create(text=f"prompt {i}: a red ball rolls on grass", text_hash=f"blind-{i}")
               for i in range(N_PROMPTS)]
    rnd = Round.objects.create(
        name="eval-secret", kind=Round.Kind.EVALUATION, policy_checkpoint=policy, reference_checkpoint=reference,
        preset="tiny", num_steps=2, cfg_scale=5.0, shift=13.0, height=32, width=32, num_frames=17, fps=8,
        seeds_per_prompt=SEEDS, base_seed=100, annotators_per_group=1, max_annotators_per_group=1,
        require_full_playback=False, config={"prompt_ids": [p.id for p in prompts]},
    )
    with django_capture_on_commit_callbacks(execute=True):
        svc.round_generation_enqueue(round_id=rnd.id)
    for c in Candidate.objects.filter(group__round=rnd):  # what a worker leaves behind
        Candidate.objects.filter(pk=c.pk).update(
            status=Candidate.Status.READY, video_uri=f"rounds/{rnd.pk}/groups/{c.group_id}/candidates/{c.pk}/video.mp4",
            poster_uri=f"rounds/{rnd.pk}/groups/{c.group_id}/candidates/{c.pk}/poster.jpg", fps=8.0, duration_s=2.1,
            num_frames=17)
    for group_id in set(Candidate.objects.filter(group__round=rnd).values_list("group_id", flat=True)):
        svc.group_refresh(group_id=group_id)
    return rnd


def add(evidence: list, source: str, value, key: str = "") -> None:
    """Every number in ``value`` as (field, number): JSON fields by name, numbers inside text by source."""
    if isinstance(value, dict):
        for k, v in value.items():
            add(evidence, source, v, f"{key}.{k}" if key else k)
    elif isinstance(value, list):
        for v in value:
            add(evidence, source, v, key)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        evidence.append((f"{source}:{key}", value))
    else:
        for i, n in enumerate(NUMBER.findall(str(value))):
            if len(n) < 18:
                evidence.append((f"{source}:{key}#{i}", int(n)))


def binomial_tail(k: int, n: int, p: float = 0.5) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def spearman(xs: list, ys: list) -> float:
    rx = {v: i for i, v in enumerate(sorted(xs))}
    ry = {v: i for i, v in enumerate(sorted(ys))}
    n = len(xs)
    return 1 - 6 * sum((rx[x] - ry[y]) ** 2 for x, y in zip(xs, ys, strict=True)) / (n * (n * n - 1))


def assert_not_ordered(handles: list[str], user) -> None:
    """The reservation handles the attacker saw (in the order it reserved them) carry no order: not numbers, not
    the database ids, not monotonic in creation order, and uncorrelated with it (|Spearman rho| far below what
    an ordered id gives, 1.0; a random order has sd ~ 1/sqrt(n - 1) ~ 0.15 here)."""
    import uuid

    ids = dict(user.assignments.values_list("public_id", "id"))
    assert len(set(handles)) == len(handles) == len(ids)
    assert not any(h.isdigit() for h in handles)
    as_numbers = [uuid.UUID(h).int for h in handles]
    assert sorted(ids[uuid.UUID(h)] for h in handles) == [ids[uuid.UUID(h)] for h in handles]  # reserved in id order
    assert as_numbers != sorted(as_numbers) and as_numbers != sorted(as_numbers, reverse=True)
    rho = spearman(list(range(len(handles))), as_numbers)
    assert abs(rho) < 0.6, f"handles follow creation order (rho={rho:.2f})"
    for text in handles:  # nor derived from the id: an integer id never appears in its handle's place
        assert str(ids[uuid.UUID(text)]) != text


def test_attacker_cannot_tell_policy_from_reference(evaluation_round):
    from tests.annotation.factories import annotator

    user = annotator()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=user)[1]}")
    web = Client()
    web.force_login(user)
    seen: list[tuple[str, dict[int, list]]] = []  # (assignment handle, position -> every (field, value) tied to it)
    judgment_of: dict[int, str] = {}
    while True:
        res = api.get("/api/groups/next/")
        if res.status_code == 204:
            break
        assert res.status_code == 200
        page = res.json()
        k = len(page["candidates"])
        evidence: dict[int, list[str]] = {pos: [] for pos in range(k)}
        for cand in page["candidates"]:
            add(evidence[cand["position"]], "next", cand)
        html = web.get("/annotate/").content.decode()
        assert f'name="assignment" value="{page["assignment"]}"' in html  # the page names the reservation by handle
        for pos in range(k):  # every tag of the page tied to a position's controls
            add(evidence[pos], "html", " ".join(re.findall(rf'name="[a-z_]*_{pos}"[^>]*>', html)))
        for pos in range(k):  # refused submits: a position twice, then one outside the group
            twice = api.post("/api/judgments/submit/", {"assignment": page["assignment"], "outcome": "labelled",
                             "labels": [{"position": pos, "label": "preferred"}, {"position": pos}]}, format="json")
            assert twice.status_code == 400
            add(evidence[pos], "error", twice.json()["detail"])
        outside = api.post("/api/judgments/submit/", {"assignment": page["assignment"], "outcome": "labelled",
                           "labels": [{"position": k + 3, "label": "preferred"}]}, format="json")
        assert outside.status_code == 400 and str(k + 3) not in outside.json()["detail"].replace(str(k + 4), "")
        done = api.post("/api/judgments/submit/", {"assignment": page["assignment"], "outcome": "labelled", "labels": [
            {"position": 0, "label": "preferred"}, {"position": 1, "label": "non_preferred"}]}, format="json")
        assert done.status_code == 201
        add(evidence[0], "submit", done.json())
        seen.append((page["assignment"], evidence))
        judgment_of[done.json()["id"]] = page["assignment"]
    assert len(seen) == N_PROMPTS
    handles_in_order_reserved = [handle for handle, _ in seen]
    assert_not_ordered(handles_in_order_reserved, user)
    mine = api.get("/api/judgments/", {"limit": 1000}).json()["results"]
    by_assignment = {judgment_of[j["id"]]: j for j in mine}
    for assignment, evidence in seen:
        for label in by_assignment[assignment]["labels"]:
            add(evidence[label["shown_position"]], "list", label)

    truth = {}
    for a in user.assignments.select_related("group"):
        policy_id = a.group.round.policy_checkpoint_id
        kinds = dict(Candidate.objects.filter(id__in=a.shown_order).values_list("id", "checkpoint_id"))
        truth[str(a.public_id)] = {pos for pos, cid in enumerate(a.shown_order) if kinds[cid] == policy_id}

    # hypotheses: every numeric field seen at every position of a group, "lower is policy" and "higher is policy"
    fields = sorted({f for _, ev in seen for pos_ev in ev.values() for f, _ in pos_ev})
    hypotheses = [(f, sign) for f in fields for sign in (1, -1)]
    assert hypotheses
    for field, sign in hypotheses:
        hits = total = 0
        for assignment, evidence in seen:
            values = {pos: min((v for f, v in ev if f == field), default=None) for pos, ev in evidence.items()}
            if any(v is None for v in values.values()) or len(set(values.values())) == 1:
                continue
            ranked = sorted(evidence, key=lambda pos: (sign * values[pos], pos))
            guess = set(ranked[: len(ranked) // 2])
            hits += len(guess & truth[assignment])
            total += len(guess)
        if total:
            p = binomial_tail(hits, total)
            assert p > ALPHA / len(hypotheses), (
                f"{field} ({'lower' if sign > 0 else 'higher'} = policy): {hits}/{total} right (p={p:.2g}): "
                "the responses tell policy from reference")
