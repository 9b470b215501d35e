"""Console log lines and progress bars share stderr: a line logged under an open bar gets its own line."""

from __future__ import annotations

import io
import logging
import sys

from tqdm import tqdm

from video_attn.engine.logger import close_logging, setup_logging


def test_log_line_under_a_progress_bar_does_not_share_the_bar_line(monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    setup_logging(None)
    try:
        bar = tqdm(total=3, file=stderr, desc="epoch 1/1")
        bar.update(1)
        logging.getLogger("video_attn.test").info("step line")
        bar.update(1)
        bar.close()
    finally:
        close_logging()
    text = stderr.getvalue()
    (segment,) = [s for s in text.split("\r") if "step line" in s]
    assert segment.endswith("INFO video_attn.test: step line\n") and "epoch 1/1" not in segment
    assert text.index("step line") < text.rindex("2/3")  # the bar is drawn again below the line
