"""What text a probe can put on the wire: checked at load time, so a probe never
trips over an unsendable host, path or header in the middle of an attempt.

    is_header_name("X-Trace")   # True
    is_host("db local")         # False: whitespace
    is_host("[::1]")            # False: brackets are URL syntax; write ::1
    host_problem("a" * 64)      # "its label "aaa..." is longer than 63 characters"
    is_path("/health?x=\udc80")  # False: a lone surrogate cannot be encoded
"""

from __future__ import annotations

import ipaddress
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


# DNS's limits (RFC 1035 2.3.4): a label of 63 octets, a name of 255 octets on the wire,
# which is 253 characters written out. The resolver refuses more: an attempt would raise
# instead of probing (the idna codec: "label empty or too long").
MAX_LABEL_CHARS = 63
MAX_HOST_CHARS = 253


def is_host(text: str) -> bool:
    """No character that would change the URL it ends up in (see host_problem for DNS's rules)."""
    return _BAD_HOST.search(text) is None


def host_problem(text: str) -> str | None:
    """Why the resolver could never take `text` as a host name, or None: a label over 63
    characters, a name over 253, an empty label, or one the IDNA codec (what getaddrinfo's
    callers encode with) refuses. An IP literal is fine. Characters is_host refuses are the
    caller's to report first."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return None
    try:
        encoded = text.encode("idna").decode("ascii")
    except UnicodeError:
        encoded = None
    name = (encoded or text).removesuffix(".")  # one trailing dot: the root, fully qualified
    for label in name.split("."):
        if not label:
            return "has an empty label (two dots in a row, or a dot first)"
        if len(label) > MAX_LABEL_CHARS:
            return f"has a label longer than {MAX_LABEL_CHARS} characters ({len(label)})"
    if encoded is None:
        return "is not a name IDNA can encode"
    if len(name) > MAX_HOST_CHARS:
        return f"is longer than {MAX_HOST_CHARS} characters ({len(name)})"
    return None


def is_path(text: str) -> bool:
    """Spaces are fine (they get percent-encoded, as the kubelet does); control characters not."""
    return _BAD_PATH.search(text) is None
