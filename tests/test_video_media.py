"""media/video.py: container metadata, sampled frames with timestamps, limits, every kind of bad
file, and the rewrite that keeps format, codec family, timing and audio."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from facewarden.errors import InvalidVideo, VideoTooLarge
from facewarden.media import video
from facewarden.media.video import VideoLimits, VideoReader

from .conftest import SHARED_FACES, assert_shape
from .videos import pattern_frames, write_audio, write_video

#: (suffix, video encoder, audio encoder) -> the codec names probe reports
FORMATS = [
    (".mp4", "libx264", "aac", "h264", "aac", "QuickTime / MOV"),
    (".mkv", "libx264", "aac", "h264", "aac", "Matroska / WebM"),
    (".webm", "libvpx-vp9", "libopus", "vp9", "opus", "Matroska / WebM"),
    (".avi", "mpeg4", "libmp3lame", "mpeg4", "mp3", "AVI (Audio Video Interleaved)"),
]


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """2 s of 320x240 H.264 at 25 fps with an AAC tone."""
    return write_video(tmp_path / "clip.mp4", pattern_frames(50))


@pytest.mark.parametrize(("suffix", "vcodec", "acodec", "vname", "aname", "fmt"), FORMATS)
def test_probe_reads_the_container_metadata(
    tmp_path: Path, suffix, vcodec, acodec, vname, aname, fmt
) -> None:
    path = write_video(
        tmp_path / f"c{suffix}", pattern_frames(30, 320, 240), codec=vcodec, audio_codec=acodec
    )
    meta = video.probe(path)
    assert (meta.codec, meta.width, meta.height, meta.frame_rate) == (vname, 320, 240, 25.0)
    assert abs(meta.duration_ms - 1200) <= 80 and meta.format == fmt
    assert meta.has_audio and meta.audio_codec == aname and meta.color_range == "LIMITED"
    assert meta.size_bytes == path.stat().st_size
    wire = meta.to_rekognition()
    assert_shape("GetFaceDetection", {"JobStatus": "SUCCEEDED", "VideoMetadata": wire})
    assert video.VideoMetadata.from_rekognition(wire).to_rekognition() == wire


def test_a_video_without_audio_and_full_range_mjpeg(tmp_path: Path) -> None:
    path = write_video(
        tmp_path / "m.avi", pattern_frames(10), codec="mjpeg", audio_codec=None, pix_fmt="yuvj420p"
    )
    meta = video.probe(path)
    assert meta.codec == "mjpeg" and not meta.has_audio and meta.audio_codec is None
    assert meta.color_range == "FULL"


def test_frames_are_sampled_at_the_rate_with_timestamps_in_ms(clip: Path) -> None:
    frames = list(video.read_frames(clip))  # default: 5 per second
    assert [f.timestamp_ms for f in frames] == list(range(0, 2000, 200))
    assert [f.index for f in frames] == list(range(0, 50, 5))
    for f in frames:  # each sampled frame is the frame its index says (the red level encodes it)
        assert f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8
        assert abs(int(np.median(f.image[5:60, 5:60, 0])) - (f.index * 7) % 256) <= 6
    every = list(video.read_frames(clip, sample_rate=None))
    assert [f.index for f in every] == list(range(50)) and every[1].timestamp_ms == 40
    assert [f.timestamp_ms for f in video.read_frames(clip, sample_rate=2)] == [0, 520, 1000, 1520]
    assert len(list(video.read_frames(clip, sample_rate=100))) == 50  # never more than every frame


@pytest.mark.parametrize("fps", [Fraction(30), Fraction(30000, 1001), Fraction(24)])
def test_sampling_follows_time_not_frame_count(tmp_path: Path, fps: Fraction) -> None:
    path = write_video(tmp_path / "c.mkv", pattern_frames(int(3 * fps)), fps=fps, audio_codec=None)
    stamps = [f.timestamp_ms for f in video.read_frames(path, sample_rate=5)]
    assert len(stamps) == 15
    gaps = np.diff(stamps)
    assert gaps.min() >= 200 - 1000 / float(fps) and gaps.max() <= 200 + 1000 / float(fps)
    assert all(abs(s - 200 * k) <= 1000 / float(fps) for k, s in enumerate(stamps))


def test_a_reader_reads_its_frames_once(clip: Path) -> None:
    with VideoReader(clip) as reader:
        assert len(list(reader.frames())) == 10
        with pytest.raises(RuntimeError, match="once"):
            list(reader.frames())


# ---- bad files ------------------------------------------------------------------------------------
def _truncate(path: Path, out: Path, fraction: float) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def _bad_files(tmp: Path, clip: Path) -> dict[str, tuple[Path, str]]:
    mkv = write_video(tmp / "good.mkv", pattern_frames(50))
    corrupt = bytearray(mkv.read_bytes())
    middle = len(corrupt) // 3
    corrupt[middle : middle + 4000] = (
        np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    )
    (tmp / "corrupt.mkv").write_bytes(bytes(corrupt))
    # the same bytes, but the codec id names a codec that does not exist (same length: sizes stay valid)
    (tmp / "codec.mkv").write_bytes(mkv.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/AVC"))
    (tmp / "empty.mp4").write_bytes(b"")
    (tmp / "notes.mp4").write_text("these are not the frames you are looking for\n" * 20)
    photo = next(p for p in sorted(SHARED_FACES.rglob("*.jpg")))
    shutil.copy(photo, tmp / "photo.mp4")
    return {
        "empty": (tmp / "empty.mp4", "empty"),
        "text": (tmp / "notes.mp4", "not a video"),
        "image": (tmp / "photo.mp4", "still image"),
        "audio only": (write_audio(tmp / "song.m4a"), "no video stream"),
        "truncated mp4": (_truncate(clip, tmp / "cut.mp4", 0.6), "corrupt, truncated"),
        "truncated mkv": (_truncate(mkv, tmp / "cut.mkv", 0.5), "truncated"),
        "corrupt mkv": (tmp / "corrupt.mkv", "corrupt"),
        "unknown codec": (tmp / "codec.mkv", "codec facewarden cannot decode"),
        "folder": (tmp, "folder"),
        "missing": (tmp / "nope.mp4", "No such file"),
    }


def test_every_kind_of_bad_file_is_a_clear_invalid_video(tmp_path: Path, clip: Path) -> None:
    for name, (path, says) in _bad_files(tmp_path, clip).items():
        with pytest.raises(InvalidVideo) as err:
            with VideoReader(path) as reader:
                for _ in reader.frames():
                    pass
        assert says in err.value.message, (name, err.value.message)
        assert err.value.aws_code == "InvalidParameterException" and err.value.http_status == 400


def test_limits_are_checked_before_decoding(clip: Path) -> None:
    cases = [
        (VideoLimits(max_bytes=1000), "kB; the limit is 1.0 kB"),
        (VideoLimits(max_duration_s=1.5), "lasts at least 2.0 seconds; the limit is 1.5 seconds"),
        (VideoLimits(max_pixels=320 * 200), "320x240 frames"),
    ]
    for limits, says in cases:
        with pytest.raises(VideoTooLarge, match=says) as err:
            video.probe(clip, limits)
        assert err.value.aws_code == "VideoTooLargeException"


# ---- rewrite ---------------------------------------------------------------------------------------
def _audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def _video_pts(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return [f.pts for f in c.decode(video=0)]


@pytest.mark.parametrize(("suffix", "vcodec", "acodec", "vname", "aname", "fmt"), FORMATS)
def test_rewrite_keeps_format_codec_timing_and_audio(
    tmp_path: Path, suffix, vcodec, acodec, vname, aname, fmt
):
    src = write_video(tmp_path / f"in{suffix}", pattern_frames(40), codec=vcodec, audio_codec=acodec)
    dst = tmp_path / f"out{suffix}"
    seen: list[int] = []

    def invert(frame: video.Frame) -> np.ndarray:
        seen.append(frame.index)
        return 255 - frame.image

    progress: list[tuple[int, int]] = []
    meta = video.rewrite(src, dst, invert, progress=lambda done, total: progress.append((done, total)))
    out = video.probe(dst)
    assert seen == list(range(40))
    assert (out.codec, out.format, out.width, out.height, out.frame_rate) == (vname, fmt, 320, 240, 25.0)
    assert out.duration_ms == meta.duration_ms and out.audio_codec == aname
    assert _audio_packets(dst) == _audio_packets(src)  # the audio, packet for packet
    assert _video_pts(dst) == _video_pts(src)
    originals = {f.index: f.image for f in video.read_frames(src, sample_rate=None)}
    for f in video.read_frames(dst, sample_rate=None):
        assert np.abs(f.image.astype(int) - (255 - originals[f.index].astype(int))).mean() < 8
    assert progress[-1][1] == meta.duration_ms and [p[0] for p in progress] == sorted(p[0] for p in progress)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, dst.name])


def test_rewrite_refuses_a_transform_of_the_wrong_size_and_leaves_nothing(tmp_path: Path, clip: Path) -> None:
    dst = tmp_path / "out.mp4"
    with pytest.raises(ValueError, match="shape"):
        video.rewrite(clip, dst, lambda f: f.image[:100])
    assert not dst.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_rewrite_of_a_bad_file_is_an_invalid_video(tmp_path: Path, clip: Path) -> None:
    cut = _truncate(write_video(tmp_path / "good.mkv", pattern_frames(50)), tmp_path / "cut.mkv", 0.5)
    with pytest.raises(InvalidVideo, match="truncated"):
        video.rewrite(cut, tmp_path / "out.mkv", lambda f: f.image)
    assert not (tmp_path / "out.mkv").exists()
