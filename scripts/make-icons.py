#!/usr/bin/env python3
"""Draws the app's icons (web/icons/*.png) from code, as web/favicon.svg draws them: a teal
rounded square with a white cross. Deterministic: running it again writes the same bytes.
    python3 scripts/make-icons.py
Writes icon-192.png and icon-512.png (purpose "any": transparent corners) and
icon-maskable-512.png (purpose "maskable": full bleed, the cross inside the central 80 % circle
that every platform's mask keeps)."""
import struct
import zlib
from pathlib import Path

TEAL = (0x0F, 0x76, 0x6E)
WHITE = (0xFF, 0xFF, 0xFF)


def coverage(inside, x, y, samples=4):
    """The share of pixel (x, y) inside a shape, from samples × samples points."""
    hits = 0
    for i in range(samples):
        for j in range(samples):
            if inside(x + (i + 0.5) / samples, y + (j + 0.5) / samples):
                hits += 1
    return hits / (samples * samples)


def icon(size, maskable):
    radius = 0 if maskable else size * 0.18
    arm = size * (0.34 if not maskable else 0.26)  # half the cross's length
    bar = size * (0.11 if not maskable else 0.085)  # half the cross's width
    c = size / 2

    def in_square(x, y):
        if radius == 0:
            return True
        dx = max(radius - x, 0, x - (size - radius))
        dy = max(radius - y, 0, y - (size - radius))
        return dx * dx + dy * dy <= radius * radius

    def in_cross(x, y):
        dx, dy = abs(x - c), abs(y - c)
        return (dx <= bar and dy <= arm) or (dy <= bar and dx <= arm)

    rows = []
    for y in range(size):
        row = bytearray([0])  # filter: none
        for x in range(size):
            a = coverage(in_square, x, y)
            w = coverage(in_cross, x, y)
            rgb = [round(t * (1 - w) + v * w) for t, v in zip(TEAL, WHITE)]
            row += bytes(rgb + [round(255 * a)])
        rows.append(bytes(row))
    return png(size, b"".join(rows))


def png(size, raw):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


out = Path(__file__).resolve().parent.parent / "web" / "icons"
out.mkdir(exist_ok=True)
for name, size, maskable in [("icon-192.png", 192, False), ("icon-512.png", 512, False), ("icon-maskable-512.png", 512, True)]:
    (out / name).write_bytes(icon(size, maskable))
    print(out / name)
