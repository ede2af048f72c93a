"""The OSAI sandbox: a local emulator of OSAI's report API, faithful to its contract.

`python -m osai.sandbox --host H --port P [--latency S]` serves it (so does
`manage.py osai_sandbox`); `start_in_thread()` serves it from a thread of this process.
The server is in `server.py`, the deterministic usage model in `usage.py`.
"""

from osai.sandbox.server import (
    RunningSandbox,
    SandboxApp,
    SandboxConfig,
    account_id_for_token,
    add_arguments,
    config_from_options,
    main,
    serve,
    start_in_thread,
)

__all__ = [
    "RunningSandbox",
    "SandboxApp",
    "SandboxConfig",
    "account_id_for_token",
    "add_arguments",
    "config_from_options",
    "main",
    "serve",
    "start_in_thread",
]
