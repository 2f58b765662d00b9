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
# Where docs/lint.md is read on the web; each rule's helpUri is its section there.
# The project has no published URL yet: this is the one place to change when it does.
PROJECT_URL = "https://github.com/readiness-sidecar/readiness-sidecar"
LINT_DOCS_URL = f"{PROJECT_URL}/blob/main/docs/lint.md"

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
                        "informationUri": PROJECT_URL,
                        "rules": [
                            {
                                "id": rule.id,
                                "shortDescription": {"text": rule.summary},
                                "helpUri": f"{LINT_DOCS_URL}#{rule.id}",
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
