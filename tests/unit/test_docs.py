"""The docs keep up with the code: every condition reason and setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

from replytracker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "replytracker"

# The forms in which the operator's code spells a reason or Event reason.
_REASON_PATTERNS = [
    r'reason(?:=| = )"([A-Z][A-Za-z]+)"',
    r'SecretProblem\(\s*"([A-Z][A-Za-z]+)"',
    r'\((?:True|False), "([A-Z][A-Za-z]+)"',
    r'"([A-Z][A-Za-z]+)" if gave_up else "([A-Z][A-Za-z]+)"',
    r'reason, message = "([A-Z][A-Za-z]+)"',
]


def reasons_in_code() -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        for pattern in _REASON_PATTERNS:
            for match in re.findall(pattern, text):
                found.update(match if isinstance(match, tuple) else (match,))
    return found


def test_reasons_found_in_code():
    reasons = reasons_in_code()
    assert {"Unauthorized", "Retrying", "DeliveryFailed", "WebhookRetrying", "SecretNotFound"} <= reasons


def test_every_reason_in_reference():
    reference = (ROOT / "docs" / "reference.md").read_text()
    missing = sorted(r for r in reasons_in_code() if f"`{r}`" not in reference)
    assert missing == [], f"docs/reference.md does not mention: {missing}"


def test_every_setting_in_readme():
    readme = (ROOT / "README.md").read_text()
    missing = sorted(
        f"REPLYTRACKER_{name.upper()}" for name in Settings.model_fields if f"REPLYTRACKER_{name.upper()}" not in readme
    )
    assert missing == [], f"README.md does not document: {missing}"
