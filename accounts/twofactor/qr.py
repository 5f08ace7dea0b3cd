"""The provisioning URI as an inline SVG QR code, drawn on the server (no external service, no script)."""

import base64

import qrcode
from qrcode.image.svg import SvgPathImage


def qr_data_uri(text: str) -> str:
    svg = qrcode.make(text, image_factory=SvgPathImage, box_size=10, border=2).to_string()
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")
