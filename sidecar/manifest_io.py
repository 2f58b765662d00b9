"""Reading manifests (a file or stdin) for config, `inject` and `lint`, and writing them back.

    manifest = read_manifest("deploy.yaml", sys.stdin.buffer)
    text = dump_documents(manifest.docs, as_json=manifest.is_json)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sidecar.error_context import one_line, quote
from sidecar.errors import ConfigError
from sidecar.manifests import load_documents

STDIN = "-"
STDIN_SOURCE = "<stdin>"
# Long lines stay whole: a folded READINESS_SIDECAR_CONFIG value is valid YAML but
# unreadable, and diffs of it are worse.
YAML_WIDTH = 1 << 20


@dataclass(frozen=True, slots=True)
class Manifest:
    source: str  # for messages: the file name, or <stdin>
    docs: list[Any]
    is_json: bool  # write the output back as JSON


def read_manifest(filename: str, stdin: BinaryIO) -> Manifest:
    """Every document of the file (or of stdin for "-"); ConfigError naming the source if unreadable."""
    if filename == STDIN:
        source = STDIN_SOURCE
        try:
            data = stdin.read()
        except OSError as err:
            raise ConfigError(source, "", "", f"cannot read: {err.strerror or one_line(str(err))}") from None
    else:
        source = filename if filename.isprintable() and filename else quote(filename)
        try:
            data = Path(filename).read_bytes()
        except OSError as err:
            raise ConfigError(source, "", "", f"cannot read: {err.strerror or one_line(str(err))}") from None
        except ValueError:  # a NUL in the path
            raise ConfigError(source, "", "", "cannot read: invalid file name") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(source, "", "", f"cannot read: not UTF-8 text (byte {err.start})") from None
    docs = load_documents(text, source)
    return Manifest(source, docs, _is_json(text))


def _is_json(text: str) -> bool:
    # The same test load_documents makes: JSON is what parses as JSON.
    stripped = text.lstrip()
    if stripped[:1] not in ("{", "["):
        return False
    try:
        json.loads(stripped)
    except (ValueError, RecursionError):
        return False
    return True


def dump_documents(docs: list[Any], *, as_json: bool) -> str:
    if as_json:
        return "".join(json.dumps(doc, indent=2, ensure_ascii=False) + "\n" for doc in docs)
    if not docs:
        return ""
    import yaml  # only writers pay for it: `check --probe` never loads yaml

    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, width=YAML_WIDTH)
