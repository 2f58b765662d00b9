"""lint's findings as SARIF 2.1.0, the log format code-scanning UIs read.

One run, one tool (every rule in RULES, with its default level and the docs/lint.md
section as help), one result per finding at its file and line.

    log = sarif_log(findings)
    json.dumps(log)  # {"version": "2.1.0", "$schema": ..., "runs": [{"tool": ..., "results": [...]}]}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote as uri_quote

from sidecar import __version__
from sidecar.contract import SIDECAR_NAME
from sidecar.errors import quote
from sidecar.k8s.lint_rules import RULES, Finding

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
# The project has no published web address, so the log carries no informationUri or helpUri
# (SARIF wants absolute URIs there, and an invented one would lead nowhere). Each rule's
# `help` names its section of docs/lint.md instead, which code-scanning UIs show as text.
LINT_DOCS = "docs/lint.md"

_RULE_INDEX = {rule.id: index for index, rule in enumerate(RULES)}


def sarif_log(findings: Sequence[Finding]) -> dict[str, Any]:
    """The SARIF log of one lint run."""
    return {
        "version": SARIF_VERSION,
        "$schema": SARIF_SCHEMA,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": SIDECAR_NAME,
                        "version": __version__,
                        "rules": [
                            {
                                "id": rule.id,
                                "shortDescription": {"text": rule.summary},
                                "help": {"text": f"{rule.summary}. Example and fix: {LINT_DOCS}#{rule.id}"},
                                "defaultConfiguration": {"level": rule.severity},
                            }
                            for rule in RULES
                        ],
                    }
                },
                "results": [_result(finding) for finding in findings],
            }
        ],
    }


def _result(finding: Finding) -> dict[str, Any]:
    # The text line but for the file, line, severity and rule, which have fields of their own.
    container = f"container {quote(finding.container)}" if finding.container else ""
    text = ": ".join(part for part in (finding.obj, container, finding.message) if part)
    # The file as given, made a URI reference: "deploy/web.yaml" stays, "<stdin>" is escaped.
    location: dict[str, Any] = {"artifactLocation": {"uri": uri_quote(finding.source, safe="/")}}
    if finding.line is not None:
        location["region"] = {"startLine": finding.line}
    return {
        "ruleId": finding.rule,
        "ruleIndex": _RULE_INDEX[finding.rule],
        "level": finding.severity,  # "error" and "warning" are SARIF levels too
        "message": {"text": text},
        "locations": [{"physicalLocation": location}],
    }
