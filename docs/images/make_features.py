"""Draws docs/images/features.png: the README's creative-option calls, each on a 300×200 crop of the
bundled sample photo, labelled with the call that made it (default model, seed 0, CPU).

Run from the repository root: ``python docs/images/make_features.py``.
"""
import pathlib

import numpy as np
from PIL import Image, ImageDraw

import fastdream

CALLS = [  # (label, keyword arguments): the calls of the README's "Creative options" block
    ("input", None),
    ("guide=coffee", dict(guide="coffee")),
    ("classes=['tabby', 285]", dict(classes=["tabby", 285])),
    ("layers='_blocks.9', channel_mode='strongest'", dict(layers="_blocks.9", channel_mode="strongest", channel_count=8)),
    ("smoothing=1.5, lap_normalize=4", dict(smoothing=1.5, lap_normalize=4)),
    ("keep_colors=True", dict(keep_colors=True)),
    ("default options", dict()),
    ("None, size=(200, 300) (noise)", dict(size=(200, 300))),
]


def main() -> None:
    photo = fastdream.sample_image()  # uint8 [3, 300, 451]
    left = (photo.shape[-1] - 300) // 2
    img = photo[:, 50:250, left:left + 300]
    coffee = fastdream.sample_image("coffee")
    tiles = []
    for label, kwargs in CALLS:
        if kwargs is None:
            out = img
        else:
            kwargs = {k: (coffee if v == "coffee" else v) for k, v in kwargs.items()}
            source = None if "size" in kwargs else img
            out = fastdream.dream(source, seed=0, **kwargs)
        if out.is_floating_point():  # the noise dream returns float in [0, 1]
            out = (out * 255).round().clamp(0, 255).byte()
        tile = Image.new("RGB", (300, 222), "white")
        tile.paste(Image.fromarray(out.permute(1, 2, 0).numpy()), (0, 0))
        ImageDraw.Draw(tile).text((4, 206), label, fill="black")
        tiles.append(tile)
    sheet = Image.new("RGB", (4 * 304, 2 * 222), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % 4) * 304, (i // 4) * 222))
    sheet.save(pathlib.Path(__file__).with_name("features.png"), optimize=True)


if __name__ == "__main__":
    main()
