"""Views, one module per area. A view parses the request, calls a page builder
(reports/pages/) or a service, and renders a template; nothing else.

Every object lookup is scoped to the signed-in user (reports/access.py, reports/teams/):
someone else's object is a 404, never a 403, so ids reveal nothing.
"""
