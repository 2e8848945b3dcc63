"""Native switches a case sets while it runs (the paths the drivers take, strict refusals), put
back as they were afterwards."""

from __future__ import annotations

import contextlib
import os

from .. import env


@contextlib.contextmanager
def switched(**values: str):
    """EMBER_* switches (declared in ember.env) set to these values for the block."""
    old = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        assert name in env.SWITCHES, name
        os.environ[name] = value
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
