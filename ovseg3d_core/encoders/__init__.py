"""2D dense feature extractors and text encoders, chosen by name in the config.

Importing this package changes no process-global state (environment variables, library flags):
a host that imports it keeps its own Hugging Face settings. Models load from local files through
per-call options (MiniLM: ``local_files_only``; OpenCLIP: ``pretrained=None`` plus a local
checkpoint). A library call that would still ask the hub goes inside :func:`hub_offline`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@contextmanager
def hub_offline() -> Iterator[None]:
    """Make Hugging Face hub look-ups fail at once inside the block; restore every setting on exit.

    Offline, a hub look-up waits out the client's retries (~45 s) before failing; robots have no
    internet. The settings are process-wide while the block runs, so wrap single calls only.
    """
    try:  # imported before the variables change: it reads them once, at import
        import huggingface_hub.constants as hub_constants
    except ImportError:
        hub_constants = None
    saved = {name: os.environ.get(name) for name in _OFFLINE_VARIABLES}
    saved_flag = getattr(hub_constants, "HF_HUB_OFFLINE", None)
    os.environ.update(dict.fromkeys(_OFFLINE_VARIABLES, "1"))
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = saved_flag
