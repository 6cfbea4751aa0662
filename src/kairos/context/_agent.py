"""User agent strings → device class, operating system and browser.

Parsing uses ``ua-parser`` (uap-core's regular expressions) on its Rust backend, ``ua-parser-rs``
(``docs/decisions.md`` has the measurements against ``user-agents``). One parse still costs tens of
microseconds and the same few hundred strings make most traffic, so answers are kept in a bounded LRU
cache: the function is pure, so the cache can never answer wrongly.

uap-core names the device, not its class, so the class is decided here, in this order:

1. ``bot``: uap-core's device family ``Spider`` (crawlers, monitors, link previews);
2. ``tablet``: an iPad, Kindle or other known tablet family, ``Tablet`` in the string, or Android without
   ``Mobile`` (Android tablets leave it out, as Google asks);
3. ``mobile``: ``Mobi`` in the string (MDN's advice), a phone family, a mobile operating system, or a
   feature phone's marks (``MIDP``, ``WAP``, ``BlackBerry``, ...);
4. ``desktop``: a desktop operating system (Windows, macOS, Linux, Chrome OS, BSD).

Anything else is unknown (None). An iPad on iPadOS 13 or later sends the same string as a Mac's Safari and
is therefore ``desktop``: no parser can tell them apart from the string alone.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

__all__ = ["MAX_AGENT", "Agent", "parse_agent"]

MAX_AGENT = 1024  # real user agents are shorter; a longer one is cut before it is parsed or cached

_TABLETS = ("iPad", "Kindle", "Galaxy Tab", "Xoom", "Nexus 7", "Nexus 9", "Nexus 10", "BlackBerry Playbook")
# Feature phones and old smartphones: Java ME profiles, WAP browsers, BlackBerry and Windows CE handsets.
_PHONE_TOKENS = ("MIDP", "J2ME", "WAP", "BlackBerry", "Windows CE", "Symbian", "Opera Mini")
_PHONES = frozenset({"iPhone", "iPod", "Generic Smartphone", "Generic Feature Phone"})
_MOBILE_OS = frozenset(
    {
        "iOS", "Android", "Windows Phone", "Windows Mobile", "Windows CE", "BlackBerry OS", "BlackBerry Tablet OS",
        "Symbian OS", "Symbian^3", "KaiOS", "Firefox OS", "Tizen", "Sailfish", "webOS", "Bada", "MeeGo", "Maemo",
        "HarmonyOS",
    }
)  # fmt: skip
_DESKTOP_OS = frozenset(
    {
        "Windows", "Mac OS X", "Mac OS", "Linux", "Ubuntu", "Debian", "Fedora", "Red Hat", "SUSE", "Mint",
        "Gentoo", "Arch Linux", "Chrome OS", "ChromeOS", "FreeBSD", "OpenBSD", "NetBSD", "Solaris",
    }
)  # fmt: skip


class Agent(msgspec.Struct, frozen=True):
    device_class: str | None = None  # mobile | tablet | desktop | bot
    os: str | None = None
    browser: str | None = None


@functools.cache
def _parser() -> Any:
    import ua_parser

    if ua_parser.RegexResolver is not None:  # the Rust backend, when its wheel installed
        return ua_parser.Parser(ua_parser.RegexResolver(ua_parser.load_lazy_builtins()))
    return ua_parser.Parser(ua_parser.BestAvailableResolver(ua_parser.load_builtins()))


def _known(family: str | None) -> str | None:
    return family if family and family != "Other" else None


def classify(ua: str, os: str | None, device: str | None) -> str | None:
    """The device class from the parsed families (see the module docstring for the order)."""
    if device == "Spider":
        return "bot"
    if (device and device.startswith(_TABLETS)) or "Tablet" in ua or "iPad" in ua:
        return "tablet"
    if os == "Android" and "Mobile" not in ua and "Mobi" not in ua:
        return "tablet"
    if "Mobi" in ua or device in _PHONES or os in _MOBILE_OS or any(t in ua for t in _PHONE_TOKENS):
        return "mobile"
    if os in _DESKTOP_OS or (os is not None and os.startswith("Windows")) or "Windows NT" in ua:
        return "desktop"
    return None


@functools.lru_cache(maxsize=20_000)
def _parse(ua: str) -> Agent | None:
    result = _parser().parse(ua)
    os = _known(result.os.family if result.os else None)
    browser = _known(result.user_agent.family if result.user_agent else None)
    device = result.device.family if result.device else None
    agent = Agent(classify(ua, os, device), os, browser)
    return agent if agent != Agent() else None


def parse_agent(value: object) -> Agent | None:
    """Device class, operating system and browser family of a user agent string; None when nothing is
    known. Never raises: a non-string, an empty string or one holding NUL is unknown."""
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        return None
    return _parse(value[:MAX_AGENT])
