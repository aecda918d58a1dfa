"""Make the example shipped in examples/: a synthetic photo-like image and coarse masks of its objects.

The image is drawn here (no third-party data): a shaded disc and a rounded box on a textured
background. The coarse masks are what a weak model would give: the objects' true shapes,
shifted, blocky and with a bite taken out, so that refinement has something to fix.

    python examples/make_example.py   # rewrites examples/images and examples/masks
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
SIZE = (640, 480)  # width, height


def draw_image(rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """The RGB image and the true mask of each object."""
    w, h = SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack([90 + 40 * xx / w, 120 + 30 * yy / h, 70 + 20 * np.sin(xx / 23.0)], -1)
    background += rng.normal(0, 6, background.shape)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))

    disc = Image.new("L", SIZE, 0)
    ImageDraw.Draw(disc).ellipse((110, 130, 300, 320), fill=255)
    box = Image.new("L", SIZE, 0)
    ImageDraw.Draw(box).rounded_rectangle((360, 170, 560, 400), radius=30, fill=255)

    shade = np.clip(255 - np.hypot(xx - 180, yy - 190) * 1.4, 0, 255)
    red = np.stack([shade, shade * 0.25, shade * 0.2], -1).astype(np.uint8)
    blue = np.stack([40 + 0 * xx, 60 + 0 * xx, 200 - 60 * (yy - 170) / 230], -1).astype(np.uint8)
    image.paste(Image.fromarray(red), mask=disc.filter(ImageFilter.GaussianBlur(1)))
    image.paste(Image.fromarray(np.clip(blue, 0, 255).astype(np.uint8)), mask=box)
    return np.asarray(image), [np.asarray(disc) > 127, np.asarray(box) > 127]


def coarsen(mask: np.ndarray, shift: tuple[int, int], block: int, bite: tuple[int, int, int]) -> np.ndarray:
    """A pseudo-label-like version of `mask`: shifted, downsampled to blocks, with a bite removed."""
    coarse = np.roll(mask, shift, axis=(0, 1))
    h, w = coarse.shape
    small = Image.fromarray(coarse.astype(np.uint8) * 255).resize((w // block, h // block), Image.BILINEAR)
    coarse = np.asarray(small.resize((w, h), Image.NEAREST)) > 127
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx, r = bite
    return coarse & (np.hypot(yy - cy, xx - cx) > r)


def main() -> None:
    rng = np.random.default_rng(0)
    image, objects = draw_image(rng)
    (HERE / "images").mkdir(exist_ok=True)
    Image.fromarray(image).save(HERE / "images" / "example.jpg", quality=92)
    out = HERE / "masks" / "example"
    out.mkdir(parents=True, exist_ok=True)
    coarse = [coarsen(objects[0], (8, -10), 16, (150, 280, 28)), coarsen(objects[1], (-6, 12), 20, (390, 380, 40))]
    for index, mask in enumerate(coarse, start=1):
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / f"object_{index}.png")


if __name__ == "__main__":
    main()
