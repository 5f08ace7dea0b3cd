"""A WSGI app that answers "ok": tests/test_bench_load.py serves it with the README's gunicorn flags."""


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
