"""A merchandiser's contact sheet: products (rows) rendered in styles (columns)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from style.transfer import MagentaStyleTransfer


def gallery(
    transfer: MagentaStyleTransfer,
    products: Sequence[tuple[str, Image.Image]],
    styles: Sequence[tuple[str, Image.Image]],
    tile: int = 160,
    strength: float = 1.0,
) -> Image.Image:
    """Grid with the style images on top, the products on the left, each render in between."""
    pad, label = 4, 14
    cols, rows = len(styles) + 1, len(products) + 1
    sheet = Image.new("RGB", (cols * (tile + pad) + pad, rows * (tile + label + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    style_vecs = transfer.encoder.embed([img for _, img in styles])

    def put(r: int, c: int, img: Image.Image, text: str) -> None:
        x, y = pad + c * (tile + pad), pad + r * (tile + label + pad)
        thumb = img.convert("RGB").copy()
        thumb.thumbnail((tile, tile), Image.Resampling.LANCZOS)
        sheet.paste(thumb, (x, y + label))
        draw.text((x + 2, y + 1), text[:24], fill="black")

    for c, (name, img) in enumerate(styles, start=1):
        put(0, c, img, name)
    for r, (name, img) in enumerate(products, start=1):
        put(r, 0, img, name)
        for c in range(len(styles)):
            put(r, c + 1, transfer.render(img, style_vecs[c], strength=strength, size=tile * 2), "")
    return sheet
