"""Distribution at scale (issue 18): image families and their versions, recipient teams'
subscriptions, standing approvals that bound automatic shares, recipient groups, the "latest"
pointer in every recipient account, the inventory of every copy, and retention.

Above transfers (it asks transfers for shares, as a person would) and below webhooks and the API.
"""
