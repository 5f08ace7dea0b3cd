"""The copy the requester described: what a copy carries from its request and its source, and how
it is checked against the source once it exists.

- Description: the text the requester typed (shown to the approver, signed in the digest) is the
  copy's Description, cut to what OUTSCALE keeps beside the portal's mark (`copy_description`, for
  every path that creates a recipient's copy).
- Source facts: what ReadImages said of the source at request time (size, snapshots, product codes,
  architecture, boot modes, root device, tags), kept on the share for the approver
  (`source_facts`), with the tags the copies will carry (the source team's allowlist), which the
  digest binds.
- Tags: a copy carries the bound tags still on the allowlist, under the portal's provenance tags
  (`carried_tags`).
- Warnings: once a copy is available, each difference from the source facts is a sentence on its
  recipient (`copy_warnings`), shown on the share page and the inbox and recorded in its
  completion event.
"""

import outscale
from transfers.models import Share

PROVENANCE_PREFIX = "omiportal:"  # the portal's own tags: never carried from a source, never overwritten
CUT = "..."
UNDESCRIBED = "Copied by OMI Portal from {image_id}, share {share_id}"


def fit_description(text: str) -> str:
    """``text`` as a copy keeps it: cut (with "...") to what fits beside the portal's mark."""
    text = (text or "").strip()
    room = outscale.DESCRIPTION_ROOM
    return text if len(text) <= room else text[:room - len(CUT)].rstrip() + CUT


def description_is_cut(text: str) -> bool:
    return fit_description(text) != (text or "").strip()


def copy_description(share: Share) -> str:
    """The Description of every copy made for ``share`` (the mark is appended by the cloud layer):
    what the requester typed, or where it came from when they typed nothing. One function for
    every path that creates a recipient's copy (an import from the manifest, a copy by launch
    permission), so each says the same."""
    return fit_description(share.description) or UNDESCRIBED.format(image_id=share.source_image_id,
                                                                     share_id=share.public_id)


# --- Source facts, at request time ---------------------------------------------------------------

def allowed_tags(tags: dict[str, str], allowlist) -> dict[str, str]:
    """The tags whose key is on the allowlist; the portal's own are never carried."""
    keys = set(allowlist or ())
    return {key: value for key, value in tags.items() if key in keys and not key.startswith(PROVENANCE_PREFIX)}


def source_facts(image: outscale.ImageSummary, *, allowlist) -> dict:
    """What the approver is shown of the source, from the ReadImages the request already made (JSON
    only: lists and dicts, so that the digest of the saved row is the digest computed here)."""
    facts = image.facts
    tags = dict(facts.tags)
    return {
        "size_gib": facts.size_gib,
        "snapshots": facts.snapshots,
        "product_codes": list(facts.product_codes),
        "architecture": facts.architecture,
        "boot_modes": list(facts.boot_modes),
        "root_device_type": facts.root_device_type,
        "root_device_name": facts.root_device_name,
        "tags": tags,
        "carried_tags": allowed_tags(tags, allowlist),
    }


def bound_tags(share: Share) -> dict[str, str] | None:
    """The tags the request bound for its copies (in the digest); None for a request made before
    tags were carried."""
    facts = share.source_facts or {}
    return facts.get("carried_tags") if "carried_tags" in facts else None


def carried_tags(share: Share) -> dict[str, str]:
    """The tags a copy of ``share`` gets from its source: those the approval bound that are still
    on the source team's allowlist (a key the team removed since is not carried)."""
    return allowed_tags(bound_tags(share) or {}, share.team.copy_tag_allowlist)


# --- After the copy ------------------------------------------------------------------------------

def _codes(codes) -> str:
    return ", ".join(f"{code} ({outscale.licence_class(code)})" for code in codes) or "none"


def copy_warnings(share: Share | None, image: outscale.ImageState | None) -> list[str]:
    """Each way the copy differs from its source as the request saw it, as a sentence. Only what
    the request recorded is compared (a request from before source facts compares nothing)."""
    facts = (share.source_facts or {}) if share is not None else {}
    if not facts or image is None:
        return []
    copy = image.facts
    warnings = []
    if "product_codes" in facts and sorted(facts["product_codes"]) != sorted(copy.product_codes):
        warnings.append(f"The copy's product codes are {_codes(copy.product_codes)}; the source's were "
                        f"{_codes(facts['product_codes'])}: its licences and billing differ.")
    if facts.get("architecture") and facts["architecture"] != copy.architecture:
        warnings.append(f"The copy's architecture is {copy.architecture or 'not reported'}; "
                        f"the source's was {facts['architecture']}.")
    if facts.get("boot_modes") and sorted(facts["boot_modes"]) != sorted(copy.boot_modes):
        warnings.append(f"The copy boots in {', '.join(copy.boot_modes) or 'no reported'} mode; "
                        f"the source booted in {', '.join(facts['boot_modes'])}.")
    source_root = (facts.get("root_device_type", ""), facts.get("root_device_name", ""))
    copy_root = (copy.root_device_type, copy.root_device_name)
    if any(source_root) and source_root != copy_root:
        warnings.append(f"The copy's root device is {' '.join(filter(None, copy_root)) or 'not reported'}; "
                        f"the source's was {' '.join(filter(None, source_root))}.")
    return warnings
