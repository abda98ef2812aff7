"""Photos as a phone takes them: real JPEGs that carry EXIF, GPS included (the server must strip it)."""

from __future__ import annotations

import io
import os

from PIL import Image, ExifTags

# 東京都千代田区 (the demo residents' city hall), as a phone's GPS would record it.
CHIYODA = ((35.0, 41.0, 39.0), (139.0, 45.0, 13.0))


def jpeg_with_gps(width: int = 640, height: int = 480, *, noise: bool = False,
                  location: tuple[tuple[float, float, float], tuple[float, float, float]] = CHIYODA) -> bytes:
    """A real JPEG with camera EXIF and a GPS position. `noise=True` makes it large (hard to compress)."""
    if noise:
        image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    else:
        image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "OnestopPhone"
    exif[ExifTags.Base.Model] = "Stub 1"
    exif[ExifTags.Base.DateTime] = "2026:12:03 10:00:00"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = location[0]
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = location[1]
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif, quality=95 if noise else 85)
    return buffer.getvalue()


def jpeg_of_size(target_bytes: int) -> bytes:
    """A GPS-tagged noise JPEG of at least `target_bytes` (e.g. 8 MiB for the benchmark)."""
    side = 512
    while True:
        data = jpeg_with_gps(side, side, noise=True)
        if len(data) >= target_bytes:
            return data
        # Noise at quality 95 is ~1.9 bytes per pixel; grow the side towards the target.
        side = int(side * max(1.1, (target_bytes / len(data)) ** 0.5 * 1.02))


def gps_of(jpeg: bytes) -> dict:
    """The GPS IFD of a JPEG ({} when there is none)."""
    with Image.open(io.BytesIO(jpeg)) as image:
        return dict(image.getexif().get_ifd(ExifTags.IFD.GPSInfo))
