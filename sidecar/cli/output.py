"""`-o json` and `-o yaml`: one document, written the same way by every command that has -o.

    print(structured({"ready": True}, "yaml"))  # ready: true

YAML is imported only when asked for, so `check` stays light.
"""

from __future__ import annotations

import json
from typing import Any


def structured(doc: Any, output: str) -> str:
    """`doc` as JSON (indented) or YAML (block style, keys in their order), without a final newline."""
    if output == "yaml":
        import yaml

        text: str = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)
        return text.rstrip("\n")
    return json.dumps(doc, indent=2, ensure_ascii=False)
