"""Encoding of generated images (PNG, JPEG, WebP) and videos (MP4, GIF, animated WebP) to bytes.

Why these encoders: Pillow does images, GIF and animated WebP with no system libraries; MP4 (H.264) uses PyAV,
whose wheels bundle FFmpeg, so no system package is needed either. Without PyAV an mp4 job is rejected up front
with a clear message instead of failing after generation.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction
from typing import cast

from PIL import Image

CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "mp4": "video/mp4",
}


def mp4_codec() -> str | None:
    """The H.264 (or MPEG-4 part 2) encoder PyAV offers, or None when PyAV is missing."""
    try:
        import av
    except ImportError:
        return None
    available = av.codecs_available
    for name in ("libx264", "libopenh264", "mpeg4"):
        if name in available:
            return name
    return None


def encode_image(image: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG")
    elif fmt == "jpeg":
        image.convert("RGB").save(buf, format="JPEG", quality=quality)
    elif fmt == "webp":
        image.save(buf, format="WEBP", quality=quality)
    else:
        raise ValueError(f"{fmt} is not an image format")
    return buf.getvalue()


def encode_video(frames: Sequence[Image.Image], fmt: str, fps: int, quality: int = 90) -> bytes:
    if not frames:
        raise ValueError("no frames to encode")
    rgb = [f.convert("RGB") for f in frames]
    buf = io.BytesIO()
    duration = max(1, round(1000 / fps))
    if fmt == "gif":
        rgb[0].save(buf, format="GIF", save_all=True, append_images=rgb[1:], duration=duration, loop=0)
    elif fmt == "webp":
        rgb[0].save(
            buf, format="WEBP", save_all=True, append_images=rgb[1:], duration=duration, loop=0, quality=quality
        )
    elif fmt == "mp4":
        return _encode_mp4(rgb, fps, quality)
    else:
        raise ValueError(f"{fmt} is not a video format")
    return buf.getvalue()


def _encode_mp4(frames: Sequence[Image.Image], fps: int, quality: int) -> bytes:
    import av

    codec = mp4_codec()
    if codec is None:
        raise RuntimeError("PyAV has no H.264 or MPEG-4 encoder")
    width, height = frames[0].size
    # yuv420p needs even sizes
    width, height = width - width % 2, height - height % 2
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = cast("av.VideoStream", container.add_stream(codec, rate=Fraction(fps, 1)))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            # quality 100 -> crf 0 (lossless), 1 -> crf 51
            stream.options = {"crf": str(round((100 - quality) * 51 / 99))}
        for image in frames:
            if image.size != (width, height):
                image = image.crop((0, 0, width, height))
            frame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()
