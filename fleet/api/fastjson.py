"""A JSON response rendered by orjson and returned by routes as is.

A route that returns a plain dict makes FastAPI validate it against the
return annotation, walk it with ``jsonable_encoder`` and encode it again:
about a tenth of a lease request's CPU. The service views are already
JSON-ready (strings, numbers, lists, dicts), so the hot routes hand back this
response instead; the bytes on the wire are the same compact JSON.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class FastJSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
