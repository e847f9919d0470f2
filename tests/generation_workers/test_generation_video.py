"""ffmpeg encoding (H.264, yuv420p, faststart, constant frame rate, even sizes), poster, sprite; screening."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from generation_workers import screening, video


def moving_frames(t=17, h=32, w=32, seed=0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0 : w * 2 + t].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 3.0 + seed), 128 + 100 * np.cos(y / 4.0), 128 + 60 * np.sin((x + y) / 5.0)], -1)
    base = base.clip(0, 255).astype(np.uint8)
    return np.stack([base[:, i : i + w] for i in range(t)])  # a smooth texture panning right, one pixel per frame


@pytest.mark.parametrize("fps", [8, 25])
def test_mp4_is_h264_yuv420p_faststart_at_constant_rate(tmp_path, fps):
    frames = moving_frames()
    path = video.encode_mp4(frames, tmp_path / "v.mp4", fps=fps, preset="veryfast")
    info = video.probe(path)
    assert (info.codec, info.pix_fmt, info.num_frames, info.fps) == ("h264", "yuv420p", 17, float(fps))
    assert info.duration_s == pytest.approx(17 / fps, abs=1.0 / fps)
    atoms = video.mp4_top_level_atoms(path)
    assert atoms[0] == "ftyp" and atoms.index("moov") < atoms.index("mdat") and video.is_faststart(path)
    decoded = video.decode_frames(path)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 25  # lossy but the same picture


def test_odd_sizes_are_padded_to_even(tmp_path):
    path = video.encode_mp4(moving_frames(h=31, w=45), tmp_path / "odd.mp4", fps=8, preset="veryfast")
    info = video.probe(path)
    assert (info.width, info.height, info.num_frames) == (46, 32, 17)


def test_ffmpeg_fallback_probe_agrees(tmp_path):
    path = video.encode_mp4(moving_frames(), tmp_path / "v.mp4", fps=8, preset="veryfast")
    a, b = video.probe(path), video._probe_with_ffmpeg(path)
    assert (a.codec, a.width, a.height, a.num_frames, a.fps) == (b.codec, b.width, b.height, b.num_frames, b.fps)


def test_poster_and_sprite(tmp_path):
    frames = moving_frames(h=32, w=48)
    poster = Image.open(video.write_poster(frames, tmp_path / "p.jpg"))
    assert poster.format == "JPEG" and poster.size == (48, 32)
    layout = video.write_sprite(frames, tmp_path / "s.jpg", count=10, columns=5, thumb_width=24)
    sprite = Image.open(tmp_path / "s.jpg")
    assert (layout.columns, layout.rows, layout.thumb_width, layout.thumb_height) == (5, 2, 24, 16)
    assert sprite.size == (5 * 24, 2 * 16) and layout.frame_indices[0] == 0 and layout.frame_indices[-1] == 16


@pytest.mark.parametrize("bad", [np.zeros((17, 32, 32), np.uint8), np.zeros((17, 32, 32, 3), np.float32),
                                 np.zeros((0, 32, 32, 3), np.uint8)])
def test_bad_frames_are_refused(tmp_path, bad):
    with pytest.raises(video.VideoEncodeError):
        video.encode_mp4(bad, tmp_path / "x.mp4", fps=8)


def test_ffmpeg_binary_found():
    assert video.ffmpeg_exe()


# -- screening -------------------------------------------------------------------------------------------------------
def test_good_video_has_no_flags():
    flags, metrics = screening.screen_frames(moving_frames())
    assert flags == [] and metrics["motion_mean_abs_diff"] > 5


def test_black_frames_are_flagged():
    frames = np.full((17, 32, 32, 3), 2, np.uint8)
    flags, metrics = screening.screen_frames(frames)
    assert set(flags) == {"black", "uniform", "static"} and metrics["black_fraction"] == 1.0


def test_a_small_lit_object_on_a_black_background_is_not_black():
    """The shapes world's "a red circle moving right on a black background": a dark frame with something lit in it
    is content (its brightest 1% is far above the black level); a frame whose brightest pixels are near black too is
    still a black frame."""
    from model.world.render import render

    clip = render("a small red circle moving right on a black background", seed=0, size=64)
    flags, metrics = screening.screen_frames(clip)
    assert metrics["mean_luma"] < 16 and "black" not in flags and metrics["black_fraction"] == 0.0
    dim = np.clip(clip.astype(np.int16) // 12, 0, 255).astype(np.uint8)  # the same clip nearly unlit
    assert "black" in screening.screen_frames(dim)[0]
    # a black clip does not escape the flag through scattered hot pixels or dim pixel noise
    rng = np.random.default_rng(0)
    hot = np.zeros((16, 64, 64, 3), np.uint8)
    for t in range(16):
        hot[t].reshape(-1, 3)[rng.choice(64 * 64, 50, replace=False)] = 255  # 1.2% of the pixels, moving
    noise = rng.integers(0, 21, (16, 64, 64, 1)).repeat(3, -1).astype(np.uint8)
    assert "black" in screening.screen_frames(hot)[0] and "black" in screening.screen_frames(noise)[0]
    caption = np.zeros((16, 64, 64, 3), np.uint8)
    caption[:, 56:62, 8:56] = 255  # a lit caption bar on black is content
    assert "black" not in screening.screen_frames(caption)[0]


def test_uniform_but_bright_moving_color_is_uniform_only():
    frames = np.stack([np.full((32, 32, 3), 60 + 8 * t, np.uint8) for t in range(17)])
    flags, _ = screening.screen_frames(frames)
    assert flags == ["uniform"]


def test_static_texture_is_flagged_static_only():
    frames = np.repeat(moving_frames()[:1], 17, axis=0)
    flags, metrics = screening.screen_frames(frames)
    assert flags == ["static"] and metrics["motion_mean_abs_diff"] == 0.0


def test_thresholds_come_from_settings(settings):
    settings.VIDEODPO = {**settings.VIDEODPO, "SCREENING": {"static_diff": 1000}}
    flags, metrics = screening.screen_frames(moving_frames(), screening.ScreeningThresholds.from_settings())
    assert flags == ["static"] and metrics["thresholds"]["static_diff"] == 1000


def test_bad_shape_is_a_decode_failure():
    assert screening.screen_frames(np.zeros((17, 32, 32), np.uint8))[0] == ["decode_failed"]
