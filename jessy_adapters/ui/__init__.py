"""`jessy ui`: a local, read-only dashboard of the run folders under the given roots.

folders.py finds runs, compare and sweep folders and turns a URL's key back into a path, safely;
reading.py reads files that may be half-written; documents.py builds what each endpoint returns;
stream.py tails metrics.jsonl as server-sent events; app.py holds the routes; command.py serves.
Flask is imported only when the dashboard starts, so the CLI works without the `ui` extra.
"""


def create_app(roots, **options):
    """The Flask app over ROOTS (folders holding run folders); options as app.create_app."""
    from .app import create_app as _create_app

    return _create_app(roots, **options)


__all__ = ["create_app"]
