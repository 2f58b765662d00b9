"""What text a probe can put on the wire: checked at load time, so a probe never
trips over an unsendable host, path or header in the middle of an attempt.

    is_header_name("X-Trace")   # True
    is_host("db local")         # False: whitespace
    is_host("[::1]")            # False: brackets are URL syntax; write ::1
    is_path("/health?x=\udc80")  # False: a lone surrogate cannot be encoded
"""

from __future__ import annotations

import re

# RFC 9110 token: what a header name may be (the kubelet validates the same).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Lone surrogates come from undecodable bytes in argv or env; no encoder takes them.
_SURROGATES = "\ud800-\udfff"
_BAD_HEADER_VALUE = re.compile(f"[\r\n\x00{_SURROGATES}]")
# A host ends up inside a URL: brackets, "@", "?" and "#" would make it another host (or
# none: "[x]" crashed the probe's URL parser), so they are refused with the rest.
_BAD_HOST = re.compile(rf"[\x00-\x20\x7f/\[\]@?#{_SURROGATES}]")
_BAD_PATH = re.compile(f"[\x00-\x1f\x7f{_SURROGATES}]")


def is_header_name(text: str) -> bool:
    return _HEADER_NAME.fullmatch(text) is not None


def is_header_value(text: str) -> bool:
    """No CR, LF or NUL: a value may not end the header early or smuggle another."""
    return _BAD_HEADER_VALUE.search(text) is None


def is_host(text: str) -> bool:
    return _BAD_HOST.search(text) is None


def is_path(text: str) -> bool:
    """Spaces are fine (they get percent-encoded, as the kubelet does); control characters not."""
    return _BAD_PATH.search(text) is None
