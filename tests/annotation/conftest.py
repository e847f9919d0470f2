"""Fixtures of the annotation tests: real MP4 files written with ffmpeg and saved through annotation.storage."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from annotation import storage

COLOURS = ["red", "green", "blue", "yellow", "magenta", "cyan"]


def ffmpeg_exe() -> str:
    exe = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
    if Path(exe).exists():
        return exe
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture(scope="session")
def clip_files(tmp_path_factory) -> list[tuple[Path, Path]]:
    """Six 2 s, 25 fps, 64x64 H.264 yuv420p +faststart clips (testsrc tinted a different colour each) and posters."""
    root = tmp_path_factory.mktemp("clips")
    out = []
    for i, colour in enumerate(COLOURS):
        video, poster = root / f"clip{i}.mp4", root / f"clip{i}.jpg"
        subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=2",
             "-f", "lavfi", "-i", f"color=c={colour}:size=64x64:rate=25:duration=2",
             "-filter_complex", "[0:v][1:v]blend=all_mode=overlay:all_opacity=0.6,format=yuv420p",
             "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(video)],
            check=True,
        )
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(video), "-frames:v", "1", str(poster)], check=True)
        out.append((video, poster))
    return out


@pytest.fixture
def media_group(clip_files):
    """Factory: a READY group whose K candidates have real videos and posters in storage."""
    from tests.annotation.factories import CandidateFactory, GroupFactory

    def make(*, k: int = 2, round=None, **group_kwargs):
        kwargs = {"round": round} if round is not None else {}
        group = GroupFactory(**kwargs, **group_kwargs)
        for i in range(k):
            cand = CandidateFactory(group=group, video_uri="pending")
            video, poster = clip_files[i % len(clip_files)]
            key = storage.candidate_key(round_id=group.round_id, group_id=group.pk, candidate_id=cand.pk, filename="video.mp4")
            cand.video_uri = storage.object_save_file(key=key, path=video, content_type="video/mp4")
            pkey = storage.candidate_key(round_id=group.round_id, group_id=group.pk, candidate_id=cand.pk, filename="poster.jpg")
            cand.poster_uri = storage.object_save_file(key=pkey, path=poster, content_type="image/jpeg")
            cand.save(update_fields=["video_uri", "poster_uri"])
        return group

    return make
