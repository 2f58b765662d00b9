"""`readiness-sidecar inject` and `lint`: manifests in (a file or stdin), findings and manifests out.

Nothing reaches stdout until the whole input is processed, so a mistake never leaves
half a manifest behind.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys

from sidecar.cli.output import structured
from sidecar.cli.parser import inject_options
from sidecar.config.documents import dump_documents, read_manifest, require_objects
from sidecar.k8s.inject import check_pod_settings, default_image_used, inject_documents, probe_mode_lines
from sidecar.k8s.lint import lint_documents
from sidecar.k8s.lint_sarif import sarif_log
from sidecar.k8s.options import DEFAULT_IMAGE_WARNING

# What git prints after a last line that has no newline, so a diff of such a file still applies.
NO_NEWLINE = "\n\\ No newline at end of file\n"


def inject_command(args: argparse.Namespace) -> int:
    """Read, lint (refuse on errors unless --force), inject, then write all at once (or the diff, with --diff)."""
    options = inject_options(args)
    # Round trip: comments, key order and quoting survive, so inject's diff is only what it changed.
    manifest = read_manifest(args.filename, sys.stdin.buffer, round_trip=True)
    require_objects(manifest)
    check_pod_settings(manifest.docs, manifest.source, options)
    findings = lint_documents(manifest.docs, manifest.source, exec_probes=options.exec_probes)
    for finding in findings:
        print(finding, file=sys.stderr)
    errors = sum(finding.is_error for finding in findings)
    if errors and not args.force:
        print(f"inject: refusing: {errors} lint error(s) above; --force injects anyway", file=sys.stderr)
        return 1
    injected, warnings = inject_documents(manifest.docs, manifest.source, options)
    # Only now, with every document injected, does anything reach stdout.
    text = dump_documents(injected, as_json=manifest.is_json, layout=manifest.layout, originals=manifest.docs)
    for line in probe_mode_lines(manifest.docs, manifest.source, options):
        print(line, file=sys.stderr)
    if default_image_used(manifest.docs, injected, manifest.source, options):
        print(f"warning: {DEFAULT_IMAGE_WARNING}", file=sys.stderr)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(unified_diff(manifest.text, text, manifest.source) if args.diff else text)
    return 0


def unified_diff(before: str, after: str, name: str) -> str:
    """`before` -> `after` as git prints it (a/ and b/ prefixes, the no-newline marker); "" if equal."""
    path = name.lstrip("/")  # as git names an absolute path: a/tmp/x.yaml
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{path}", f"b/{path}"
    )
    return "".join(line if line.endswith("\n") else line + NO_NEWLINE for line in lines)


def lint_command(args: argparse.Namespace) -> int:
    """Findings on stdout (text, JSON, YAML or SARIF), the count on stderr; 1 if any reaches --fail-on."""
    manifest = read_manifest(args.filename, sys.stdin.buffer, round_trip=True)
    require_objects(manifest)
    findings = lint_documents(manifest.docs, manifest.source, exec_probes=args.exec_probes)
    errors = sum(finding.is_error for finding in findings)
    if args.output == "sarif":
        print(json.dumps(sarif_log(findings), indent=2, ensure_ascii=False))
    elif args.output in ("json", "yaml"):
        doc = {
            "findings": [finding.to_json() for finding in findings],
            "errors": errors,
            "warnings": len(findings) - errors,
        }
        print(structured(doc, args.output))
    else:
        for finding in findings:
            print(finding)
        if findings:
            print(f"{errors} error(s), {len(findings) - errors} warning(s)", file=sys.stderr)
    return 1 if any(finding.at_least(args.fail_on) for finding in findings) else 0
