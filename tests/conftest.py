"""Shared fixtures live in tests/support/*.py, one module per real component they start."""

import pkgutil
from pathlib import Path

import pytest

# The support modules import each other, so some are imported before pytest loads them as plugins: have their
# asserts rewritten all the same.
pytest.register_assert_rewrite("support")

pytest_plugins = [f"support.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent / "support")])]
