"""Reading request bodies within a size limit, whatever the client claims in Content-Length."""

from __future__ import annotations

from fastapi import Request

from shared.problems import Problem


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or a 413 problem as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> Problem:
    return Problem(
        413, "payload-too-large", "Request body too large", f"the body must be at most {limit} bytes"
    )


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
