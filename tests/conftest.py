"""Test-wide settings: hypothesis draws the same examples on every CI run (CI=true), so a red CI is reproducible."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
