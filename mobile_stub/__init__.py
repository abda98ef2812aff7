"""A scripted smartphone app with a software My Number Card (library: MobileApp; CLI: python -m mobile_stub)."""

from mobile_stub.app import CHILD_ALLOWANCE, GatewayCallError, MobileApp, child_allowance_form
from mobile_stub.photos import gps_of, jpeg_with_gps

__all__ = ["CHILD_ALLOWANCE", "GatewayCallError", "MobileApp", "child_allowance_form", "gps_of", "jpeg_with_gps"]
