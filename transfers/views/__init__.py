"""Transfer pages, split by feature. Thin: parse, call one service or selector, render."""

from transfers.views.dashboard import dashboard
from transfers.views.decisions import approval_list, share_approve, share_cancel, share_reexport, share_reject
from transfers.views.grants import grant_list, grant_revoke
from transfers.views.incoming import (
    inbox,
    link_import,
    recipient_accept,
    recipient_decline,
    recipient_retry,
    share_reveal_link,
)
from transfers.views.shares import share_detail, share_list, share_new, share_progress

__all__ = [
    "approval_list", "dashboard", "inbox", "link_import", "recipient_accept", "recipient_decline", "recipient_retry",
    "share_approve", "share_cancel", "share_detail", "share_list", "share_new", "share_progress", "share_reexport",
    "share_reject", "share_reveal_link", "grant_list", "grant_revoke",
]
