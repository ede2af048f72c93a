"""`python -m osai.sandbox --host 127.0.0.1 --port 8765 [--latency 3]`: serve without Django."""

import sys

from osai.sandbox.server import main

sys.exit(main())
