"""The tag keys a team lets its images' copies carry (Team.copy_tag_allowlist).

A key follows OUTSCALE's rule for tag keys (1 to 255 characters, not starting with ``aws:``, as
CreateTags checks); the portal's own provenance keys (``omiportal:``) are never carried, and a copy
keeps room for them under OUTSCALE's 50 tags per resource.
"""

from django.core.exceptions import ValidationError

MAX_KEYS = 40  # 50 tags per resource, less the portal's provenance tags and some room
MAX_LENGTH = 255
RESERVED_PREFIXES = ("aws:", "omiportal:")

TOO_MANY = f"At most {MAX_KEYS} tag keys can be carried to copies."
TOO_LONG = "Tag key {key!r} is longer than 255 characters."
RESERVED = "Tag key {key!r} is reserved: keys starting with aws: or omiportal: cannot be carried."
NOT_TEXT = "Give the tag keys as text, one per line."


def clean_tag_keys(keys) -> list[str]:
    """``keys`` (a list, or text with one key per line) as the allowlist to store: stripped, without
    blanks or repeats, in the order given. Raises ValidationError saying what is wrong."""
    if isinstance(keys, str):
        keys = keys.splitlines()
    if not isinstance(keys, (list, tuple)) or not all(isinstance(key, str) for key in keys):
        raise ValidationError(NOT_TEXT)
    cleaned = list(dict.fromkeys(key.strip() for key in keys if key.strip()))
    for key in cleaned:
        if len(key) > MAX_LENGTH:
            raise ValidationError(TOO_LONG.format(key=key[:40] + "..."))
        if key.lower().startswith(RESERVED_PREFIXES):
            raise ValidationError(RESERVED.format(key=key))
        if "\x00" in key:
            raise ValidationError(NOT_TEXT)
    if len(cleaned) > MAX_KEYS:
        raise ValidationError(TOO_MANY)
    return cleaned
