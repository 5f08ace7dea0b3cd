"""Showing user-supplied text from the audit trail without letting it forge lines or terminals.

Events store labels and names verbatim (they are hashed), so a label may hold a
newline that fakes a second log line, an ANSI escape that recolours a terminal,
or a right-to-left override that reverses what a reviewer reads. ``safe_text``
makes those visible instead. HTML is left to the template's autoescaping (the
filter's result is not marked safe), and CSV exports must still defuse
formula prefixes themselves.
"""

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPED = ("Cc", "Cf", "Cs", "Zl", "Zp")


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe_text(value: object, *, max_length: int | None = None) -> str:
    """``value`` as one printable line: control and invisible format characters escaped."""
    text = "" if value is None else str(value)
    # Nearly every value is printable, which str.isprintable checks in C: it is False for every
    # character of the categories escaped below (all of C and Z but the space), so a printable
    # text has nothing to escape. The trail's page shows a few thousand values (issue 19).
    escaped = text if text.isprintable() else "".join(
        _escape(ch) if unicodedata.category(ch) in _ESCAPED else ch for ch in text
    )
    if max_length is not None and len(escaped) > max_length:
        return escaped[: max(max_length - 1, 0)] + "…"
    return escaped
