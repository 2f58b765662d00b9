"""Manifests as text: multi-document YAML or JSON in (a file, stdin, an env var), and back out.

Shared by config loading, `inject` and `lint`. Whether a text is JSON is decided once,
here, so `inject` writes JSON back exactly when it read JSON.

    manifest = read_manifest("deploy.yaml", sys.stdin.buffer)
    text = dump_documents(manifest.docs, as_json=manifest.is_json)
    manifest = read_manifest("deploy.yaml", sys.stdin.buffer, round_trip=True)
    position(manifest.docs[0]["spec"], "replicas")  # (7, 3): 1-based line and column
    text = dump_documents(manifest.docs, as_json=manifest.is_json, layout=manifest.layout)

`round_trip=True` (inject, lint) loads YAML with ruamel.yaml: the documents are
CommentedMap/CommentedSeq (dict/list subclasses, so every reader works unchanged),
remember each key's line, and dump back with comments, key order and quoting kept.
Everything else (`check`, `run`'s config) keeps PyYAML's C loader, and never imports ruamel.
    docs = load_documents(os.environ["READINESS_SIDECAR_CONFIG"], "READINESS_SIDECAR_CONFIG")
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sidecar.errors import ConfigError, one_line, quote, type_words

STDIN = "-"
STDIN_SOURCE = "<stdin>"
# Long lines stay whole: a folded READINESS_SIDECAR_CONFIG value is valid YAML but
# unreadable, and diffs of it are worse.
YAML_WIDTH = 1 << 20


@dataclass(frozen=True, slots=True)
class Indent:
    """How one YAML document was indented, as ruamel.yaml's indent() takes it."""

    mapping: int = 2
    sequence: int = 2  # the indent of a list item's content
    offset: int = 0  # where the "- " dash sits, relative to the parent key


@dataclass(frozen=True, slots=True)
class Layout:
    """How a round-trip YAML text was laid out, so it is written back the same way."""

    # Per document, in order: files concatenated from several tools mix indents.
    indents: tuple[Indent, ...] = ()
    # The comment lines and the `---` before the first document: ruamel.yaml drops
    # comments above a first `---`, and writes no `---` of its own there.
    header: str = ""
    # The `---` / `...` lines after the last document, which ruamel.yaml drops too.
    footer: str = ""
    newline: str = "\n"  # "\r\n" for a text written on Windows
    # The text cut at its `---` lines, each piece as written, and which piece holds each
    # document; () when the cut is not certain (a marker line with content, an empty document).
    pieces: tuple[str, ...] = ()
    piece_of: tuple[int, ...] = ()

    def indent(self, index: int) -> Indent:
        return self.indents[index] if index < len(self.indents) else Indent()


@dataclass(frozen=True, slots=True)
class Manifest:
    source: str  # for messages: the file name, or <stdin>
    docs: list[Any]
    is_json: bool  # write the output back as JSON
    text: str = ""  # the text as read (for `inject --diff`)
    layout: Layout | None = None  # set for round-trip YAML


def read_manifest(filename: str, stdin: BinaryIO, *, round_trip: bool = False) -> Manifest:
    """Every document of the file (or of stdin for "-"); ConfigError naming the source if unreadable.

    round_trip: YAML is loaded with ruamel.yaml, keeping comments, order, quoting and positions."""
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
    if round_trip:
        json_docs = _load_json(text)
        if json_docs is not None:
            return Manifest(source, json_docs, True, text)
        # The fast loader first: it decides what is valid YAML, as for `check` and the rest,
        # since ruamel.yaml takes some text libyaml refuses (an anchor with no name: `&#...`).
        _load_yaml(text, source)
        docs = _load_round_trip(text, source)
        return Manifest(source, docs, False, text, _guess_layout(text, docs))
    docs, is_json = _load(text, source)
    return Manifest(source, docs, is_json, text)


def require_objects(manifest: Manifest) -> None:
    """ConfigError (one line, naming the source) unless some document is a Kubernetes object:
    an empty file, plain text or a bare scalar is a mistake, not a manifest with nothing to do."""
    if not manifest.docs:
        raise ConfigError(manifest.source, "", "", "is empty: expected Kubernetes objects (apiVersion, kind)")
    if not any(isinstance(doc, dict) and isinstance(doc.get("kind"), str) for doc in manifest.docs):
        first = manifest.docs[0]
        got = "a mapping without a kind" if isinstance(first, dict) else type_words(first)
        raise ConfigError(
            manifest.source, "", "", f"holds no Kubernetes object (a mapping with apiVersion and kind), got {got}"
        )


def dump_documents(
    docs: list[Any], *, as_json: bool, layout: Layout | None = None, originals: list[Any] | None = None
) -> str:
    """The documents as text: JSON, or multi-document YAML (`---` between documents).

    Documents from a round-trip read are written by ruamel.yaml (pass their `layout`),
    comments and quoting included; plain ones by PyYAML, in key order. With the documents
    as read (`originals`), one equal to its original is written exactly as it was read."""
    if as_json:
        return "".join(json.dumps(doc, indent=2, ensure_ascii=False) + "\n" for doc in docs)
    if not docs:
        return ""
    if layout is not None:
        if originals is not None and len(layout.piece_of) == len(docs) == len(originals):
            return _splice_round_trip(docs, originals, layout)
        return _dump_round_trip(docs, layout)
    import yaml  # only writers pay for it: `check --probe` never loads yaml

    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, width=YAML_WIDTH)


def position(node: Any, key: str | int) -> tuple[int, int] | None:
    """Where `key` of a round-trip mapping (or item `key` of a sequence) was in the text:
    (line, column), both 1-based; None for plain dicts/lists or nodes inject added."""
    lc = getattr(node, "lc", None)
    if lc is None:
        return None
    try:
        if isinstance(node, dict):
            line, col = lc.key(key)
        elif isinstance(node, list) and isinstance(key, int):
            line, col = lc.item(key)
        else:
            return None
    except (KeyError, IndexError, TypeError):
        return None
    if line is None or col is None:
        return None
    return line + 1, col + 1


def _load_json(text: str) -> list[Any] | None:
    stripped = text.lstrip()
    if stripped[:1] not in ("{", "["):
        return None
    try:
        doc = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    return [] if doc is None else [doc]


def _round_trip_yaml() -> Any:
    from ruamel.yaml import YAML  # round-trip readers only: `check` never imports it

    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = YAML_WIDTH
    rt.allow_unicode = True
    # `ports: [{containerPort: 80}]` stays as written, not `[containerPort: 80]`.
    rt.brace_single_entry_mapping_in_flow_sequence = True
    return rt


def _load_round_trip(text: str, source: str) -> list[Any]:
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    if _flow_nesting_bound(text) > MAX_FLOW_NESTING:
        raise ConfigError(source, "", "", "invalid YAML: nested too deeply")
    try:
        return [doc for doc in _round_trip_yaml().load_all(text) if doc is not None]
    except MarkedYAMLError as err:
        raise _marked_error(source, err) from None
    except YAMLError as err:
        raise ConfigError(source, "", "", f"invalid YAML: {one_line(str(err))}") from None
    except (ValueError, OverflowError, UnicodeError) as err:
        raise ConfigError(source, "", "", f"invalid YAML: {one_line(str(err))}") from None
    except RecursionError:
        raise ConfigError(source, "", "", "invalid YAML: nested too deeply") from None


def _dump_round_trip(docs: list[Any], layout: Layout) -> str:
    body = "---\n".join(_dump_one(doc, layout.indent(index)) for index, doc in enumerate(docs))
    return layout.header + _with_newline(body, layout.newline) + layout.footer


def _splice_round_trip(docs: list[Any], originals: list[Any], layout: Layout) -> str:
    """The text as read, each changed document's piece replaced by its dump."""
    pieces = list(layout.pieces)
    for index, (doc, original) in enumerate(zip(docs, originals, strict=True)):
        if doc != original:
            pieces[layout.piece_of[index]] = _with_newline(_dump_one(doc, layout.indent(index)), layout.newline)
    return "".join(pieces)


def _dump_one(doc: Any, indent: Indent) -> str:
    import io

    rt = _round_trip_yaml()
    rt.indent(mapping=indent.mapping, sequence=indent.sequence, offset=indent.offset)
    out = io.StringIO()
    rt.dump(doc, out)
    return out.getvalue()


def _with_newline(text: str, newline: str) -> str:
    if newline == "\n":
        return text
    # ruamel.yaml keeps a comment's "\r" but writes "\n" everywhere else.
    return text.replace("\r\n", "\n").replace("\n", newline)


def copy_document(node: Any) -> Any:
    """A deep copy of a document, to edit while the original stays as it was.

    Plain JSON-shaped data (what json.loads and PyYAML give: dicts, lists, scalars) is copied by walking it, 7x
    faster than `copy.deepcopy` for a pod (about 40 us against 280 us for ten containers), which is most of
    what the webhook spends on one review besides inject itself. Anything else, such as a round-trip text's
    commented mappings, goes to `copy.deepcopy`, which keeps their comments and positions."""
    kind = type(node)
    if kind is dict:
        return {key: copy_document(value) for key, value in node.items()}
    if kind is list:
        return [copy_document(item) for item in node]
    if kind in _IMMUTABLE_SCALARS:
        return node
    return copy.deepcopy(node)


# The scalars JSON and PyYAML's safe loader give, which a copy may share: none can change in place.
_IMMUTABLE_SCALARS = frozenset({str, int, float, bool, type(None)})


def remove_key(mapping: dict[str, Any], key: str) -> None:
    """`del mapping[key]`, keeping the comment lines that followed its value in a round-trip text.

    ruamel.yaml keeps a comment line below a block on the block's last scalar, so deleting
    the block (inject removing a readinessProbe) would delete the comment under it too. Those
    lines move to the end of the key before it; an inline comment of the deleted lines goes with them.
    """
    keys = list(mapping)
    following = _comment_lines_after(mapping, key)
    del mapping[key]
    at = keys.index(key)
    if not following or at == 0:
        return
    holder, last = _last_leaf(mapping, keys[at - 1])
    slot = 2 if isinstance(holder, dict) else 0  # where ruamel.yaml keeps a comment after a value
    entry = holder.ca.items.setdefault(last, [None, None, None, None])
    before = entry[slot]
    following.value = (before.value if before is not None else "\n") + following.value
    entry[slot] = following


def _comment_lines_after(mapping: dict[str, Any], key: str) -> Any:
    """The comment token after `mapping[key]`'s value, cut to its whole lines; None if there are none."""
    if getattr(mapping, "ca", None) is None:
        return None
    holder, last = _last_leaf(mapping, key)
    entry = holder.ca.items.get(last)
    token = entry[2 if isinstance(holder, dict) else 0] if entry else None
    if token is None or "\n" not in token.value:
        return None
    rest = token.value.split("\n", 1)[1]  # what follows the value's own line
    if not rest.strip():
        return None
    token.value = rest
    return token


def _last_leaf(node: Any, key: Any) -> tuple[Any, Any]:
    """The collection and key of the last line written under node[key], depth first: a scalar,
    or a flow collection (`[a, b]`), which is written on its key's line."""
    while True:
        value = node[key]
        block = isinstance(value, (dict, list)) and value and hasattr(value, "fa") and not value.fa.flow_style()
        if not block:
            return node, key
        node, key = (value, list(value)[-1]) if isinstance(value, dict) else (value, len(value) - 1)


_KEY_LINE = re.compile(r"^( *)[^\s#-][^#]*:\s*(#.*)?$")
_ITEM_LINE = re.compile(r"^( *)- ( *)\S")
_INDENTED = re.compile(r"^( *)\S")


def _guess_layout(text: str, docs: list[Any]) -> Layout:
    """Each document's indents, from its own lines (a document starts at its root's first line)."""
    lines = text.splitlines()
    starts = [_start_line(doc) for doc in docs]
    indents: list[Indent] = []
    for index, start in enumerate(starts):
        later = [line for line in starts[index + 1 :] if line is not None]
        if start is None:
            indents.append(indents[-1] if indents else Indent())
            continue
        indents.append(_guess_indent(lines[start : later[0] if later else len(lines)]))
    newline = "\r\n" if text.split("\n", 1)[0].endswith("\r") else "\n"
    pieces, piece_of = _pieces(text, len(docs))
    return Layout(
        indents=tuple(indents),
        header=_header(text),
        footer=_footer(text),
        newline=newline,
        pieces=pieces,
        piece_of=piece_of,
    )


_MARKER_LINE = re.compile(r"^(---|\.\.\.)(?=[ \t\r]|$)")
_MARKER_ONLY = re.compile(r"^---[ \t]*(#.*)?$")


def _pieces(text: str, documents: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The text as pieces: each `---` line on its own, and what lies between them. A `---` at the
    start of a line always ends a document, so each piece holding more than comments is one document."""
    pieces: list[str] = []
    current: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("---") and _MARKER_LINE.match(line):
            if not _MARKER_ONLY.match(line.rstrip("\r\n")):
                return (), ()  # `--- {a: 1}`: content on the marker's line
            pieces.extend(["".join(current), line])
            current = []
        else:
            current.append(line)
    pieces.append("".join(current))
    holding = tuple(index for index, piece in enumerate(pieces) if _has_content(piece))
    if len(holding) != documents:
        return (), ()  # an empty document (`~`), or a `...` inside one
    return tuple(pieces), holding


def _has_content(piece: str) -> bool:
    return any(
        line.strip() and not line.lstrip().startswith("#") and not _MARKER_LINE.match(line)
        for line in piece.splitlines()
    )


def _start_line(doc: Any) -> int | None:
    lc = getattr(doc, "lc", None)
    return lc.line if lc is not None and isinstance(lc.line, int) else None


def _guess_indent(text_lines: list[str]) -> Indent:
    """The first block mapping's and block sequence's indents, as ruamel.yaml's indent() takes them."""
    mapping = offset = None
    dash_gap = 0
    lines = [line for line in text_lines if line.strip() and not line.lstrip().startswith("#")]
    for parent, child in itertools.pairwise(lines):
        key = _KEY_LINE.match(parent)
        if key is None:
            continue
        item = _ITEM_LINE.match(child)
        if item is not None:
            if offset is None:
                offset = len(item[1]) - len(key[1])
                dash_gap = len(item[2])
        elif mapping is None:
            indented = _INDENTED.match(child)
            if indented is not None and len(indented[1]) > len(key[1]):
                mapping = len(indented[1]) - len(key[1])
        if mapping is not None and offset is not None:
            break
    mapping = mapping or 2
    offset = max(offset or 0, 0)
    return Indent(mapping=mapping, sequence=offset + 2 + dash_gap, offset=offset)


_DOCUMENT_START = re.compile(r"^---[ \t]*(#.*)?$")
_DOCUMENT_MARKER = re.compile(r"^(---|\.\.\.)[ \t]*$")


def _footer(text: str) -> str:
    """The blank and `---`/`...` lines ending the text, if there is such a marker among them."""
    lines = text.splitlines(keepends=True)
    start = len(lines)
    while start and (not lines[start - 1].strip() or _DOCUMENT_MARKER.match(lines[start - 1].strip())):
        start -= 1
    footer = "".join(lines[start:])
    return footer if any(_DOCUMENT_MARKER.match(line.strip()) for line in lines[start:]) else ""


def _header(text: str) -> str:
    """The text up to and including the first `---` line, if only comments and blank lines precede it."""
    end = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        end += len(line)
        if _DOCUMENT_START.match(stripped):
            return text[:end] if text[:end].endswith("\n") else text[:end] + "\n"
        if stripped and not stripped.startswith("#"):
            return ""
    return ""


# libyaml (about 6x faster here, and `check` must start fast) composes nested
# nodes by recursing in C: tens of thousands of levels crash the process instead
# of raising. Every level of nesting costs at least one of these characters, so
# text with few of them is provably shallow; other text goes to the pure-Python
# loader, which raises RecursionError instead.
_NESTING_CHARS = "[{-?:"
C_LOADER_MAX_NESTING_CHARS = 5000
# The pure-Python scanner reads ahead through every unclosed `[`/`{` at about 65 us
# each before the composer gives up, so deep flow nesting is refused up front.
# Real manifests nest a dozen levels; brackets inside quoted strings only make
# the estimate err high, and by hundreds only for a pathological text.
MAX_FLOW_NESTING = 500
_BRACKETS = re.compile(r"[\[\]{}]")


def load_documents(text: str, source: str) -> list[Any]:
    """Every non-empty document in `text` (JSON, YAML or flow-style YAML)."""
    # A value of a round-trip document is a str subclass (a quoted ScalarString), which libyaml refuses.
    return _load(str(text), source)[0]


def _load(text: str, source: str) -> tuple[list[Any], bool]:
    """(the documents, whether `text` was JSON): JSON is what parses as JSON."""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        # Real JSON parses as JSON: YAML 1.1 rejects some valid JSON (surrogate-pair
        # escapes) and reads 1e5 as a string. Anything else falls through to YAML.
        try:
            doc = json.loads(stripped)
        except (ValueError, RecursionError):
            pass
        else:
            return ([] if doc is None else [doc]), True
    return _load_yaml(text, source), False


def _marked_error(source: str, err: Any) -> ConfigError:
    """A YAML error with a position (PyYAML's or ruamel's, which share the shape) as one line."""
    mark = err.problem_mark or err.context_mark
    problem = one_line(err.problem or err.context or "syntax error")
    if mark is None:
        return ConfigError(source, "", "", f"invalid YAML: {problem}")
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    return ConfigError(source, "", "", f"invalid YAML at {where}: {problem}")


def _load_yaml(text: str, source: str) -> list[Any]:
    import yaml  # here, so `--probe` and SERVING_READINESS_PROBE alone never pay for it

    c_loader: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)
    loader = yaml.SafeLoader
    if c_loader is not None and _nesting_bound(text) <= C_LOADER_MAX_NESTING_CHARS:
        loader = c_loader
    elif _flow_nesting_bound(text) > MAX_FLOW_NESTING:
        raise ConfigError(source, "", "", "invalid YAML: nested too deeply")
    try:
        return [doc for doc in yaml.load_all(text, Loader=loader) if doc is not None]
    except yaml.MarkedYAMLError as err:
        raise _marked_error(source, err) from None
    except yaml.YAMLError as err:  # ReaderError: control characters and the like
        raise ConfigError(source, "", "", f"invalid YAML: {one_line(str(err))}") from None
    except (ValueError, OverflowError, UnicodeError) as err:
        # Constructors raise these for a timestamp like 2020-13-45 or a 5000-digit int.
        raise ConfigError(source, "", "", f"invalid YAML: {one_line(str(err))}") from None
    except RecursionError:
        raise ConfigError(source, "", "", "invalid YAML: nested too deeply") from None


def _nesting_bound(text: str) -> int:
    return sum(text.count(char) for char in _NESTING_CHARS)


def _flow_nesting_bound(text: str) -> int:
    depth = deepest = 0
    for bracket in _BRACKETS.finditer(text):
        depth = depth + 1 if bracket[0] in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest
