"""Settings for `make bench`: the project's own settings, with the file cache moved aside.

Every process the benchmark starts (web server, worker, helpers) uses this module, so the
benchmark never shares `var/cache` with a developer's `make run`. Nothing else changes:
the database comes from DATABASE_URL (a SQLite file under var/bench/), and the pipeline
timings are the settings' own defaults unless the benchmark's environment says otherwise.
"""

from osai_dashboard.settings import *  # noqa: F403
from osai_dashboard.settings import VAR_DIR

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(VAR_DIR / "bench" / "cache"),
    }
}
