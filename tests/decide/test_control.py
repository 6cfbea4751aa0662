"""Control-group assignment: deterministic by profile, the configured share, nested and salted."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from kairos.decide.control import bucket, in_control

SUBJECTS = [f"profile-{i}" for i in range(100_000)]


@pytest.mark.parametrize("share", [0.01, 0.1, 0.25, 0.5, 0.9])
def test_the_share_of_many_subjects_is_the_configured_share(share: float) -> None:
    inside = sum(in_control(s, share, "salt") for s in SUBJECTS)
    sigma = math.sqrt(len(SUBJECTS) * share * (1 - share))
    assert abs(inside - share * len(SUBJECTS)) < 4 * sigma


def test_zero_is_never_and_one_is_always() -> None:
    assert not any(in_control(s, 0.0, "salt") for s in SUBJECTS[:1000])
    assert all(in_control(s, 1.0, "salt") for s in SUBJECTS[:1000])
    assert all(in_control(s, 1, "salt") for s in SUBJECTS[:10]) and not in_control("x", 0, "salt")


@pytest.mark.parametrize("share", [-0.01, 1.01, math.nan, math.inf, True, "0.1"])
def test_an_invalid_share_is_refused(share: object) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        in_control("profile-1", share, "salt")  # type: ignore[arg-type]


def test_raising_the_share_only_adds_people() -> None:
    small = {s for s in SUBJECTS[:20_000] if in_control(s, 0.1, "salt")}
    large = {s for s in SUBJECTS[:20_000] if in_control(s, 0.2, "salt")}
    assert small < large


def test_another_salt_draws_independent_groups() -> None:
    a = {s for s in SUBJECTS[:20_000] if in_control(s, 0.5, "one")}
    b = {s for s in SUBJECTS[:20_000] if in_control(s, 0.5, "two")}
    overlap = len(a & b) / 20_000
    assert abs(overlap - 0.25) < 0.02  # independent halves overlap on a quarter


def test_salt_and_subject_are_not_simply_concatenated() -> None:
    assert bucket("c", "ab") != bucket("bc", "a")


def test_assignment_does_not_depend_on_the_process_hash_seed() -> None:
    code = "from kairos.decide.control import bucket; print(repr(bucket('profile-7', 'salt')))"
    seen = {
        subprocess.run(
            [sys.executable, "-c", code], env={"PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True
        ).stdout
        for seed in ("1", "2")
    }
    assert seen == {repr(bucket("profile-7", "salt")) + "\n"}


def test_buckets_are_in_the_unit_interval() -> None:
    values = [bucket(s, "salt") for s in SUBJECTS[:10_000]]
    assert all(0 <= v < 1 for v in values)
    assert min(values) < 0.001 and max(values) > 0.999
