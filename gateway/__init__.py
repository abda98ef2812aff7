"""Starlette gateway for smartphone apps: `create_app(settings)`; `python -m gateway` serves it."""

from gateway.app import create_app

__all__ = ["create_app"]
