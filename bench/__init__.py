"""`make bench`: the performance targets of docs/requirements.md (P), measured end to end.

Run with `python -m bench` (see __main__.py). Not part of `make test`.
"""
