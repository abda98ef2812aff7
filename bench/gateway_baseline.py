"""The baseline of bench.gateway: a bare Starlette handler that reads a request body and discards it.

`python bench/gateway_baseline.py PORT` serves it with uvicorn on uvloop (h11), as `python -m gateway` does.
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def discard(request: Request) -> Response:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
    return JSONResponse({"received": received}, status_code=201)


async def ready(request: Request) -> Response:
    return JSONResponse({})


app = Starlette(routes=[Route("/upload", discard, methods=["POST"]), Route("/openapi.json", ready)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="h11", log_level="warning",
                access_log=False)
