"""A bare server process for the crash test: `python tests/points/serve_points.py` (settings from ONESTOP_*)."""

from __future__ import annotations

import uvloop

from server import app
from server.config import Settings

if __name__ == "__main__":
    uvloop.run(app.serve(Settings()))
