"""Ranked-list pictures: one image strip per query (query thumbnail, then its top-k gallery thumbnails).

Borders: green = good match, red = wrong, grey = junk (see :mod:`video_attn.retrieval.query`), blue around
the query. Each item is shown by ONE thumbnail: the image itself for a tracklet's first-frame path, the
middle frame for a video file, the first image for a frame folder. A missing or unreadable file becomes a
dark placeholder tile and is logged (never an exception in the middle of a batch of pictures).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .features import FeatureSet
from .query import GOOD, JUNK, WRONG, RankedList

__all__ = ["load_thumbnail", "render_ranked_list", "save_ranked_lists", "BORDER_COLORS"]

_LOGGER = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
BORDER_COLORS = {GOOD: (0, 170, 0), WRONG: (220, 0, 0), JUNK: (150, 150, 150), None: (255, 255, 255)}
QUERY_COLOR = (0, 90, 255)


def _read_rgb(path: str) -> Image.Image:
    if os.path.isdir(path):
        images = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not images:
            raise OSError(f"{path}: folder holds no images")
        path = os.path.join(path, images[0])
    if path.lower().endswith(IMAGE_EXTENSIONS):
        with Image.open(path) as img:
            return img.convert("RGB")
    from video_attn.data.decoders import open_video

    with open_video(path) as reader:
        frame = reader.get_frames([len(reader) // 2])[0]
    return Image.fromarray(np.ascontiguousarray(frame))


def load_thumbnail(path: str | None, size: tuple[int, int], root: str | None = None) -> Image.Image | None:
    """RGB thumbnail (width, height) = ``size`` of an image / video / frame folder; None if unreadable."""
    if not path:
        return None
    full = path if root is None or os.path.isabs(path) else os.path.join(root, path)
    try:
        return _read_rgb(full).resize(size, Image.Resampling.BILINEAR)
    except Exception as err:  # any decoder failure: the picture still gets drawn, with a placeholder
        _LOGGER.warning("cannot read %s for the ranked-list picture: %s", full, err)
        return None


def render_ranked_list(
    query_path: str | None,
    gallery_paths: Sequence[str | None],
    labels: Sequence[int] | None = None,
    distances: Sequence[float] | None = None,
    thumb_size: tuple[int, int] = (64, 128),
    border: int = 4,
    root: str | None = None,
) -> Image.Image:
    """The strip for one query: query tile, a gap, then one tile per gallery hit with its mark's border.

    ``thumb_size`` is (width, height) of the image inside the border (64 x 128: a person crop).
    """
    tile_w, tile_h = thumb_size[0] + 2 * border, thumb_size[1] + 2 * border
    caption_h = 14
    gap = tile_w // 3
    num = len(gallery_paths)
    canvas = Image.new("RGB", (tile_w * (num + 1) + gap, tile_h + caption_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)

    def paste(x: int, path: str | None, color: tuple[int, int, int], caption: str) -> None:
        draw.rectangle([x, 0, x + tile_w - 1, tile_h - 1], fill=color)
        thumb = load_thumbnail(path, thumb_size, root)
        if thumb is None:
            thumb = Image.new("RGB", thumb_size, (40, 40, 40))
        canvas.paste(thumb, (x + border, border))
        draw.text((x + 2, tile_h + 1), caption, fill=(0, 0, 0))

    paste(0, query_path, QUERY_COLOR, "query")
    for i, path in enumerate(gallery_paths):
        mark = None if labels is None else int(labels[i])
        caption = f"{i + 1}" if distances is None else f"{i + 1}: {float(distances[i]):.3f}"
        paste(tile_w * (i + 1) + gap, path, BORDER_COLORS[mark], caption)
    return canvas


def save_ranked_lists(
    ranked_lists: Sequence[RankedList],
    queries: FeatureSet,
    gallery: FeatureSet,
    out_dir: str | os.PathLike,
    num_vis: int | None = None,
    root: str | None = None,
    thumb_size: tuple[int, int] = (64, 128),
) -> list[str]:
    """Write ``query_<row>.jpg`` strips for the first ``num_vis`` ranked lists; returns the file paths."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    files = []
    for ranked in list(ranked_lists)[:num_vis]:
        q_path = None if queries.paths is None else str(queries.paths[ranked.query])
        if gallery.paths is None:
            g_paths: list[str | None] = [None] * len(ranked.indices)
        else:
            g_paths = [str(p) for p in gallery.paths[ranked.indices]]
        image = render_ranked_list(q_path, g_paths, ranked.labels, ranked.distances, thumb_size, root=root)
        out_file = os.path.join(out_dir, f"query_{ranked.query:06d}.jpg")
        image.save(out_file, quality=90)
        files.append(out_file)
    return files
