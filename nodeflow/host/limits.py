"""Size limits that a workflow's values are checked against before memory is allocated.

Widget ranges bound each value alone (a width of at most 8192, a batch of at most 64);
their product can still ask for tens of gigabytes. Nodes that create or resize images
and latents call :func:`check_pixels` first. A user with the memory for more raises the
limit with ``RunSettings.max_batch_pixels``.
"""

from __future__ import annotations

from nodeflow.model.context import RunSettings
from nodeflow.model.node import NodeError

MAX_BATCH_PIXELS = 1 << 26  # 64 Mpx per batch: e.g. 8192x8192 x 1, or 2048x2048 x 16


def check_pixels(field: str, width: int, height: int, batch: int, settings: RunSettings | None = None) -> None:
    """Refuse a batch of ``batch`` images of ``width`` x ``height`` pixels over the limit,
    naming ``field`` (the value to lower)."""
    limit = (settings.max_batch_pixels if settings is not None else None) or MAX_BATCH_PIXELS
    total = width * height * batch
    if total > limit:
        raise NodeError(
            f"{batch} x {width}x{height} is {total:,} pixels, more than the limit of "
            f"{limit:,} per batch (raise RunSettings.max_batch_pixels if you have the memory)",
            field=field,
        )
