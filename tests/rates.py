"""Rate limits as the tests set them."""


def limit(count: int) -> str:
    """``count`` a day, for a test that makes a few requests and expects the next refused.

    django-ratelimit counts in fixed windows: a window ending between two of the test's requests
    starts the count again (a minute's did, once, on a busy CI machine). A day's leaves no room.
    """
    return f"{count}/d"
