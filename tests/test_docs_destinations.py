"""The receiver example of docs/destinations.md runs, and accepts exactly what Kairos signs."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from kairos.activate.signing import sign

DOC = (Path(__file__).resolve().parent.parent / "docs" / "destinations.md").read_text()


def test_the_documented_receiver_verifies_kairos_signatures() -> None:
    block = re.findall(r"```python\n(.*?)```", DOC, re.S)[0]
    scope: dict[str, Any] = {}
    exec(compile(block, "docs/destinations.md", "exec"), scope)
    valid = scope["valid"]
    secret = scope["SECRET"].decode()
    body = b'{"id":"dl_1","type":"segment_entered"}'
    now = int(time.time())
    header = sign(secret, body, now)
    assert valid(header, body, now)
    assert not valid(header, body + b"x", now)
    assert not valid(sign("another secret 0123", body, now), body, now)
    assert not valid(header, body, now + 301)
    assert not valid("t=abc,v1=00", body, now) and not valid("", body, now)
    rotating = f"{header},v1={'0' * 64}"  # two signatures while a secret is rotated: any match counts
    assert valid(rotating, body, now)
