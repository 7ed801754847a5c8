"""The README's demo command, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_shows_tracking_then_replied(control_plane_assets):
    result = subprocess.run(
        [sys.executable, "-m", "replytracker.cli", "demo"],
        env={**os.environ, "KUBEBUILDER_ASSETS": str(control_plane_assets)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = result.stdout

    assert result.returncode == 0, f"demo failed:\n{output}\n{result.stderr}"
    assert "messagetracker.replytracker.dev/bob created" in output
    assert output.index("Tracking") < output.index("Replied")
    assert "reply.detected" in output
    assert "signature valid" in output
    assert "Done: phase Replied" in output
