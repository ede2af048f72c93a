"""`make bench`: the performance targets P1-P12 of docs/performance.md, measured end to end.

Run with `python -m bench` (see __main__.py). Not part of `make test`.
"""
