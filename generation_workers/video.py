"""Video files from decoded frames, with ffmpeg through ``ffmpeg-python``.

- :func:`encode_mp4`: H.264 (libx264) MP4, ``yuv420p``, ``+faststart`` (the ``moov`` atom before ``mdat``, so a browser
  starts playing before the whole file arrived), constant frame rate, even dimensions (yuv420p halves chroma).
- :func:`write_poster`: the first frame as JPEG. :func:`write_sprite`: a grid of thumbnails as one JPEG, for scrubbing.
- :func:`probe` / :func:`mp4_top_level_atoms`: what tests and screening read back.

ffmpeg comes from ``PATH`` (Debian's), else from the ``imageio-ffmpeg`` wheel. Frames are uint8 ``(T, H, W, 3)`` RGB.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import ffmpeg
import numpy as np
from PIL import Image


class VideoEncodeError(RuntimeError):
    """ffmpeg refused the frames (deterministic: retrying does not help)."""


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary: ``PATH`` first, else the one shipped in the imageio-ffmpeg wheel."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@lru_cache(maxsize=1)
def ffprobe_exe() -> str | None:
    """ffprobe next to ffmpeg or on ``PATH`` (the imageio-ffmpeg wheel has none: :func:`probe` falls back)."""
    sibling = Path(ffmpeg_exe()).with_name("ffprobe")
    if sibling.exists():
        return str(sibling)
    return shutil.which("ffprobe")


def _check_frames(frames: np.ndarray) -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoEncodeError(f"frames must be a (T, H, W, 3) array, got {getattr(frames, 'shape', type(frames))}")
    if frames.shape[0] < 1 or frames.shape[1] < 2 or frames.shape[2] < 2:
        raise VideoEncodeError(f"frames too small to encode: {frames.shape}")
    if frames.dtype != np.uint8:
        raise VideoEncodeError(f"frames must be uint8, got {frames.dtype}")
    return np.ascontiguousarray(frames)


def encode_mp4(frames: np.ndarray, path: Path, *, fps: int, crf: int = 18, preset: str = "medium") -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB to an H.264 MP4 at a constant ``fps``; odd sizes are padded by one
    pixel (edge-replicated) to even. Raises :class:`VideoEncodeError` with ffmpeg's message."""
    frames = _check_frames(frames)
    t, h, w, _ = frames.shape
    if fps <= 0:
        raise VideoEncodeError(f"fps must be positive, got {fps}")
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
    if h % 2 or w % 2:
        stream = stream.filter("pad", width="ceil(iw/2)*2", height="ceil(ih/2)*2", x=0, y=0)  # yuv420p: even sizes
    stream = ffmpeg.output(
        stream,
        str(path),
        vcodec="libx264",
        pix_fmt="yuv420p",
        preset=preset,
        crf=crf,
        r=fps,
        fps_mode="cfr",  # constant frame rate (ffmpeg >= 5.1; -vsync cfr before)
        movflags="+faststart",
        profile="high",
        # a keyframe every second: cheap seeking while scrubbing
        g=max(1, int(fps)),
        an=None,
        f="mp4",
    )
    try:
        ffmpeg.run(stream, cmd=ffmpeg_exe(), input=frames.tobytes(), overwrite_output=True, capture_stdout=True,
                   capture_stderr=True, quiet=True)
    except ffmpeg.Error as exc:
        tail = (exc.stderr or b"").decode(errors="replace")[-2000:]
        raise VideoEncodeError(f"ffmpeg failed to encode {t}x{h}x{w} frames: {tail}") from exc
    return path


def write_poster(frames: np.ndarray, path: Path, *, index: int = 0, quality: int = 90) -> Path:
    """One frame (default the first, what ``<video poster>`` shows before playback) as JPEG."""
    frames = _check_frames(frames)
    Image.fromarray(frames[min(index, len(frames) - 1)]).save(path, format="JPEG", quality=quality)
    return path


@dataclass(frozen=True)
class SpriteLayout:
    """Where thumbnail ``i`` lives in the sprite: column ``i % columns``, row ``i // columns``."""

    count: int
    columns: int
    rows: int
    thumb_width: int
    thumb_height: int
    frame_indices: tuple[int, ...]

    def as_dict(self) -> dict:
        return {
            "count": self.count, "columns": self.columns, "rows": self.rows, "thumb_width": self.thumb_width,
            "thumb_height": self.thumb_height, "frame_indices": list(self.frame_indices),
        }


def write_sprite(frames: np.ndarray, path: Path, *, count: int = 10, columns: int = 5, thumb_width: int = 160,
                 quality: int = 85) -> SpriteLayout:
    """A grid of ``count`` evenly spaced thumbnails (``columns`` per row) as one JPEG; returns the layout."""
    frames = _check_frames(frames)
    t, h, w, _ = frames.shape
    count = max(1, min(count, t))
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    thumb_width = min(thumb_width, w) if w >= 16 else w
    thumb_height = max(1, round(h * thumb_width / w))
    indices = tuple(int(round(i * (t - 1) / max(1, count - 1))) for i in range(count))
    sheet = Image.new("RGB", (columns * thumb_width, rows * thumb_height))
    for n, idx in enumerate(indices):
        thumb = Image.fromarray(frames[idx]).resize((thumb_width, thumb_height), Image.Resampling.BILINEAR)
        sheet.paste(thumb, ((n % columns) * thumb_width, (n // columns) * thumb_height))
    sheet.save(path, format="JPEG", quality=quality)
    return SpriteLayout(count, columns, rows, thumb_width, thumb_height, indices)


# -- reading back -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    num_frames: int
    fps: float
    duration_s: float
    pix_fmt: str


def probe(path: Path) -> VideoInfo:
    """Codec, size, exact frame count (counted by decoding), frame rate and duration of the first video stream."""
    exe = ffprobe_exe()
    if exe is None:
        return _probe_with_ffmpeg(path)
    out = subprocess.run(
        [exe, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,width,height,nb_read_frames,r_frame_rate,avg_frame_rate,pix_fmt,duration",
         "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise VideoEncodeError(f"ffprobe cannot read {path}: {out.stderr[-1000:]}")
    data = json.loads(out.stdout)
    if not data.get("streams"):
        raise VideoEncodeError(f"no video stream in {path}")
    s = data["streams"][0]
    num, den = (int(x) for x in s["r_frame_rate"].split("/"))
    duration = float(s.get("duration") or data.get("format", {}).get("duration") or 0.0)
    return VideoInfo(s["codec_name"], int(s["width"]), int(s["height"]), int(s["nb_read_frames"]),
                     num / den if den else 0.0, duration, s.get("pix_fmt", ""))


def _probe_with_ffmpeg(path: Path) -> VideoInfo:
    """Fallback without ffprobe: parse ``ffmpeg -i`` and count frames with the null muxer."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null",
                          "-"], capture_output=True, text=True, check=False)
    err = out.stderr
    m = re.search(r"Video: (\w+).*?, (\w+)\(?.*?, (\d+)x(\d+).*?, ([\d.]+) fps", err)
    frames = re.findall(r"frame=\s*(\d+)", err)
    dur = re.search(r"Duration: (\d+):(\d+):([\d.]+)", err)
    if out.returncode != 0 or not m or not frames:
        raise VideoEncodeError(f"ffmpeg cannot read {path}: {err[-1000:]}")
    duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else 0.0
    return VideoInfo(m.group(1), int(m.group(3)), int(m.group(4)), int(frames[-1]), float(m.group(5)), duration,
                     m.group(2))


def decode_frames(path: Path) -> np.ndarray:
    """Decode a video back to uint8 (T, H, W, 3) RGB (tests and re-screening)."""
    info = probe(path)
    out, err = (
        ffmpeg.input(str(path)).output("pipe:", format="rawvideo", pix_fmt="rgb24")
        .run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True, quiet=True)
    )
    return np.frombuffer(out, np.uint8).reshape(-1, info.height, info.width, 3)


def mp4_top_level_atoms(path: Path) -> list[str]:
    """The top-level box types of an MP4 in file order (``['ftyp', 'moov', 'mdat', ...]`` when faststart)."""
    atoms: list[str] = []
    with open(path, "rb") as fh:
        while True:
            header = fh.read(8)
            if len(header) < 8:
                break
            size, kind = struct.unpack(">I4s", header)
            header_len = 8
            if size == 1:  # 64-bit size follows
                size = struct.unpack(">Q", fh.read(8))[0]
                header_len = 16
            atoms.append(kind.decode("latin-1"))
            if size == 0:  # box extends to the end of the file
                break
            if size < header_len:
                raise ValueError(f"corrupt MP4 box {kind!r} of size {size} in {path}")
            fh.seek(size - header_len, 1)
    return atoms


def is_faststart(path: Path) -> bool:
    atoms = mp4_top_level_atoms(path)
    return "moov" in atoms and "mdat" in atoms and atoms.index("moov") < atoms.index("mdat")
