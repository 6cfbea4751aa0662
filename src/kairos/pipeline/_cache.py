"""Profiles and identity owners kept between batches, so a batch loads only what it has not seen lately.

The processor is the only writer of derived state while the checkpoint version is the one it committed
last; any other commit (a second processor, ``kairos replay``, a retry) moves the version, and the cache is
dropped. Entries are the states as committed. A batch takes them out and changes them in place; a batch that
does not commit (an error, a conflict) clears the whole cache, so a state is only ever put back as committed.
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
        """The committed state of ``pk``, removed from the cache until the batch that took it commits."""
        return self.profiles.pop(pk, None)

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
