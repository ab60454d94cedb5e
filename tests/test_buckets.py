"""media/buckets.py: S3Object {Bucket, Name} -> a file inside the bucket's folder, and nothing else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facewarden.errors import InvalidS3Object, VideoTooLarge
from facewarden.media import buckets


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "buckets" / "cams" / "2024" / "01").mkdir(parents=True)
    (tmp_path / "buckets" / "cams" / "2024" / "01" / "door.mp4").write_bytes(b"video")
    (tmp_path / "secret.txt").write_text("not yours")
    return tmp_path / "buckets"


def test_a_key_resolves_to_its_file(root: Path) -> None:
    assert buckets.resolve(root, "cams", "2024/01/door.mp4") == (root / "cams/2024/01/door.mp4").resolve()


@pytest.mark.parametrize(
    ("bucket", "name", "says"),
    [
        ("cams", "../secret.txt", "not a plain key"),
        ("cams", "2024/../../secret.txt", "not a plain key"),
        ("cams", "/etc/passwd", "not a plain key"),
        ("cams", "2024//01/door.mp4", "not a plain key"),
        ("cams", "2024\\01\\door.mp4", "not a plain key"),
        ("cams", "", "1 to 1024"),
        ("cams", None, "1 to 1024"),
        ("..", "secret.txt", "not a bucket name"),
        ("...", "secret.txt", "not a bucket name"),
        ("a/b", "x", "not a bucket name"),
        ("no-such-bucket", "x.mp4", "no bucket"),
        ("cams", "2024/01/missing.mp4", "no object"),
        ("cams", "2024", "no object"),  # a folder is not an object
    ],
)
def test_anything_outside_the_bucket_is_refused(root: Path, bucket, name, says) -> None:
    with pytest.raises(InvalidS3Object, match=says) as err:
        buckets.resolve(root, bucket, name)
    assert err.value.aws_code == "InvalidS3ObjectException"


def test_symbolic_links_out_of_the_bucket_are_refused(root: Path) -> None:
    os.symlink(root.parent / "secret.txt", root / "cams" / "link.mp4")
    os.symlink(root.parent, root / "cams" / "up")
    for name in ("link.mp4", "up/secret.txt"):
        with pytest.raises(InvalidS3Object, match="outside its bucket"):
            buckets.resolve(root, "cams", name)
    os.symlink(root / "cams" / "2024" / "01" / "door.mp4", root / "cams" / "latest.mp4")  # inside: fine
    assert buckets.resolve(root, "cams", "latest.mp4").name == "door.mp4"


def test_version_is_refused_clearly(root: Path) -> None:
    with pytest.raises(InvalidS3Object, match="Version"):
        buckets.resolve(root, "cams", "2024/01/door.mp4", "v1")


def test_uploads_stream_in_under_a_limit_and_appear_whole(root: Path) -> None:
    path = buckets.store(root, "uploads", "a/clip.mp4", [b"x" * 10, b"y" * 10], max_bytes=20)
    assert path.read_bytes() == b"x" * 10 + b"y" * 10
    assert buckets.resolve(root, "uploads", "a/clip.mp4") == path.resolve()
    with pytest.raises(VideoTooLarge):
        buckets.store(root, "uploads", "a/big.mp4", [b"x" * 15, b"y" * 15], max_bytes=20)
    assert sorted(p.name for p in (root / "uploads" / "a").iterdir()) == ["clip.mp4"]
    with pytest.raises(InvalidS3Object):
        buckets.store(root, "uploads", "../escape.mp4", [b"x"], max_bytes=20)
