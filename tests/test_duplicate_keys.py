"""A key twice in one JSON object of a request body or a command's BODY: refused with a precise error, not
read as its last value (``{"rule": "a", "rule": "b"}`` was stored as ``b``). Both backends."""

from __future__ import annotations

import msgspec
import pytest
from starlette.testclient import TestClient

from kairos._keys import duplicate_key
from kairos.runtime import Kairos


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('{"a": 1, "a": 2}', "a"),
        ('{"a": 1, "b": {"c": 1, "c" : 2}}', "c"),
        ('{"a": [{"k": 1}, {"k": 2}]}', None),  # the same key in two objects
        ('{"a": "x\\":y", "b": 1}', None),  # a '":' inside a string: counted, then parsed again
        ('{"a": "\\":", "a": 3}', "a"),
        ('{"\u00e9": 1, "e\u0301": 2}', None),  # two spellings of é are two keys (JSON compares code points)
        ('{"\u00e9": 1, "\\u00e9": 2}', "\u00e9"),  # an escape is the same key
        ("[1, 2]", None),
        ('{"' + "k" * 100 + '": 1, "' + "k" * 100 + '": 2}', "k" * 40),
    ],
)
def test_duplicate_key(text: str, found: str | None) -> None:
    decoded = msgspec.json.decode(text)
    assert duplicate_key(text, decoded) == found
    assert duplicate_key(text.encode(), decoded) == found


def test_request_bodies_with_a_key_twice_are_refused(client: TestClient, kairos: Kairos) -> None:
    _, admin = kairos.store.admin.add_api_key("admin", frozenset({"admin"}), 0)
    _, decide = kairos.store.admin.add_api_key("decide", frozenset({"decide"}), 0)
    cases = [
        ("PUT", "/v1/segments/s", admin, '{"rule": "true", "rule": "false"}'),
        ("PUT", "/v1/offers/o", admin, '{"name": "x", "attributes": {"tier": "a", "tier": "b"}}'),
        ("POST", "/v1/decide", decide, '{"profile": "user_id:u", "channel": "web", "channel": "app"}'),
    ]
    for method, path, key, body in cases:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        r = client.request(method, path, content=body.encode(), headers=headers)
        assert r.status_code == 400, (path, r.text)
        error = r.json()["error"]
        assert (error["code"], error["field"]) == ("duplicate_key", "body"), r.text
        assert "appears twice" in error["message"]
    assert kairos.store.admin.definitions() == []
    ok = '{"rule": "true", "description": "\\":"}'  # a '":' in a string is not a key
    r = client.put("/v1/segments/s", content=ok.encode(), headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 201, r.text


def test_a_command_s_json_argument_with_a_key_twice_is_refused() -> None:
    from kairos.cli._common import json_argument
    from kairos.errors import ValidationError

    with pytest.raises(ValidationError) as caught:
        json_argument('{"rule": "true", "rule": "false"}')
    assert (caught.value.code, caught.value.field) == ("duplicate_key", "body")
    assert json_argument('{"rule": "true"}') == {"rule": "true"}
