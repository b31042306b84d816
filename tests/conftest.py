"""Shared fixtures live in tests/support/*.py, one module per real component they start."""

import pkgutil
from pathlib import Path

pytest_plugins = [f"support.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent / "support")])]
