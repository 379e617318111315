"""The current history of each user, stored once as a block of rows: what history BM25,
item embeddings and collaborative retrieval index and restrict their scores to."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence

import numpy as np

from personarag.types import Document, User

UserKey = tuple[str, tuple[str, ...], tuple[str | None, ...], tuple[str, ...]]

_ID, _TITLE, _TEXT = (operator.attrgetter(name) for name in ("id", "title", "text"))


def user_key(user: User) -> UserKey:
    """A user's id and history content (item ids, titles, texts: an edited text is another
    history); three flat tuples, not one per item, keep it cheap to build and hash."""
    return _key(user.id, user.history)


def _key(user_id: str, history: Sequence[Document]) -> UserKey:
    return (user_id, tuple(map(_ID, history)), tuple(map(_TITLE, history)), tuple(map(_TEXT, history)))


def same_history(a: Sequence[Document], b: Sequence[Document]) -> bool:
    """Equal item ids, titles and texts, in order (the same object: no comparing)."""
    return a is b or _key("", a) == _key("", b)


class ProfileStore:
    """Users' histories, each stored once as a block of rows; `rows(user)` is its block.

    `replace=True` (history retrieval): one history per user id. A user id that comes with
    another history (an item added, removed or edited) gets a new block and its old block is
    retired: dead rows are dropped by `compact` (run by `add` once they outnumber the live
    ones), and every dependent index (BM25 postings, item embeddings) applies the same
    renumbering (`remap_since`) instead of rebuilding anything.
    `replace=False` (the default; collaborative retrieval, whose pool and queries may carry
    different histories under one id, e.g. train and dev profiles): every distinct history
    of an id is kept, side by side, and none is ever retired."""

    def __init__(self, replace: bool = False) -> None:
        self.replace = replace
        self.items: list[Document] = []
        self.owners: list[str] = []  # user id of each row
        self.starts: list[int] = [0]  # block b holds rows starts[b]:starts[b + 1]
        self.block_users: list[str] = []  # user id of each block
        # user id -> its live histories: (block, the history object stored, its content key);
        # content is compared, never hashed, so a history seen again costs one pass over it
        self._users: dict[str, list[tuple[int, tuple[Document, ...], UserKey | None]]] = {}
        self.dead_rows = 0
        self.generation = 0  # compactions so far
        self._remaps: list[tuple[np.ndarray, np.ndarray]] = []  # per compaction: (block map, kept rows)

    def __len__(self) -> int:
        """Rows of the live histories."""
        return len(self.items) - self.dead_rows

    def __contains__(self, user: User) -> bool:
        return self._find(user) is not None

    @property
    def n_blocks(self) -> int:
        return len(self.starts) - 1

    def _find(self, user: User, key: UserKey | None = None) -> int | None:
        """The block of exactly this history, if it is live."""
        versions = self._users.get(user.id, ())
        for block, history, _ in versions:
            if history is user.history:
                return block
        if versions:
            key = user_key(user) if key is None else key
            for position, (block, history, stored) in enumerate(versions):
                if stored is None:  # keys are built when first compared, not when stored
                    stored = _key(user.id, history)
                    versions[position] = (block, history, stored)
                if stored == key:
                    return block
        return None

    def add(self, users: Iterable[User]) -> int:
        """Store each user's history unless it is stored already; returns how many rows were added."""
        before = len(self.items)
        for user in users:
            self._put(user)
        self._compact_if_mostly_dead()
        return len(self.items) - before

    def _put(self, user: User) -> int:
        """The block of the user's history, appended if new (in `replace` mode retiring the
        user's previous block)."""
        versions = self._users.setdefault(user.id, [])
        for block, history, _ in versions:
            if history is user.history:
                return block
        key = None
        if versions:
            key = user_key(user)
            found = self._find(user, key)
            if found is not None:
                return found
        if self.replace:
            for block, _, _ in versions:
                self.dead_rows += self.starts[block + 1] - self.starts[block]
            versions.clear()
        block = len(self.starts) - 1
        self.items.extend(user.history)
        self.owners.extend([user.id] * len(user.history))
        versions.append((block, user.history, key))
        self.block_users.append(user.id)
        self.starts.append(len(self.items))
        return block

    def _compact_if_mostly_dead(self) -> None:
        if self.dead_rows > max(len(self), 1024):
            self.compact()

    def block(self, user: User) -> int:
        """The user's block number, storing the history first if it is new."""
        block = self._find(user)
        if block is None:
            self.add([user])
            block = self._find(user)
        return block  # type: ignore[return-value]

    def blocks(self, users: Sequence[User]) -> list[int | None]:
        """Block numbers of the users' histories, storing the new ones first; None for a
        history that a later user of the same id in `users` replaced (`replace` mode: score
        such a batch in rounds, one history per user id each)."""
        found: list[int | None] = [self._put(u) for u in users]
        generation = self.generation
        self._compact_if_mostly_dead()
        if self.generation != generation:
            return [self._find(u) for u in users]
        if not self.replace:
            return found
        live = self._users
        return [b if any(v[0] == b for v in live[u.id]) else None for u, b in zip(users, found)]

    def current(self, block: int) -> tuple[str, tuple[Document, ...]] | None:
        """(user id, the history stored) of a live block; None for a retired one."""
        user_id = self.block_users[block]
        for live, history, _ in self._users.get(user_id, ()):
            if live == block:
                return user_id, history
        return None

    def rows(self, user: User) -> slice:
        block = self.block(user)
        return slice(self.starts[block], self.starts[block + 1])

    def compact(self) -> None:
        """Drop the rows of retired blocks, keeping the order of the rest."""
        if not self.dead_rows:
            return
        live = sorted(b for versions in self._users.values() for b, _, _ in versions)
        block_map = np.full(self.n_blocks, -1, dtype=np.int64)
        block_map[live] = np.arange(len(live))
        starts = np.asarray(self.starts, dtype=np.int64)
        sizes = np.diff(starts)[live]
        kept = np.repeat(starts[live] - (np.cumsum(sizes) - sizes), sizes) + np.arange(int(sizes.sum()))
        self.items = [self.items[i] for i in kept.tolist()]
        self.owners = [self.owners[i] for i in kept.tolist()]
        self.starts = [0, *np.cumsum(sizes).tolist()]
        self._users = {
            uid: [(int(block_map[b]), history, key) for b, history, key in versions]
            for uid, versions in self._users.items()
        }
        self.block_users = [self.block_users[b] for b in live]
        self.dead_rows = 0
        self._remaps.append((block_map, kept))
        self.generation += 1

    def remap_since(self, generation: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(new block number of each block of `generation`, -1 if dropped; the old row of each
        row now) composed over the compactions since; None if there were none."""
        if generation == self.generation:
            return None
        block_map, kept = self._remaps[generation]
        for later_blocks, later_rows in self._remaps[generation + 1:]:
            block_map = np.where(block_map >= 0, later_blocks[np.maximum(block_map, 0)], -1)
            kept = kept[later_rows]
        return block_map, kept
