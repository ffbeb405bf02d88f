"""Per-format readers for prompt files (JSONL, CSV, TXT).

Files are read as bytes and decoded line by line, so one undecodable line is rejected on its own while
the rest of the file is kept. Each reader yields either a candidate prompt or a rejection with its
1-based physical line. Rejection reasons start with a stable kind followed by `:` and the specifics
("invalid JSON: Expecting value at column 1"), so reasons can be grouped by the text before the colon.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

EXCERPT_CHARS = 200
_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_WHITESPACE = re.compile(r"\s+")


class PromptFileError(Exception):
    """A prompt file that cannot be read at all (the message names the file)."""

    def __init__(self, path: str | Path, reason: str):
        # Both arguments go to Exception so the error pickles across process boundaries.
        super().__init__(str(path), reason)
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot read prompt file {self.path}: {self.reason}"


@dataclass(frozen=True)
class Rejection:
    line: int
    reason: str
    excerpt: str

    def to_dict(self) -> dict:
        return {"line": self.line, "reason": self.reason, "excerpt": self.excerpt}


@dataclass(frozen=True)
class PromptRow:
    """A row that passed validation: normalised text, its hash, and the file's own id/category if any."""

    line: int
    text: str
    hash: str
    given_id: str | None
    category: str | None


@dataclass
class ParsedFile:
    path: Path
    file_sha256: str
    rows: list[PromptRow] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return len(self.rows) + len(self.rejections)


class _Reject(Exception):
    """Raised inside a reader for one row; turned into a Rejection for that row."""


def normalise_text(text: str) -> str:
    """NFC-normalise, collapse every run of whitespace to one space, strip the ends."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def text_hash(normalised: str) -> str:
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def reader_formats() -> dict[str, str]:
    """File suffix (lower case) -> format name."""
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "txt"}


def read_prompt_file(path: str | Path, *, max_chars: int = 2000) -> ParsedFile:
    """Parse one prompt file into accepted rows and per-line rejections.

    Raises PromptFileError when the file cannot be read at all: missing, a directory, unreadable, an
    unknown extension, UTF-16/32 encoded (with or without a BOM), a CSV file without a `prompt` column,
    or a file with no rows at all (empty, only blank lines, or a CSV header and nothing else).
    """
    path = Path(path)
    fmt = reader_formats().get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(reader_formats()))
        raise PromptFileError(path, f"unknown extension {path.suffix or '(none)'!r}; expected one of {known}")
    data = _read_bytes(path)
    if data.startswith(_UTF16_BOMS):
        raise PromptFileError(path, "file is UTF-16 encoded; prompt files must be UTF-8")
    wide = _sniff_wide_encoding(data)
    if wide is not None:
        raise PromptFileError(path, f"file looks {wide} encoded without a BOM (NUL bytes between the "
                                    "characters); prompt files must be UTF-8")
    parsed = ParsedFile(path=path, file_sha256=hashlib.sha256(data).hexdigest())
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    lines = data.splitlines()
    items = {"jsonl": _jsonl_items, "csv": _csv_items, "txt": _txt_items}[fmt](path, lines)
    for line_no, raw, fields in items:
        try:
            if isinstance(fields, _Reject):
                raise fields
            parsed.rows.append(_validate(line_no, fields, max_chars))
        except _Reject as exc:
            parsed.rejections.append(Rejection(line_no, str(exc), raw[:EXCERPT_CHARS]))
    if parsed.total_rows == 0:
        what = "a CSV header but no data rows" if fmt == "csv" else "no rows (only blank lines)"
        raise PromptFileError(path, f"empty file: {what}")
    return parsed


def _sniff_wide_encoding(data: bytes) -> str | None:
    """"UTF-16-LE"/"UTF-16-BE"/"UTF-32" when the bytes look like that encoding without a BOM, else None.

    UTF-8 text has no NUL bytes (a NUL character is rejected on its own line anyway); in UTF-16/32 text
    that is mostly ASCII, every second (fourth) byte is NUL. A file whose start is at least a quarter NUL
    bytes is therefore not UTF-8 text; the position of the NULs tells the byte order. Text in other
    scripts (Chinese) has few NULs, but its line breaks and ASCII spaces and digits still put them all on
    one side of each byte pair, where UTF-8 never does; such a file that decodes cleanly as UTF-16 of that
    byte order into text with line breaks (or several of them) is refused too, as it would otherwise be
    read as valid but meaningless ASCII ("`O}Y")."""
    sample = data[:4096]
    nuls = sample.count(0)
    if not sample or not nuls:
        return None
    even = sample[0::2].count(0)
    odd = sample[1::2].count(0)
    if nuls * 4 >= len(sample):
        if nuls * 2 > len(sample) + 1:
            return "UTF-32"
        if odd >= 3 * even:
            return "UTF-16-LE"
        if even >= 3 * odd:
            return "UTF-16-BE"
        return "UTF-16"
    if len(data) % 2:
        return None
    for name, nul_side, other in (("UTF-16-LE", odd, even), ("UTF-16-BE", even, odd)):
        if nul_side < 3 * other or nul_side == 0:
            continue
        try:
            text = data.decode(name.lower())
        except UnicodeDecodeError:
            continue
        controls = any(unicodedata.category(c) == "Cc" and c not in _ALLOWED_CONTROLS for c in text)
        if not controls and ("\n" in text or "\r" in text or nuls >= 2):
            return name
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PromptFileError(path, "no such file") from None
    except IsADirectoryError:
        raise PromptFileError(path, "is a directory, not a file") from None
    except PermissionError:
        raise PromptFileError(path, "permission denied") from None
    except OSError as exc:
        raise PromptFileError(path, exc.strerror or str(exc)) from exc


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reject(f"undecodable bytes: invalid UTF-8 at byte {exc.start + 1} of the line") from None


def _loose(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


# Each reader yields (line, raw excerpt text, fields-or-_Reject); fields is a dict with "prompt" and
# optional "id"/"category" values exactly as found in the file.
_Item = tuple[int, str, "dict | _Reject"]


def _jsonl_items(path: Path, lines: list[bytes]) -> Iterator[_Item]:
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            yield number, _loose(raw), _jsonl_fields(raw)


def _jsonl_fields(raw: bytes) -> dict | _Reject:
    try:
        text = _decode(raw)
    except _Reject as exc:
        return exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return _Reject(f"invalid JSON: {exc.msg} at column {exc.colno}")
    if not isinstance(value, dict):
        return _Reject(f"not a JSON object: got {_json_type(value)}")
    if "prompt" not in value:
        return _Reject("missing prompt: no 'prompt' key")
    return value


def _txt_items(path: Path, lines: list[bytes]) -> Iterator[_Item]:
    for number, raw in enumerate(lines, start=1):
        try:
            text = _decode(raw)
        except _Reject as exc:
            yield number, _loose(raw), exc
            continue
        if text.strip():
            yield number, text, {"prompt": text}


def _csv_items(path: Path, lines: list[bytes]) -> Iterator[_Item]:
    # Lines are decoded one by one (undecodable ones with surrogate escapes, remembered) and handed to
    # the csv module, so quoted fields spanning lines follow its rules; a record touching an
    # undecodable line is rejected at the record's first line.
    bad: dict[int, _Reject] = {}

    def decoded() -> Iterator[str]:
        for number, raw in enumerate(lines, start=1):
            try:
                yield _decode(raw) + "\n"
            except _Reject as exc:
                bad[number] = exc
                yield raw.decode("utf-8", errors="surrogateescape") + "\n"

    reader = csv.reader(decoded())
    try:
        header = next(reader)
    except StopIteration:
        raise PromptFileError(path, "empty CSV file: expected a header row with a 'prompt' column") from None
    except csv.Error as exc:
        raise PromptFileError(path, f"malformed CSV header: {exc}") from None
    if 1 in bad:
        raise PromptFileError(path, f"CSV header line: {bad[1]}")
    columns = [name.strip().lower() for name in header]
    if "prompt" not in columns:
        raise PromptFileError(path, f"CSV header has no 'prompt' column (columns: {', '.join(header)})")
    index = {name: columns.index(name) for name in ("prompt", "id", "category") if name in columns}

    end = reader.line_num
    while True:
        start = end + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            end = reader.line_num
            yield start, _record_excerpt(lines, start, end), _Reject(f"malformed CSV: {exc}")
            continue
        end = reader.line_num
        if not record or all(not cell.strip() for cell in record):
            continue
        excerpt = _record_excerpt(lines, start, end)
        failed = next((bad[n] for n in range(start, end + 1) if n in bad), None)
        if failed is not None:
            yield start, excerpt, failed
        elif len(record) != len(header):
            yield start, excerpt, _Reject(
                f"wrong field count: {len(record)} fields, header has {len(header)} (unquoted comma?)")
        else:
            yield start, excerpt, {name: record[i] for name, i in index.items()}


def _record_excerpt(lines: list[bytes], start: int, end: int) -> str:
    return _loose(b"\n".join(lines[start - 1:end])[: EXCERPT_CHARS * 4])


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# Control characters a prompt may contain: ordinary whitespace (collapsed by normalise_text).
_ALLOWED_CONTROLS = frozenset("\t\n\r\v\f")
# Letters and symbols that render as nothing (fillers, blank braille), on top of the categories below.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt): renderers show nothing for them,
# whether or not they are assigned yet (U+2065, U+FFF0, the tag block U+E0000..U+E0FFF).
_DEFAULT_IGNORABLE = ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
                      (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
                      (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
                      (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))
# Categories without a visible glyph of their own: separators, controls, format characters (zero-width
# space/joiners, BOM, bidi marks), surrogates, combining marks with nothing to combine with, and unassigned
# code points (Cn: nothing to draw, as far as this Python's Unicode tables know). Private-use characters
# count as visible (a font may define them).
_INVISIBLE_CATEGORIES = ("Z", "Cc", "Cf", "Cs", "Mn", "Me", "Cn")
_CONTROL_NAMES = {0x00: "NUL", 0x1B: "ESC", 0x7F: "DEL"}


def _check_characters(value: str, what: str) -> None:
    """Reject lone surrogates (a JSON "\\ud800" escape; no UTF-8 encoding exists for them) and control
    characters other than ordinary whitespace (NUL, other C0/C1 controls, DEL) anywhere in `value`."""
    for position, char in enumerate(value, start=1):
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            raise _Reject(f"invalid unicode: lone surrogate U+{code:04X} at character {position} of the {what}")
        if char not in _ALLOWED_CONTROLS and unicodedata.category(char) == "Cc":
            name = _CONTROL_NAMES.get(code, "control")
            raise _Reject(f"control character: U+{code:04X} ({name}) at character {position} of the {what}")


def _default_ignorable(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _DEFAULT_IGNORABLE)


def _has_visible(text: str) -> bool:
    return any(char not in _INVISIBLE and not unicodedata.category(char).startswith(_INVISIBLE_CATEGORIES)
               and not _default_ignorable(char) for char in text)


def _validate(line: int, fields: dict, max_chars: int) -> PromptRow:
    prompt = fields["prompt"]
    if not isinstance(prompt, str):
        raise _Reject(f"prompt is not a string: got {_json_type(prompt)}")
    _check_characters(prompt, "prompt")
    text = normalise_text(prompt)
    if not text:
        raise _Reject("empty prompt: nothing left after normalising whitespace")
    if not _has_visible(text):
        shown = " ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(text))[:80]
        raise _Reject(f"no visible characters: the prompt is only invisible characters ({shown})")
    if len(text) > max_chars:
        raise _Reject(f"prompt too long: {len(text)} chars > max {max_chars}")
    return PromptRow(line=line, text=text, hash=text_hash(text),
                     given_id=_optional_id(fields.get("id")), category=_optional_category(fields.get("category")))


def _optional_id(value: object) -> str | None:
    # Empty ids (a blank optional CSV cell, "" or null in JSON) mean "no id": the hash id is used.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Reject(f"invalid id: must be a string or integer, got {_json_type(value)}")
    _check_characters(str(value), "id")
    text = normalise_text(str(value))
    return text or None


def _optional_category(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Reject(f"invalid category: must be a string, got {_json_type(value)}")
    _check_characters(value, "category")
    return normalise_text(value) or None
