"""Video files -> sampled RGB frames with timestamps, and frames -> a video like the original.

Decoding and encoding run on PyAV, whose wheels bundle FFmpeg (so nothing is installed beside
Python). Every video facewarden reads enters here, through :class:`VideoReader`:

* the byte limit is checked before the file is opened, the pixel and duration limits from the
  container's header before a frame is decoded (and the duration again while decoding, for
  containers whose header does not say);
* zero-length files, files that are not a video (text, an image, an audio-only file), a container
  without a video stream, a codec FFmpeg cannot decode, corrupt data and a truncated file each
  raise :class:`~facewarden.errors.InvalidVideo` (or :class:`~facewarden.errors.VideoTooLarge`),
  whose message says what was wrong and what to do; no FFmpeg error escapes;
* frames are *sampled*: :meth:`VideoReader.frames` yields ``sample_rate`` frames per second of
  video (default :data:`DEFAULT_SAMPLE_RATE`, 5/s), each with its presentation time in
  milliseconds from the start of the video (Rekognition's ``Timestamp``). Every frame is still
  decoded (inter-coded video cannot skip), but only the sampled ones are converted to RGB.

Sampling is a trade-off: a face visible for less than 1/rate seconds may be missed, and work grows
linearly with the rate. Five frames per second keeps every person who stays in view for a fifth of
a second while costing a fifth of 25-fps full decoding's detection work.

:func:`rewrite` writes a transformed copy of a video (the redaction path): every frame passes
through a function, and the copy keeps the container format, the codec family, the resolution, the
frame timing (so the frame rate and duration) and the audio, whose packets are copied unchanged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidVideo, VideoTooLarge

#: Frames per second of video that are sampled for analysis unless a caller asks otherwise.
DEFAULT_SAMPLE_RATE = 5.0
#: Limits (Rekognition Video's own: 10 GB, 6 hours; 4K frames).
DEFAULT_MAX_BYTES = 10 * 1024**3
DEFAULT_MAX_DURATION_S = 6 * 3600.0
DEFAULT_MAX_PIXELS = 4096 * 2160

#: FFmpeg demuxers that read still images (or text as pictures): such a file is not a video.
_IMAGE_DEMUXERS = {"image2", "gif", "apng", "webp", "tty", "bin", "ico", "mpjpeg", "image2pipe"}
_ACCEPTED_TEXT = "an MP4, MOV, MKV, WebM or AVI video (H.264, H.265, VP8, VP9, AV1, MPEG-4 or MJPEG)"

#: decoder name -> encoders of the same family, preferred first (the rewrite keeps the family).
_ENCODERS: dict[str, tuple[str, ...]] = {
    "h264": ("libx264", "h264"),
    "hevc": ("libx265", "hevc"),
    "vp8": ("libvpx", "vp8"),
    "vp9": ("libvpx-vp9", "vp9"),
    "av1": ("libsvtav1", "libaom-av1", "av1"),
    "libdav1d": ("libsvtav1", "libaom-av1", "av1"),
    "mpeg4": ("mpeg4",),
    "mpeg2video": ("mpeg2video",),
    "mpeg1video": ("mpeg1video",),
    "mjpeg": ("mjpeg",),
}
#: decoder name -> the codec it decodes, where they differ
_FAMILY = {
    "libdav1d": "av1",
    "libaom-av1": "av1",
    "libvpx": "vp8",
    "libvpx-vp9": "vp9",
    "libopenh264": "h264",
    "mp3float": "mp3",
}
#: Encoder settings that keep the picture close to the original (the copy is re-encoded once).
_ENCODER_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "veryfast", "crf": "18"},
    "libx265": {"preset": "fast", "crf": "20", "x265-params": "log-level=error"},
    "libvpx": {"crf": "8", "deadline": "good", "cpu-used": "4"},
    "libvpx-vp9": {"crf": "24", "deadline": "good", "cpu-used": "5", "row-mt": "1"},
    "libsvtav1": {"crf": "28", "preset": "10", "svtav1-params": "log-level=1"},
    "mpeg4": {"qscale": "3"},
    "mjpeg": {"qscale": "3"},
}
#: demuxer name (as FFmpeg reports it) -> muxer, when the file's extension does not say.
_MUXERS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "matroska", "avi": "avi", "mpegts": "mpegts"}
_MUXER_BY_SUFFIX = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
    ".ts": "mpegts",
}


@dataclass(frozen=True)
class VideoLimits:
    """What a video may be: bytes on disk, duration, and pixels per frame."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class VideoMetadata:
    """What the container says about a video (Rekognition's ``VideoMetadata``, plus audio)."""

    codec: str
    duration_ms: int
    format: str
    frame_rate: float
    width: int
    height: int
    color_range: str  # FULL | LIMITED
    has_audio: bool
    audio_codec: str | None = None
    size_bytes: int = 0

    def to_rekognition(self) -> dict[str, Any]:
        return {
            "Codec": self.codec,
            "DurationMillis": int(self.duration_ms),
            "Format": self.format,
            "FrameRate": float(self.frame_rate),
            "FrameHeight": int(self.height),
            "FrameWidth": int(self.width),
            "ColorRange": self.color_range,
        }

    @classmethod
    def from_rekognition(cls, shape: dict[str, Any]) -> VideoMetadata:
        return cls(
            codec=shape["Codec"],
            duration_ms=int(shape["DurationMillis"]),
            format=shape["Format"],
            frame_rate=float(shape["FrameRate"]),
            width=int(shape["FrameWidth"]),
            height=int(shape["FrameHeight"]),
            color_range=shape["ColorRange"],
            has_audio=False,
        )


@dataclass
class Frame:
    """One decoded frame: its position in the stream, its presentation time and its RGB pixels."""

    index: int  # decoded frame number, from 0
    timestamp_ms: int  # milliseconds from the start of the video
    image: np.ndarray  # (height, width, 3) uint8 RGB


class VideoReader:
    """An open video: :attr:`metadata` at once, then :meth:`frames` (once). Use as a context manager."""

    def __init__(self, path: str | Path, limits: VideoLimits | None = None) -> None:
        import av

        self.path = Path(path)
        self.limits = limits or VideoLimits()
        size = _checked_size(self.path, self.limits)
        try:
            self.container: Any = av.open(str(self.path), mode="r", metadata_errors="ignore")
        except av.FFmpegError as exc:
            raise InvalidVideo(
                f"{self.path.name} is not a video facewarden can read ({_ffmpeg_reason(exc)}): it is "
                f"corrupt, truncated or not a video at all. Send {_ACCEPTED_TEXT}."
            ) from None
        try:
            self.stream: Any = self._video_stream()
            self.metadata = self._metadata(size)
        except BaseException:
            self.container.close()
            raise
        self._consumed = False

    # ---- opening -------------------------------------------------------------------------------
    def _video_stream(self) -> Any:
        c = self.container
        fmt = c.format.name
        if fmt in _IMAGE_DEMUXERS or fmt.endswith("_pipe"):
            raise InvalidVideo(
                f"{self.path.name} is a still image ({c.format.long_name}), not a video. Send {_ACCEPTED_TEXT}."
            )
        if not c.streams.video:
            kinds = sorted({s.type for s in c.streams}) or ["no streams"]
            raise InvalidVideo(
                f"{self.path.name} has no video stream (it holds {', '.join(kinds)}). Send {_ACCEPTED_TEXT}."
            )
        stream = c.streams.video[0]
        ctx = stream.codec_context
        if ctx is None or not ctx.codec or not stream.codec_context.name:
            raise InvalidVideo(
                f"The video stream of {self.path.name} uses a codec facewarden cannot decode. "
                f"Convert it to {_ACCEPTED_TEXT}."
            )
        stream.thread_type = "AUTO"  # frame and slice threads: decoding keeps up with analysis
        return stream

    def _metadata(self, size: int) -> VideoMetadata:
        s, c, limits = self.stream, self.container, self.limits
        width, height = int(s.codec_context.width or 0), int(s.codec_context.height or 0)
        if width < 1 or height < 1:
            raise InvalidVideo(
                f"The video stream of {self.path.name} declares no frame size ({width}x{height}): the file "
                "is corrupt or truncated."
            )
        if width * height > limits.max_pixels:
            raise VideoTooLarge(
                f"{self.path.name} has {width}x{height} frames = {width * height / 1e6:.1f} megapixels; the "
                f"limit is {limits.max_pixels / 1e6:.1f} megapixels. Downscale it (e.g. to 1920x1080)."
            )
        rate = s.average_rate or s.guessed_rate or s.base_rate
        duration_ms = self._declared_duration_ms()
        if duration_ms is not None and duration_ms > limits.max_duration_s * 1000:
            raise VideoTooLarge(_too_long(self.path.name, duration_ms / 1000, limits.max_duration_s))
        audio = c.streams.audio[0] if c.streams.audio else None
        return VideoMetadata(
            codec=_codec_name(s) or "unknown",
            duration_ms=int(duration_ms or 0),
            format=c.format.long_name or c.format.name,
            frame_rate=round(float(rate), 3) if rate else 0.0,
            width=width,
            height=height,
            color_range="FULL" if _full_range(s.codec_context) else "LIMITED",
            has_audio=audio is not None,
            audio_codec=_codec_name(audio) if audio is not None else None,
            size_bytes=size,
        )

    def _declared_duration_ms(self) -> int | None:
        """The video stream's duration from the header (stream, then Matroska tag, then container)."""
        s, c = self.stream, self.container
        if s.duration and s.time_base:
            return int(round(float(s.duration * s.time_base) * 1000))
        tag = (s.metadata or {}).get("DURATION")
        if tag:
            try:
                h, m, sec = tag.split(":")
                return int(round((int(h) * 3600 + int(m) * 60 + float(sec)) * 1000))
            except ValueError:
                pass
        if c.duration:
            return int(round(c.duration / 1000))  # AV_TIME_BASE is microseconds
        return None

    # ---- frames --------------------------------------------------------------------------------
    def frames(self, sample_rate: float | None = DEFAULT_SAMPLE_RATE) -> Iterator[Frame]:
        """Sampled frames in presentation order (``sample_rate`` None or <= 0: every frame)."""
        for frame, av_frame in self._decoded(sample_rate):
            frame.image = av_frame.to_ndarray(format="rgb24")
            yield frame

    def _decoded(self, sample_rate: float | None) -> Iterator[tuple[Frame, Any]]:
        """(Frame without pixels, PyAV frame) for the sampled frames; checks limits and truncation."""
        import av

        if self._consumed:
            raise RuntimeError("VideoReader.frames() can be read once; open the video again.")
        self._consumed = True
        s = self.stream
        tb = s.time_base or Fraction(1, 1000)
        start = s.start_time or 0
        step = 1000.0 / sample_rate if sample_rate and sample_rate > 0 else 0.0
        next_ms = 0.0
        index, last_ms, sampled = -1, -1.0, 0
        max_ms = self.limits.max_duration_s * 1000
        try:
            for av_frame in self.container.decode(s):
                index += 1
                pts = av_frame.pts if av_frame.pts is not None else av_frame.dts
                ms = (
                    float((pts - start) * tb) * 1000
                    if pts is not None
                    else index * 1000.0 / (self.metadata.frame_rate or 25)
                )
                last_ms = max(last_ms, ms)
                if ms > max_ms:
                    raise VideoTooLarge(_too_long(self.path.name, ms / 1000, self.limits.max_duration_s))
                if step and ms < next_ms - 1.0:
                    continue
                if step:
                    next_ms = (math.floor((ms + 1.0) / step) + 1) * step
                sampled += 1
                yield Frame(index=index, timestamp_ms=max(0, int(round(ms))), image=_NO_PIXELS), av_frame
        except av.FFmpegError as exc:
            at = f" at {last_ms / 1000:.2f} s" if last_ms >= 0 else ""
            raise InvalidVideo(
                f"{self.path.name} could not be decoded{at}: the data is corrupt ({_ffmpeg_reason(exc)}). "
                "Check that the whole file was sent, or re-encode it."
            ) from None
        if index < 0:
            raise InvalidVideo(
                f"{self.path.name} contains no decodable video frame: it is corrupt, truncated or empty."
            )
        self._check_complete(index, last_ms)

    def _check_complete(self, last_index: int, last_ms: float) -> None:
        """A file that ends well before its header's duration was cut short: say so."""
        declared = self.metadata.duration_ms
        fps = self.metadata.frame_rate or 25.0
        end_ms = last_ms + 1000.0 / fps
        if not declared:
            self.metadata = replace(self.metadata, duration_ms=int(round(end_ms)))
            return
        from_stream = bool(self.stream.duration) or "DURATION" in (self.stream.metadata or {})
        tolerance = max(3000.0 / fps, 300.0) if from_stream else max(1000.0, 0.1 * declared)
        if declared - end_ms > tolerance:
            raise InvalidVideo(
                f"{self.path.name} is truncated or corrupt: its frames end at {end_ms / 1000:.2f} s but the "
                f"file declares {declared / 1000:.2f} s. Send the whole file."
            )

    # ---- context -------------------------------------------------------------------------------
    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


def probe(path: str | Path, limits: VideoLimits | None = None) -> VideoMetadata:
    """The container's metadata, with every limit checked, without decoding a frame."""
    with VideoReader(path, limits) as reader:
        return reader.metadata


def read_frames(
    path: str | Path, sample_rate: float | None = DEFAULT_SAMPLE_RATE, limits: VideoLimits | None = None
) -> Iterator[Frame]:
    """Sampled frames of a video file (see :meth:`VideoReader.frames`); closes the file at the end."""
    with VideoReader(path, limits) as reader:
        yield from reader.frames(sample_rate)


# ---- writing ------------------------------------------------------------------------------------
Transform = Callable[[Frame], np.ndarray]


def rewrite(
    src: str | Path,
    dst: str | Path,
    transform: Transform,
    *,
    limits: VideoLimits | None = None,
    progress: Callable[[int, int], None] | None = None,
    encoder_options: dict[str, str] | None = None,
) -> VideoMetadata:
    """Write ``dst``: every frame of ``src`` passed through ``transform``, in the same container
    format and codec family, with the same resolution, frame timestamps (so frame rate and duration)
    and the audio streams copied packet for packet. ``transform`` gets each :class:`Frame` (RGB) and
    returns an RGB array of the same shape. ``progress(done_ms, total_ms)`` is called per frame.
    Returns the metadata of ``src``. Subtitle and data streams are not copied.
    """
    import av

    dst = Path(dst)
    with VideoReader(src, limits) as reader:
        vin = reader.stream
        muxer = _muxer_for(reader.path, dst, reader.container.format.name)
        encoder = _encoder_for(vin.codec_context.name, muxer)
        total = reader.metadata.duration_ms
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
        try:
            out = av.open(str(tmp), mode="w", format=muxer)
        except av.FFmpegError as exc:
            raise InvalidVideo(f"Cannot write {dst}: {_ffmpeg_reason(exc)}") from None
        try:
            vout = _add_video_stream(out, vin, encoder, encoder_options)
            audio = {
                a.index: out.add_stream_from_template(a)
                for a in reader.container.streams.audio
                if _muxer_takes(out, a)
            }
            for frame, av_frame in _with_audio(reader, reader._decoded(None), audio):
                if frame is None:  # an audio packet to copy
                    packet = av_frame
                    packet.stream = audio[packet.stream.index]
                    out.mux(packet)
                    continue
                image = transform(replace(frame, image=av_frame.to_ndarray(format="rgb24")))
                _check_shape(image, vin)
                new = av.VideoFrame.from_ndarray(np.ascontiguousarray(image, dtype=np.uint8), format="rgb24")
                new.pts, new.time_base = av_frame.pts, av_frame.time_base
                for packet in vout.encode(new):
                    out.mux(packet)
                if progress is not None:
                    progress(frame.timestamp_ms, total)
            for packet in vout.encode(None):
                out.mux(packet)
        except av.FFmpegError as exc:
            out.close()
            tmp.unlink(missing_ok=True)
            raise InvalidVideo(f"Writing {dst.name} failed: {_ffmpeg_reason(exc)}") from None
        except BaseException:
            out.close()
            tmp.unlink(missing_ok=True)
            raise
        out.close()
        tmp.replace(dst)
        return reader.metadata


def _with_audio(
    reader: VideoReader, sampled: Iterator[tuple[Frame, Any]], audio: dict[int, Any]
) -> Iterator[tuple[Frame | None, Any]]:
    """Interleave the video frames with the audio packets as they come in the file.

    The reader demuxes video only; audio packets are read from a second demuxer on the same file
    and released up to each video frame's time, so the muxer receives both streams in time order.
    """
    import av

    if not audio:
        yield from sampled
        return
    container = av.open(str(reader.path), mode="r", metadata_errors="ignore")
    try:
        streams = [s for s in container.streams if s.index in audio]
        packets = (p for p in container.demux(*streams) if p.dts is not None)
        head = next(packets, None)
        for frame, av_frame in sampled:
            t = float(av_frame.time) if av_frame.time is not None else frame.timestamp_ms / 1000
            while head is not None and head.dts * head.time_base <= t:
                yield None, head
                head = next(packets, None)
            yield frame, av_frame
        while head is not None:
            yield None, head
            head = next(packets, None)
    except av.FFmpegError as exc:
        raise InvalidVideo(
            f"The audio of {reader.path.name} could not be read: {_ffmpeg_reason(exc)}"
        ) from None
    finally:
        container.close()


def _add_video_stream(out: Any, vin: Any, encoder: str, options: dict[str, str] | None) -> Any:
    rate = vin.average_rate or vin.guessed_rate or Fraction(25, 1)
    vout = out.add_stream(encoder, rate=rate)
    vout.width, vout.height = vin.codec_context.width, vin.codec_context.height
    formats = [f.name for f in (vout.codec_context.codec.video_formats or [])]
    src_fmt = vin.codec_context.pix_fmt
    vout.pix_fmt = src_fmt if src_fmt in formats else ("yuv420p" if "yuv420p" in formats else formats[0])
    vout.codec_context.time_base = vin.time_base
    vout.time_base = vin.time_base
    if vin.sample_aspect_ratio:
        vout.codec_context.sample_aspect_ratio = vin.sample_aspect_ratio
    if vin.codec_context.color_range:
        vout.codec_context.color_range = vin.codec_context.color_range
    if encoder not in ("libx264", "libx265", "libsvtav1") and vin.codec_context.bit_rate:
        vout.codec_context.bit_rate = int(vin.codec_context.bit_rate * 1.5)
    vout.codec_context.options = {**_ENCODER_OPTIONS.get(encoder, {}), **(options or {})}
    vout.thread_type = "AUTO"
    return vout


def _encoder_for(decoder: str, muxer: str) -> str:
    import av

    for name in _ENCODERS.get(decoder, ()):
        if name in av.codecs_available:
            try:
                av.codec.Codec(name, "w")
            except Exception:  # noqa: BLE001 - a decoder-only name: try the next
                continue
            return name
    raise InvalidVideo(
        f"facewarden cannot write {decoder} video (no encoder for it in this FFmpeg build). "
        f"Convert the video to H.264 first."
    )


def _muxer_for(src: Path, dst: Path, demuxer: str) -> str:
    for path in (dst, src):
        muxer = _MUXER_BY_SUFFIX.get(path.suffix.lower())
        if muxer:
            return muxer
    if demuxer in _MUXERS:
        return _MUXERS[demuxer]
    raise InvalidVideo(f"facewarden cannot write a {demuxer} container; use .mp4, .mkv or .webm.")


def _muxer_takes(out: Any, stream: Any) -> bool:
    """Whether the output container can carry this audio stream unchanged."""
    name = stream.codec_context.name if stream.codec_context else None
    return bool(name) and name in out.supported_codecs


def _check_shape(image: np.ndarray, vin: Any) -> None:
    want = (vin.codec_context.height, vin.codec_context.width, 3)
    if image.shape != want:
        raise ValueError(f"transform returned an array of shape {image.shape}; expected {want}")


# ---- helpers ------------------------------------------------------------------------------------
def _checked_size(path: Path, limits: VideoLimits) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InvalidVideo(f"No such file: {path}") from None
    except PermissionError:
        raise InvalidVideo(f"{path} cannot be read (permission denied).") from None
    if path.is_dir():
        raise InvalidVideo(f"{path} is a folder, not a video file.")
    if st.st_size == 0:
        raise InvalidVideo(f"{path.name} is empty (0 bytes). Send {_ACCEPTED_TEXT}.")
    if st.st_size > limits.max_bytes:
        raise VideoTooLarge(
            f"{path.name} is {_bytes_text(st.st_size)}; the limit is {_bytes_text(limits.max_bytes)}. "
            "Cut it into shorter parts."
        )
    return int(st.st_size)


def _too_long(name: str, seconds: float, limit_s: float) -> str:
    return (
        f"{name} lasts at least {_seconds_text(seconds)}; the limit is {_seconds_text(limit_s)}. "
        "Cut it into shorter parts."
    )


def _bytes_text(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def _seconds_text(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} hours"
    if s >= 120:
        return f"{s / 60:.1f} minutes"
    return f"{s:.1f} seconds"


def _codec_name(stream: Any) -> str | None:
    ctx = stream.codec_context
    name = ctx.name if ctx is not None else None
    return _FAMILY.get(name, name) if name else None


def _full_range(ctx: Any) -> bool:
    if ctx.pix_fmt and ctx.pix_fmt.startswith("yuvj"):
        return True
    return int(ctx.color_range or 0) == 2  # AVCOL_RANGE_JPEG


def _ffmpeg_reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).rstrip(".")
