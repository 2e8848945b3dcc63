"""Every op of the `ember` library has a fuzz test: a new op without one fails here."""

import importlib
import pkgutil

import ember  # noqa: F401  (registers the ops)

from . import harness


def test_every_registered_op_is_fuzzed():
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("test_"):
            importlib.import_module(f"{__package__}.{info.name}")
    ops = harness.registered_ops()
    assert len(ops) >= 13, sorted(ops)
    missing = ops - harness.COVERED
    assert not missing, f"ops without a fuzz test (mark one with @covers): {sorted(missing)}"
    unknown = harness.COVERED - ops
    assert not unknown, f"@covers names ops that do not exist: {sorted(unknown)}"
