import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "osai_dashboard.settings")
application = get_wsgi_application()

# Import every view now (Plotly with the charts), then move all that startup state out of
# the garbage collector's sight: a full collection otherwise walks those few hundred
# thousand objects, about 70 ms, every dozen or so overviews of 50 connections (their
# rows make many short-lived objects), which is most of that page's p95 (P18).
get_resolver().url_patterns  # noqa: B018
gc.collect()
gc.freeze()
