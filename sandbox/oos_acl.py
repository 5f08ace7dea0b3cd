"""Object ACLs for OOS: canned ACLs, `x-amz-grant-*` headers and AccessControlPolicy XML.

Grantees are OUTSCALE accounts, named by their OOS canonical id ("S3 user ID", 64 hex digits:
`id="<canonical id>"`, the form OUTSCALE's guide shows, `--grant-read "id=USER_ID"`) or by email
(`emailAddress="alpha@sandbox.example"`, the S3 form; OUTSCALE does not document it), or the
AllUsers / AuthenticatedUsers groups. An id that is no account's canonical id (a 12-digit account
id included) is refused with S3's `InvalidArgument` "Invalid id", an unknown email with
`UnresolvableGrantByEmailAddress`, as S3 does. The owner always has FULL_CONTROL and is not stored
as a grant. Answers name each account as OUTSCALE documents it: ID = canonical id, DisplayName =
the OUTSCALE account id.
"""

from __future__ import annotations

import re
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from .sigv4 import S3Error
from .world import Account, Grant, World

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
PERMISSIONS = ("READ", "WRITE", "READ_ACP", "WRITE_ACP", "FULL_CONTROL")
CANNED = {
    "private": [],
    "bucket-owner-read": [],
    "bucket-owner-full-control": [],
    "public-read": [Grant("group", ALL_USERS, "READ")],
    "authenticated-read": [Grant("group", AUTHENTICATED_USERS, "READ")],
}
_GRANT_HEADERS = {
    "x-amz-grant-read": "READ",
    "x-amz-grant-read-acp": "READ_ACP",
    "x-amz-grant-write-acp": "WRITE_ACP",
    "x-amz-grant-full-control": "FULL_CONTROL",
}
_GRANTEE = re.compile(r'(id|emailaddress|uri)\s*=\s*"?([^",]+)"?', re.IGNORECASE)
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def allows(grants: list[Grant], principal: Account | None, permission: str) -> bool:
    for grant in grants:
        if grant.permission not in (permission, "FULL_CONTROL"):
            continue
        if grant.kind == "group" and grant.value == ALL_USERS:
            return True
        if principal is None:
            continue
        if grant.kind == "group" and grant.value == AUTHENTICATED_USERS:
            return True
        if grant.kind == "id" and grant.value == principal.canonical_id:
            return True
        if grant.kind == "email" and grant.value.lower() == principal.email.lower():
            return True
    return False


def grants_from_headers(world: World, headers: dict[str, str]) -> list[Grant] | None:
    """Grants from `x-amz-acl` or `x-amz-grant-*` headers; None when there are none."""
    canned = headers.get("x-amz-acl")
    if canned is not None:
        if canned not in CANNED:
            raise S3Error(400, "InvalidArgument", f"The canned ACL {canned!r} is not supported.")
        return list(CANNED[canned])
    grants = []
    for header, permission in _GRANT_HEADERS.items():
        for kind, value in _GRANTEE.findall(headers.get(header, "")):
            grants.append(_grant(world, kind.lower(), value.strip(), permission))
    return grants or None


def _grant(world: World, kind: str, value: str, permission: str) -> Grant:
    if kind == "uri":
        if value not in (ALL_USERS, AUTHENTICATED_USERS):
            raise S3Error(400, "InvalidArgument", "Only the AllUsers and AuthenticatedUsers groups are supported.")
        return Grant("group", value, permission)
    if kind == "emailaddress":
        if world.account_by_email(value) is None:
            raise S3Error(
                400,
                "UnresolvableGrantByEmailAddress",
                "The email address you provided does not match any account on record.",
            )
        return Grant("email", value, permission)
    if world.account_by_canonical_id(value) is None:
        raise S3Error(400, "InvalidArgument", "Invalid id", ArgumentName="CanonicalUser/ID", ArgumentValue=value)
    return Grant("id", value, permission)


def grants_from_xml(world: World, root: ElementTree.Element, owner_canonical_id: str) -> list[Grant]:
    grants = []
    for grant in root.iter():
        if grant.tag.rsplit("}", 1)[-1] != "Grant":
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: child for child in grant.iter()}
        permission = (fields.get("Permission").text or "") if "Permission" in fields else ""
        if permission not in PERMISSIONS:
            raise S3Error(400, "MalformedACLError", "The XML you provided was not well-formed or did not validate.")
        if "URI" in fields:
            grants.append(_grant(world, "uri", fields["URI"].text or "", permission))
        elif "EmailAddress" in fields:
            grants.append(_grant(world, "emailaddress", fields["EmailAddress"].text or "", permission))
        elif "ID" in fields and (fields["ID"].text or "") != owner_canonical_id:
            grants.append(_grant(world, "id", fields["ID"].text or "", permission))
    return grants


def owner_xml(account: Account) -> str:
    """`<ID>` is the canonical id, `<DisplayName>` the OUTSCALE account id (OUTSCALE's guide)."""
    return f"<ID>{account.canonical_id}</ID><DisplayName>{account.account_id}</DisplayName>"


def policy_xml(world: World, owner_id: str, grants: list[Grant]) -> bytes:
    owner = world.accounts[owner_id]
    items = [_grant_xml("CanonicalUser", owner_xml(owner), "FULL_CONTROL")]
    for grant in grants:
        if grant.kind == "group":
            items.append(_grant_xml("Group", f"<URI>{escape(grant.value)}</URI>", grant.permission))
        elif grant.kind == "email":
            items.append(
                _grant_xml(
                    "AmazonCustomerByEmail", f"<EmailAddress>{escape(grant.value)}</EmailAddress>", grant.permission
                )
            )
        else:
            grantee = world.account_by_canonical_id(grant.value)
            inner = owner_xml(grantee) if grantee else f"<ID>{escape(grant.value)}</ID>"
            items.append(_grant_xml("CanonicalUser", inner, grant.permission))
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Owner>{owner_xml(owner)}</Owner>"
        f"<AccessControlList>{''.join(items)}</AccessControlList></AccessControlPolicy>"
    )
    return body.encode("utf-8")


def _grant_xml(xsi_type: str, inner: str, permission: str) -> str:
    return (
        f'<Grant><Grantee xmlns:xsi="{XSI}" xsi:type="{xsi_type}">{inner}</Grantee>'
        f"<Permission>{permission}</Permission></Grant>"
    )
