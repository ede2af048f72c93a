"""Page models ("selectors"): what each page shows, built from the database, never from OSAI.

Views parse the request, call a page builder here (or a service), and render the result; the
command line and the API read the same builders, so every way of looking at a report shows
the same figures.
"""
