"""The round page's researcher-only scripted scores: computed on request from the stored MP4s by the shapes-world
detectors; not scorable for prompts outside the grammar; annotators cannot open the page."""

from __future__ import annotations

import tempfile
from pathlib import Path

import imageio_ffmpeg
import pytest

from annotation import storage
from model.world.render import render
from tests.annotation.factories import CandidateFactory, GroupFactory, PromptFactory, RoundFactory, UserFactory

PROMPT = "a big red circle moving right slowly on a black background"


def _store_video(key: str, frames) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mp4"
        writer = imageio_ffmpeg.write_frames(str(path), (frames.shape[2], frames.shape[1]), fps=8, codec="libx264",
                                             pix_fmt_out="yuv444p", output_params=["-qp", "0"])
        writer.send(None)
        for frame in frames:
            writer.send(frame.tobytes())
        writer.close()
        storage.object_save_file(key=key, path=path, content_type="video/mp4")


@pytest.mark.django_db
def test_researchers_see_scripted_scores_on_request_and_annotators_never(client):
    round = RoundFactory()
    good = CandidateFactory(group=GroupFactory(round=round, prompt=PromptFactory(text=PROMPT)))
    _store_video(storage.key_from_uri(good.video_uri), render(PROMPT, 0))
    odd = CandidateFactory(group=GroupFactory(round=round, prompt=PromptFactory(text="a cat on a sofa")))
    _store_video(storage.key_from_uri(odd.video_uri), render(PROMPT, 1))

    client.force_login(UserFactory(roles=["annotator"]))
    assert client.get(f"/research/rounds/{round.id}/?scripted=1").status_code in (302, 403)

    client.force_login(UserFactory(roles=["researcher"]))
    page = client.get(f"/research/rounds/{round.id}/").content.decode()
    assert "Show the scripted annotator" in page and "not scorable" not in page  # nothing decoded by default
    page = client.get(f"/research/rounds/{round.id}/?scripted=1").content.decode()
    assert PROMPT in page and "1.00" in page  # the rendered ground truth satisfies every attribute
    assert "not scorable (prompt outside the shapes grammar)" in page
