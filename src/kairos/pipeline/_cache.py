"""Profiles and identity owners kept between batches, so a batch loads only what it has not seen lately.

The processor is the only writer of derived state while the checkpoint version is the one it committed
last; any other commit (a second processor, ``kairos replay``, a retry) moves the version, and the cache is
dropped. Entries are the states as committed: a batch works on copies (sections and identities are changed
in place during a batch; the section values themselves are never changed, see the projection contract).
"""

from __future__ import annotations

from collections import OrderedDict

from kairos.pipeline.projection import ProfileState
from kairos.store import IdentityKey, TimerRow

__all__ = ["StateCache"]

TimerBook = dict[tuple[str, str], TimerRow]


class StateCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self.version: int | None = None  # the checkpoint version these entries are valid for
        self.profiles: OrderedDict[int, tuple[ProfileState, TimerBook]] = OrderedDict()
        self.owners: dict[IdentityKey, int | None] = {}

    def clear(self) -> None:
        self.version = None
        self.profiles.clear()
        self.owners.clear()

    def valid_for(self, version: int) -> bool:
        if self.version != version:
            self.clear()
            return False
        return True

    def take(self, pk: int) -> tuple[ProfileState, TimerBook] | None:
        found = self.profiles.get(pk)
        if found is None:
            return None
        self.profiles.move_to_end(pk)
        p, timers = found
        return ProfileState(p.pk, p.id, dict(p.sections), set(p.identities), p.merged_into), dict(timers)

    def put(self, profile: ProfileState, timers: TimerBook, version: int) -> None:
        if not self.size:
            return
        profile.new = False
        profile.dirty = set()
        self.profiles[profile.pk] = (profile, timers)
        self.profiles.move_to_end(profile.pk)
        while len(self.profiles) > self.size:
            self.profiles.popitem(last=False)
        self.version = version

    def put_owners(self, owners: dict[IdentityKey, int | None], version: int) -> None:
        if not self.size:
            return
        if len(self.owners) + len(owners) > 4 * self.size:
            self.owners.clear()
        self.owners.update(owners)
        self.version = version
