"""Responses shared by the routers."""

from __future__ import annotations

from fastapi.responses import FileResponse


class BlobResponse(FileResponse):
    """A stored file sent in 1 MiB reads: Starlette's default 64 KiB costs a thread hand-off per
    64 KiB, which held downloads to a fraction of a static file server's rate."""

    chunk_size = 1 << 20
