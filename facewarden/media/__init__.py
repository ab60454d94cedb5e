"""Bytes -> pixels: images (formats, EXIF orientation, size limits), with clear errors for bad files."""
