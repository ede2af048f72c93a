"""OSAI, as plain Python: its contract, a client that speaks to it, and a local sandbox.

Nothing in this package imports Django or the app: the app (`reports/`) depends on it,
never the other way round.
"""
