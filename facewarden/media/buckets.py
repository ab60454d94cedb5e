"""S3 objects without a cloud: a bucket is a folder under the buckets directory, a key a file in it.

Rekognition reads stored videos (and, optionally, images) from ``S3Object {Bucket, Name}``.
facewarden resolves the same reference to ``BUCKETS_DIR/Bucket/Name`` — so an unmodified boto3
program works against files the service can read — and refuses, with
:class:`~facewarden.errors.InvalidS3Object`, anything that would leave the bucket: absolute names,
``..`` segments, a symbolic link pointing outside the bucket's folder, a bucket name that is not a
plain folder name. Uploads (``POST /v1/videos``) are written here too, streamed, under a byte limit,
and appear only once complete.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path

from ..errors import InvalidS3Object, VideoTooLarge

#: Rekognition's S3Bucket pattern (3-255 of these characters); facewarden also refuses "." and "..".
_BUCKET = re.compile(r"[0-9A-Za-z.\-_]{3,255}")
_MAX_NAME = 1024


def resolve(buckets_dir: Path, bucket: object, name: object, version: object = None) -> Path:
    """The file an ``S3Object`` names; raises InvalidS3Object saying what was wrong."""
    bucket_dir = bucket_path(buckets_dir, bucket)
    key = _checked_name(name)
    if version is not None:
        raise InvalidS3Object(
            "S3Object.Version is not supported: a facewarden bucket is a folder, which keeps one "
            "version of each object. Leave Version out."
        )
    path = bucket_dir.joinpath(*key.split("/"))
    real = Path(os.path.realpath(path))
    root = Path(os.path.realpath(bucket_dir))
    if root != real and root not in real.parents:
        raise InvalidS3Object(
            f"s3://{bucket}/{key} leads outside its bucket (a symbolic link to another folder); "
            "facewarden reads only files inside the bucket's folder."
        )
    if not real.is_file():
        raise InvalidS3Object(
            f"There is no object s3://{bucket}/{key}: put the file at {path} "
            "(a bucket is a folder in the buckets directory)."
        )
    return real


def bucket_path(buckets_dir: Path, bucket: object) -> Path:
    if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket) or set(bucket) == {"."}:
        raise InvalidS3Object(
            f"S3Object.Bucket {bucket!r} is not a bucket name: use 3 to 255 letters, digits, '.', '-' "
            "or '_' (it names a folder in the buckets directory)."
        )
    path = Path(buckets_dir) / bucket
    if not path.is_dir():
        raise InvalidS3Object(
            f"There is no bucket {bucket!r}: create the folder {path} (a bucket is a folder in the "
            "buckets directory, FACEWARDEN_BUCKETS_DIR)."
        )
    return path


def _checked_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
        raise InvalidS3Object(f"S3Object.Name must be a key of 1 to {_MAX_NAME} characters.")
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\x00" in name or any(p in ("", ".", "..") for p in parts):
        raise InvalidS3Object(
            f"S3Object.Name {name!r} is not a plain key inside the bucket: no leading '/', no '.' or "
            "'..' segments, no empty segments or backslashes."
        )
    return name


def destination(buckets_dir: Path, bucket: str, name: str, *, create: bool = True) -> Path:
    """Where a new object ``bucket/name`` is to be written (its folders made), refused with
    InvalidS3Object when it would leave the bucket."""
    root = Path(buckets_dir) / bucket
    if create and _BUCKET.fullmatch(bucket) and set(bucket) != {"."}:
        root.mkdir(parents=True, exist_ok=True)
    bucket_dir = bucket_path(buckets_dir, bucket)
    key = _checked_name(name)
    target = bucket_dir.joinpath(*key.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    real_parent = Path(os.path.realpath(target.parent))
    real_root = Path(os.path.realpath(bucket_dir))
    if real_parent != real_root and real_root not in real_parent.parents:
        raise InvalidS3Object(f"s3://{bucket}/{key} leads outside its bucket (a symbolic link).")
    return target


def store(
    buckets_dir: Path, bucket: str, name: str, chunks: Iterable[bytes], *, max_bytes: int, create: bool = True
) -> Path:
    """Write an upload to ``bucket/name`` as it streams in; more than ``max_bytes`` raises
    VideoTooLarge and leaves nothing behind. The object appears (atomically) only once complete."""
    target = destination(buckets_dir, bucket, name, create=create)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.upload")
    size = 0
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise VideoTooLarge(
                        f"The upload is larger than the limit of {max_bytes / 1e6:.1f} MB; cut the video into "
                        "shorter parts."
                    )
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
