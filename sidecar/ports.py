"""A TCP port number from text, as every port setting takes it: `run`'s flags and env vars, and
the port annotations inject and the webhook read (a shared leaf, so both stacks parse alike).

    parse_port("8550"), parse_port("off", allow_off=True)  # 8550, None
"""

from __future__ import annotations

OFF_WORDS = ("off", "none", "disabled")


def parse_port(text: str, *, allow_off: bool = False) -> int | None:
    """0-65535 (0 picks a free port); None for "off" when `allow_off`. ValueError with a short reason."""
    if allow_off and text.strip().lower() in OFF_WORDS:
        return None
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"port {text!r} is not a number" + (" or 'off'" if allow_off else "")) from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range 0-65535 (0 picks a free port)")
    return port
