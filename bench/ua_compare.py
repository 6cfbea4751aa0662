"""Compare user agent parsers on real strings: microseconds per uncached parse, and agreement.

    python bench/ua_compare.py [--repeats 5]

The strings (``bench/data/user_agents.txt``, 500 of them) are a seeded sample of the test cases of uap-core
(github.com/ua-parser/uap-core, ``tests/test_ua.yaml``, ``test_device.yaml``, ``test_os.yaml``; Apache-2.0):
real browsers, apps, phones, tablets and bots. Each figure is the median over ``--repeats`` passes over all
of them with every cache defeated, the spread (min-max) beside it, and its ratio to ``user-agents``.

- ``ua-parser`` 1.x on each backend it offers here: ``ua-parser-rs`` (Rust ``regex``, what Kairos uses),
  ``google-re2``, and pure Python; each followed by Kairos' device classification (``classify``).
- ``user-agents``: ``parse`` then ``is_bot``/``is_tablet``/``is_mobile``/``is_pc`` (it runs ua-parser's
  legacy pure-Python API underneath, whose 200-entry cache is cleared before each string).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

AGENTS = [line for line in (Path(__file__).parent / "data" / "user_agents.txt").read_text().splitlines() if line]


def _ua_parser(backend: str) -> Callable[[str], str | None] | None:
    import ua_parser

    from kairos.context._agent import classify

    if backend == "rs":
        if ua_parser.RegexResolver is None:
            return None
        resolver = ua_parser.RegexResolver(ua_parser.load_lazy_builtins())
    elif backend == "re2":
        if ua_parser.Re2Resolver is None:
            return None
        resolver = ua_parser.Re2Resolver(ua_parser.load_lazy_builtins())
    else:
        resolver = ua_parser.BasicResolver(ua_parser.load_builtins())
    parser = ua_parser.Parser(resolver)

    def parse(ua: str) -> str | None:
        r = parser.parse(ua)
        os = r.os.family if r.os and r.os.family != "Other" else None
        return classify(ua, os, r.device.family if r.device else None)

    return parse


def _user_agents() -> Callable[[str], str | None] | None:
    try:
        import user_agents
        from ua_parser import user_agent_parser
    except ImportError:
        return None
    cache: dict[str, Any] = user_agent_parser._PARSE_CACHE

    def parse(ua: str) -> str | None:
        cache.clear()
        u = user_agents.parse(ua)
        if u.is_bot:
            return "bot"
        if u.is_tablet:
            return "tablet"
        if u.is_mobile:
            return "mobile"
        return "desktop" if u.is_pc else None

    return parse


def _pass(fn: Callable[[str], str | None]) -> float:
    start = time.perf_counter()
    for ua in AGENTS:
        fn(ua)
    return (time.perf_counter() - start) / len(AGENTS) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    candidates = {
        "ua-parser + ua-parser-rs": _ua_parser("rs"),
        "ua-parser + google-re2": _ua_parser("re2"),
        "ua-parser (pure Python)": _ua_parser("basic"),
        "user-agents": _user_agents(),
    }
    print(
        f"{len(AGENTS)} user agents, {args.repeats} repeats; {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}"
    )
    results: dict[str, list[float]] = {}
    answers: dict[str, list[str | None]] = {}
    for name, fn in candidates.items():
        if fn is None:
            print(f"{name:28} not installed, skipped")
            continue
        start = time.perf_counter()
        answers[name] = [fn(ua) for ua in AGENTS]  # warms lazily compiled expressions
        first = time.perf_counter() - start
        results[name] = [_pass(fn) for _ in range(args.repeats)]
        print(f"{name:28} first pass (with set-up) {first:.2f} s")
    base = statistics.median(results["user-agents"]) if "user-agents" in results else None
    print(f"\n{'parser':28} {'µs/parse (median)':>18} {'spread':>18} {'vs user-agents':>15}")
    for name, times in results.items():
        med = statistics.median(times)
        ratio = f"{base / med:.1f}x faster" if base else "-"
        print(f"{name:28} {med:18.1f} {f'{min(times):.1f}-{max(times):.1f}':>18} {ratio:>15}")
    if "user-agents" in answers:
        ref = answers["user-agents"]
        for name, got in answers.items():
            if name != "user-agents":
                same = sum(a == b for a, b in zip(got, ref, strict=True))
                print(f"device class agrees with user-agents: {name}: {same}/{len(ref)}")
    from kairos.context._agent import parse_agent

    def cached(ua: str) -> str | None:
        agent = parse_agent(ua)
        return agent.device_class if agent else None

    _pass(cached)
    hit = min(_pass(cached) for _ in range(3))
    print(f"Kairos parse_agent once cached: {hit:.2f} µs per call")


if __name__ == "__main__":
    main()
