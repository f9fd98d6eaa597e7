"""The hub's crash-safe journal: accepted messages and session state in SQLite (WAL).

With ``latentwire hub --journal FILE`` the hub writes, before it acknowledges a publish, the
message (envelope header and payload) and one delivery row per session it was queued for.
A delivery row goes when its session acknowledges the delivery; a message goes with its last
delivery. Sessions (id, agent, filters, next delivery sequence) are kept until the agent says
bye or its session expires. On restart the hub rebuilds every session from the journal and
redelivers what was not acknowledged, with the same sequence numbers; a resuming client gets
it again and the SDK drops any it had already handled (dedup by message id).

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``. An ack promises the message
survives, and in WAL mode only FULL fsyncs the log at each commit; NORMAL survives a killed
process but can lose the last commits on power loss or an OS crash. The cost of fsync is paid
once per batch, not per message: every database call runs on one writer thread, which takes
all operations submitted since its last commit and commits them in one transaction (group
commit), so the publishes that arrive together share one fsync.

Ordering: the hub submits operations from the event loop without waiting (`Journal.save_session`,
`Journal.add_message`, ...) and the writer applies them in submission order. A publish is acked
from a `Journal.when_synced` callback, i.e. once everything submitted before it is committed;
the hub routes the next publish meanwhile, so one producer's stream of publishes is committed in
batches too. A delivery is submitted the moment it is queued, so its ack (which can only come
after it was sent) is always applied after it.

One hub per file: the journal holds an exclusive lock while open (``locking_mode=EXCLUSIVE``),
so a second hub on the same file is refused, and a hub that died leaves no lock behind.

More than one file: while the hub runs, recent commits live only in ``FILE-wal``. The writer
checkpoints them into ``FILE`` every `CHECKPOINT_INTERVAL` seconds and at close, and the main
file records whether the hub stopped cleanly (``meta`` row ``shutdown``: ``running`` from open,
``clean`` at close) and the journal's commit count. At open, a journal whose hub did not stop
cleanly and whose ``FILE-wal`` is gone, or a ``FILE-wal`` that SQLite would replay only in
part (`latentwire.hub.wal`), is refused with `JournalError` naming the file, since SQLite
would silently start without the messages acknowledged since the last checkpoint;
``recover=True`` (``--journal-recover``) starts anyway, with a warning.

Retention: ``max_age`` (seconds) and ``max_bytes`` (stored header + payload bytes) bound what
the journal keeps; the oldest messages go first, and a warning says how many messages and
deliveries were dropped. Retention limits what survives a restart; a running hub still delivers
what it holds in memory (bounded by the session limits).

Without ``--journal`` the hub holds a `NullJournal`: the same calls, storing nothing, so the hub
calls its journal unconditionally and acknowledges each publish as soon as it is routed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from latentwire._message import is_expired
from latentwire._proto import bus_pb2 as pb
from latentwire._wire import Payload
from latentwire.errors import LatentwireError

from .wal import inspect_wal

log = logging.getLogger("latentwire.hub.journal")

APPLICATION = "latentwire-hub-journal"
SCHEMA_VERSION = "1"
RETENTION_INTERVAL = 1.0  # seconds between retention checks on the writer thread
# Seconds between checkpoints of the WAL into the main file (when something was committed):
# what a lost or damaged FILE-wal can take with it.
CHECKPOINT_INTERVAL = 1.0
BATCH_BYTES = 32 * 1024 * 1024  # message bytes per transaction, at most (one always fits)
WAL_LIMIT_BYTES = 64 * 1024 * 1024  # the WAL file is truncated to this after a checkpoint
PAGE_SIZE = 65536  # bytes per database page (new files); see _open_db
CACHE_KIB = 16 * 1024  # SQLite's page cache (its default, 2 MiB, is 32 pages of this size)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, agent TEXT NOT NULL, filters TEXT NOT NULL, next_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, created REAL NOT NULL, size INTEGER NOT NULL,
    header BLOB NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    session TEXT NOT NULL, seq INTEGER NOT NULL, message INTEGER NOT NULL,
    PRIMARY KEY (session, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_by_message ON deliveries (message);
"""


class JournalError(LatentwireError):
    """The journal file cannot be opened, is not a latentwire journal, is corrupt, or a write
    failed; the message names the file and the cause."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"journal {path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass(slots=True)
class SavedDelivery:
    """A delivery a session had not acknowledged when the journal was last written."""

    seq: int
    envelope: pb.Envelope
    payload: bytes
    size: int


@dataclass
class SavedSession:
    """A session as the journal kept it, with its unacknowledged deliveries in order."""

    id: str
    agent: str
    filters: list[str]
    next_seq: int
    deliveries: list[SavedDelivery] = field(default_factory=list)


@dataclass
class JournalStats:
    """What the journal holds and has done since it was opened (for logs and metrics)."""

    messages: int = 0  # stored messages
    stored_bytes: int = 0  # their header + payload bytes
    commits: int = 0  # transactions committed
    committed_ops: int = 0  # operations in them
    dropped_messages: int = 0  # removed by retention
    restored_sessions: int = 0
    restored_deliveries: int = 0


class PendingMessage:
    """One publish on its way into the journal: its row is written with its first delivery,
    so a message routed to no session is not stored at all."""

    __slots__ = ("_journal", "_envelope", "_payload", "_size", "_key")

    def __init__(self, journal: Journal, envelope: pb.Envelope, payload: Payload, size: int) -> None:
        self._journal = journal
        self._envelope = envelope
        self._payload = payload
        self._size = size
        self._key = 0

    def delivered(self, session_id: str, seq: int) -> None:
        """The message was queued for ``session_id`` as delivery ``seq``."""
        journal = self._journal
        if not self._key:
            self._key = journal._next_key
            journal._next_key += 1
            journal._submit(("message", self._key, time.time(), self._size,
                             self._envelope.SerializeToString(), self._payload))
        journal._submit(("delivery", session_id, seq, self._key))

    @property
    def pending(self) -> bool:
        """Whether something was submitted for this message (it was queued somewhere)."""
        return bool(self._key)


class Journal:
    """A hub's SQLite journal. Open it with ``await Journal.open(path)``; close with `aclose`.

    Submitting methods never block the event loop; `sync` waits for the writer thread.
    """

    #: Accepted messages and sessions survive a crash or restart (`NullJournal`: they do not).
    durable = True

    def __init__(self, path: str | Path, *, max_age: float | None = None,
                 max_bytes: int | None = None, recover: bool = False) -> None:
        for name, value in (("max_age", max_age), ("max_bytes", max_bytes)):
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise JournalError(path, f"{name} must be a positive number or None, got {value!r}")
        self.path = Path(path)
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.recover = recover  # open even when FILE-wal is missing or damaged (see `_check_wal`)
        self._commits = 0  # transactions committed over the journal's life (writer thread)
        self._checkpointed = 0  # ... of which the last checkpoint folded into the main file
        self._last_checkpoint = 0.0
        self.stats = JournalStats()
        self.restored: list[SavedSession] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._db: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        # Operations waiting for the writer. Not capped here because the hub caps what feeds
        # it: each pending message or delivery is also held in a session's queue (bounded by
        # the session limits), an ack frees one of those, and a producer gets no more publish
        # credit until the commit acknowledges its publishes.
        self._ops: deque[tuple] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._submitted = 0  # operations submitted (event-loop side)
        self._committed = 0  # operations known committed (event-loop side)
        self._waiters: deque[tuple[int, Callable[[JournalError | None], None]]] = deque()
        self._error: JournalError | None = None
        self._next_key = 1
        self._last_retention = 0.0

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path, *, max_age: float | None = None,
                   max_bytes: int | None = None, recover: bool = False) -> Journal:
        """Open (or create) the journal at ``path`` and load what it kept into `restored`.

        Raises `JournalError` naming the file if it cannot be opened or written, is not a
        latentwire journal, or holds a corrupt row, and naming ``FILE-wal`` when the hub did not
        stop cleanly and that file is missing or damaged (``recover=True``: open anyway, warn).
        """
        journal = cls(path, max_age=max_age, max_bytes=max_bytes, recover=recover)
        journal._loop = asyncio.get_running_loop()
        ready: concurrent.futures.Future = concurrent.futures.Future()
        journal._thread = threading.Thread(target=journal._writer, args=(ready,),
                                           name=f"latentwire-journal[{journal.path.name}]", daemon=True)
        journal._thread.start()
        await asyncio.wrap_future(ready)  # raises the open/load error, after the thread ended
        s = journal.stats
        log.info("journal %s: %d sessions and %d unacknowledged deliveries restored (%d messages, "
                 "%d bytes)", journal.path, s.restored_sessions, s.restored_deliveries, s.messages,
                 s.stored_bytes)
        return journal

    async def aclose(self) -> None:
        """Commit what was submitted, then close the database (idempotent)."""
        if self._thread is None:
            return
        with self._cond:
            self._closing = True
            self._cond.notify()
        thread, self._thread = self._thread, None
        await asyncio.to_thread(thread.join)
        self._settle(self._submitted, self._error)
        if self._error is None:
            self._error = JournalError(self.path, "journal is closed")

    @property
    def pending(self) -> int:
        """Operations submitted but not yet committed (the journal's lag)."""
        return self._submitted - self._committed

    # -- submitting (event loop) -------------------------------------------------------------

    def save_session(self, session_id: str, agent: str, filters: set[str] | list[str]) -> None:
        """Create or update a session's row (its agent and subscription filters)."""
        self._submit(("session", session_id, agent, json.dumps(sorted(filters))))

    def forget_session(self, session_id: str) -> None:
        """The session ended for good (bye or expiry): drop it and its deliveries."""
        self._submit(("forget", session_id))

    def add_message(self, envelope: pb.Envelope, payload: Payload, size: int) -> PendingMessage:
        """Start storing a published message; call `PendingMessage.delivered` per queued copy."""
        return PendingMessage(self, envelope, payload, size)

    def ack(self, session_id: str, seqs: list[int]) -> None:
        """The session acknowledged these deliveries: they need not survive a restart."""
        if seqs:
            self._submit(("ack", session_id, list(seqs)))

    def seq_used(self, session_id: str, seq: int) -> None:
        """Delivery ``seq`` of the session went out without a row of its own (a group's message,
        stored under the group): after a restart the session numbers its deliveries above it,
        so a late ack of it cannot match a new delivery."""
        self._submit(("seq", session_id, seq))

    def when_synced(self, callback: Callable[[JournalError | None], None]) -> None:
        """Call ``callback(None)`` on the event loop once every operation submitted so far is
        committed, or ``callback(error)`` if the journal failed. Callbacks run in submission
        order, so acks sent from them go out in the order the publishes came in."""
        if self._error is not None:
            callback(self._error)
        elif self._committed >= self._submitted:
            callback(None)
        else:
            self._waiters.append((self._submitted, callback))

    async def sync(self) -> None:
        """Wait until every operation submitted so far is committed; raise `JournalError` if
        the journal failed."""
        fut = self._loop.create_future()

        def settle(error: JournalError | None) -> None:
            if not fut.done():  # the waiting task may have been cancelled
                fut.set_exception(error) if error else fut.set_result(None)

        self.when_synced(settle)
        await fut

    def _submit(self, op: tuple) -> None:
        if self._error is not None:
            return  # failed or closed: `sync` raises, so nothing is acked as stored
        self._submitted += 1
        with self._cond:
            self._ops.append(op)
            self._cond.notify()

    def _settle(self, committed: int, error: JournalError | None) -> None:
        """Event-loop side of a commit (or a failure): wake the `sync` callers it covers."""
        self._committed = max(self._committed, committed)
        if error is not None and self._error is None:
            self._error = error
            log.error("%s; publishes are refused until the hub restarts", error)
        while self._waiters and (self._error is not None or self._waiters[0][0] <= self._committed):
            _, callback = self._waiters.popleft()
            callback(self._error)

    # -- writer thread ------------------------------------------------------------------------

    def _writer(self, ready: concurrent.futures.Future) -> None:
        try:
            self._check_wal()  # before SQLite touches FILE-wal (closing it would delete it)
            self._open_db()
            self._count()
            self._retain(time.time())  # before loading: what it drops is not replayed
            self._load()
            self._mark("running")  # until `_write_loop` ends cleanly
        except JournalError as exc:
            self._close_db()
            ready.set_exception(exc)
            return
        except sqlite3.Error as exc:
            self._close_db()
            ready.set_exception(self._explain(exc))
            return
        except Exception as exc:  # e.g. an OSError from the filesystem
            self._close_db()
            ready.set_exception(JournalError(self.path, f"cannot open: {exc}"))
            return
        ready.set_result(None)
        try:
            self._write_loop()
        finally:
            self._close_db()

    def _write_loop(self) -> None:
        done = 0
        failed = False  # after a failed write nothing more is applied: the hub refuses publishes
        while True:
            with self._cond:
                while not self._ops and not self._closing:
                    self._cond.wait(RETENTION_INTERVAL)
                    if time.time() - self._last_retention >= RETENTION_INTERVAL:
                        break
                ops = self._take_batch()
                closing = self._closing and not self._ops
            error = None
            if ops:
                try:
                    if failed:
                        raise RuntimeError("an earlier write failed")
                    self._apply(ops)
                except Exception as exc:  # disk full, I/O error, ...: refuse, never ack
                    error = JournalError(self.path, f"write failed: {exc}")
                    failed = True
            done += len(ops)
            if ops:
                self._loop.call_soon_threadsafe(self._settle, done, error)
            now = time.time()
            if not failed and now - self._last_retention >= RETENTION_INTERVAL:
                try:
                    self._retain(now)
                except sqlite3.Error as exc:
                    log.error("journal %s: retention failed: %s", self.path, exc)
            if (not failed and self._commits != self._checkpointed
                    and now - self._last_checkpoint >= CHECKPOINT_INTERVAL):
                try:
                    self._checkpoint("PASSIVE")
                except sqlite3.Error as exc:
                    log.error("journal %s: checkpoint failed: %s", self.path, exc)
            if closing and not ops:
                try:
                    self._mark("clean")
                except sqlite3.Error as exc:
                    log.error("journal %s: could not record a clean stop: %s", self.path, exc)
                return

    def _take_batch(self) -> deque[tuple]:
        """The next transaction: everything waiting, up to about `BATCH_BYTES` of messages (so
        a burst of large payloads does not become one huge transaction and WAL file)."""
        ops: deque[tuple] = deque()
        budget = BATCH_BYTES
        while self._ops and budget > 0:
            op = self._ops.popleft()
            if op[0] == "message":
                budget -= op[3]
            ops.append(op)
        return ops

    def _check_wal(self) -> None:
        """Refuse a journal that would open without acknowledged messages: its hub did not stop
        cleanly and FILE-wal is gone, or SQLite would replay FILE-wal only in part."""
        wal = Path(f"{self.path}-wal")
        shutdown, commits = self._main_file_marker()
        report = inspect_wal(wal)
        if report.damage:
            problem = f"{wal.name} is damaged: {report.damage}"
        elif shutdown == "running" and not report.exists:
            problem = (f"the hub did not stop cleanly and {wal.name} is missing: the main file holds "
                       f"the journal up to commit {commits}, and what was acknowledged after that was "
                       f"only in {wal.name}")
        else:
            if shutdown == "running":
                log.warning("journal %s: the hub did not stop cleanly; recovering %d transactions "
                            "from %s", self.path, report.commits, wal.name)
            return
        if not self.recover:
            raise JournalError(self.path, f"{problem}. Put back the {wal.name} that belongs with "
                                          "this file (same disk or backup), or start with "
                                          "--journal-recover to accept losing those messages")
        log.warning("journal %s: %s; --journal-recover: starting from what is left, acknowledged "
                    "messages may be lost", self.path, problem)

    def _main_file_marker(self) -> tuple[str | None, int]:
        """The main file's own ``shutdown`` and ``commits`` rows, read without the WAL (immutable
        and read-only, so nothing is replayed, written or deleted); (None, 0) when it has none."""
        if not self.path.is_file():
            return None, 0
        try:
            ro = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
            try:
                rows = dict(ro.execute("SELECT key, value FROM meta WHERE key IN ('shutdown', 'commits')"))
            finally:
                ro.close()
            return rows.get("shutdown"), int(rows.get("commits") or 0)
        except (sqlite3.Error, ValueError):
            return None, 0  # not a journal (yet): `_open_db` says what is wrong

    def _mark(self, shutdown: str) -> None:
        """Record in the main file whether the hub is running (a crash leaves ``running``)."""
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('shutdown', ?)", (shutdown,))
        self._checkpoint("TRUNCATE")

    def _checkpoint(self, mode: str) -> None:
        """Fold the WAL into the main file (``PASSIVE``; ``TRUNCATE`` also empties the WAL)."""
        self._db.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        self._checkpointed = self._commits
        self._last_checkpoint = time.time()

    def _open_db(self) -> None:
        if self.path.is_dir():
            raise JournalError(self.path, "is a directory, not a journal file")
        try:
            # A short busy timeout: the only other writer would be a second hub on this file.
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=1.0)
        except sqlite3.Error as exc:
            raise JournalError(self.path, f"cannot open: {exc} (does the directory exist and is "
                                          "it writable?)") from exc
        self._db = db
        # One hub per journal: the first write takes a lock held until the file is closed (or
        # the process dies), so a second hub on the same file is refused instead of
        # interleaving sessions with the first. WAL then needs no shared-memory file.
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        # Payloads are blobs of kilobytes to megabytes (latents): 64 KiB pages mean 16x fewer
        # overflow pages to write and check-point per message than the default 4 KiB (what it
        # bought: docs/benchmarks.md, bench journal). Takes effect only when the file is created.
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise JournalError(self.path, f"cannot switch to WAL mode (got {mode!r})")
        db.execute("PRAGMA synchronous=FULL")  # see the module docstring
        db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise JournalError(self.path, "is a SQLite database but not a latentwire journal "
                                          f"(it has tables {sorted(tables)}); pass another --journal file")
        db.execute("BEGIN IMMEDIATE")  # also proves the file is writable
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        meta = dict(db.execute("SELECT key, value FROM meta"))
        if not meta:
            db.executemany("INSERT INTO meta VALUES (?, ?)",
                           [("application", APPLICATION), ("schema", SCHEMA_VERSION)])
        elif meta.get("application") != APPLICATION:
            raise JournalError(self.path, "is not a latentwire journal "
                                          f"(application={meta.get('application')!r})")
        elif meta.get("schema") != SCHEMA_VERSION:
            raise JournalError(self.path, f"has journal schema {meta.get('schema')!r}; this hub "
                                          f"reads schema {SCHEMA_VERSION!r}")
        db.execute("COMMIT")
        self._commits = self._checkpointed = int(meta.get("commits") or 0)

    def _close_db(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error as exc:
                log.error("journal %s: close failed: %s", self.path, exc)
            self._db = None

    def _explain(self, exc: sqlite3.Error) -> JournalError:
        text = str(exc)
        if "not a database" in text or "malformed" in text:
            return JournalError(self.path, f"file is corrupt or not a SQLite database ({text}); "
                                           "move it away to start with an empty journal")
        if "locked" in text:
            return JournalError(self.path, f"is in use ({text}); is another hub running with this journal?")
        if "readonly" in text or "unable to open" in text:
            return JournalError(self.path, f"cannot write ({text}); check the file's permissions")
        return JournalError(self.path, text)

    def _load(self) -> None:
        db = self._db
        now_ns = time.time_ns()
        sessions: dict[str, SavedSession] = {}
        agents: set[str] = set()
        for sid, agent, filters, next_seq in db.execute(
                "SELECT id, agent, filters, next_seq FROM sessions ORDER BY rowid"):
            try:
                parsed = json.loads(filters)
                if not isinstance(parsed, list) or not all(isinstance(f, str) for f in parsed):
                    raise ValueError("not a list of strings")
            except ValueError as exc:
                raise JournalError(self.path,
                                   f"session {sid!r} has corrupt filters {filters!r}: {exc}") from exc
            if agent in agents:
                log.warning("journal %s: a second session for agent %r (%s) is ignored",
                            self.path, agent, sid)
                continue
            agents.add(agent)
            sessions[sid] = SavedSession(sid, agent, parsed, next_seq)
        expired: list[tuple[str, int]] = []
        rows = db.execute("SELECT d.session, d.seq, m.id, m.header, m.payload, m.size FROM deliveries d "
                          "JOIN messages m ON m.id = d.message ORDER BY d.session, d.seq")
        for sid, seq, mid, header, payload, size in rows:
            saved = sessions.get(sid)
            if saved is None:
                expired.append((sid, seq))  # its session is gone (forget lost in a crash)
                continue
            try:
                env = pb.Envelope.FromString(header)
            except DecodeError as exc:
                raise JournalError(self.path, f"message row {mid} has a corrupt envelope header "
                                              f"({exc}); move the file away to start empty") from exc
            if is_expired(env, now_ns):
                expired.append((sid, seq))
                continue
            saved.deliveries.append(SavedDelivery(seq, env, payload, size))
            saved.next_seq = max(saved.next_seq, seq + 1)
        db.execute("BEGIN IMMEDIATE")
        db.executemany("DELETE FROM deliveries WHERE session = ? AND seq = ?", expired)
        # Messages no session still needs (their acks were committed, the message delete was
        # not: e.g. a session forgotten before a crash).
        db.execute("DELETE FROM messages WHERE id NOT IN (SELECT message FROM deliveries)")
        db.execute("COMMIT")
        self._count()
        self.restored = list(sessions.values())
        self.stats.restored_sessions = len(self.restored)
        self.stats.restored_deliveries = sum(len(s.deliveries) for s in self.restored)

    def _count(self) -> None:
        count, total, last = self._db.execute(
            "SELECT count(*), total(size), max(id) FROM messages").fetchone()
        self.stats.messages, self.stats.stored_bytes = count, int(total)
        self._next_key = max(self._next_key, (last or 0) + 1)

    def _apply(self, ops: deque[tuple]) -> None:
        """Apply a batch of operations in one transaction (one fsync)."""
        db = self._db
        freed: set[int] = set()  # messages that may have lost their last delivery
        highest: dict[str, int] = {}
        added = added_bytes = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                kind = op[0]
                if kind == "delivery":
                    _, sid, seq, key = op
                    db.execute("INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?)", (sid, seq, key))
                    if seq > highest.get(sid, 0):
                        highest[sid] = seq
                elif kind == "message":
                    _, key, created, size, header, payload = op
                    db.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?)",
                               (key, created, size, header, payload))
                    added += 1
                    added_bytes += size
                elif kind == "ack":
                    _, sid, seqs = op
                    for seq in seqs:
                        row = db.execute("DELETE FROM deliveries WHERE session = ? AND seq = ? "
                                         "RETURNING message", (sid, seq)).fetchone()
                        if row is not None:
                            freed.add(row[0])
                elif kind == "session":
                    _, sid, agent, filters = op
                    db.execute("INSERT INTO sessions VALUES (?, ?, ?, 1) ON CONFLICT (id) DO UPDATE "
                               "SET agent = excluded.agent, filters = excluded.filters",
                               (sid, agent, filters))
                elif kind == "seq":
                    _, sid, seq = op
                    if seq > highest.get(sid, 0):
                        highest[sid] = seq
                elif kind == "forget":
                    sid = op[1]
                    freed.update(r[0] for r in db.execute(
                        "DELETE FROM deliveries WHERE session = ? RETURNING message", (sid,)).fetchall())
                    db.execute("DELETE FROM sessions WHERE id = ?", (sid,))
                    highest.pop(sid, None)
            # Sequence numbers keep rising across restarts even when every delivery was acked,
            # so a late ack of an old delivery can never match a new one.
            db.executemany("UPDATE sessions SET next_seq = max(next_seq, ?) WHERE id = ?",
                           [(seq + 1, sid) for sid, seq in highest.items()])
            commits = self._commits + 1  # in the same transaction: the main file has it at checkpoints
            db.execute("INSERT OR REPLACE INTO meta VALUES ('commits', ?)", (str(commits),))
            removed = removed_bytes = 0
            for key in freed:
                row = db.execute("DELETE FROM messages WHERE id = ? AND NOT EXISTS "
                                 "(SELECT 1 FROM deliveries WHERE message = ?) RETURNING size",
                                 (key, key)).fetchone()
                if row is not None:
                    removed += 1
                    removed_bytes += row[0]
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._commits = commits
        s = self.stats
        s.messages += added - removed
        s.stored_bytes += added_bytes - removed_bytes
        s.commits += 1
        s.committed_ops += len(ops)

    def _retain(self, now: float) -> None:
        """Drop the oldest messages beyond ``max_age`` / ``max_bytes``, and say so."""
        self._last_retention = now
        db = self._db
        cutoff = 0  # drop messages with id <= cutoff
        reasons = []
        oldest = db.execute("SELECT created FROM messages ORDER BY id LIMIT 1").fetchone()
        if self.max_age is not None and oldest is not None and oldest[0] < now - self.max_age:
            # Only scanned when the oldest message is too old, not every second.
            cutoff = db.execute("SELECT max(id) FROM messages WHERE created < ?",
                                (now - self.max_age,)).fetchone()[0]
            reasons.append(f"older than max_age={self.max_age:g} s")
        if self.max_bytes is not None and self.stats.stored_bytes > self.max_bytes:
            excess = self.stats.stored_bytes - self.max_bytes
            size_cutoff = 0
            for key, size in db.execute("SELECT id, size FROM messages ORDER BY id"):
                excess -= size
                size_cutoff = key
                if excess <= 0:
                    break
            if size_cutoff > cutoff:
                cutoff = size_cutoff
            reasons.append(f"to stay under max_bytes={self.max_bytes}")
        if not cutoff:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            lost = db.execute("DELETE FROM deliveries WHERE message <= ? RETURNING session",
                              (cutoff,)).fetchall()
            count, total = db.execute("SELECT count(*), total(size) FROM messages WHERE id <= ?",
                                      (cutoff,)).fetchone()
            db.execute("DELETE FROM messages WHERE id <= ?", (cutoff,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.stats.messages -= count
        self.stats.stored_bytes -= int(total)
        self.stats.dropped_messages += count
        if count:
            log.warning("journal %s: retention dropped %d messages (%d bytes) %s; %d undelivered "
                        "copies for %d sessions will not survive a restart", self.path, count, int(total),
                        " and ".join(reasons), len(lost), len({r[0] for r in lost}))


__all__ = ["Journal", "JournalError", "JournalStats", "PendingMessage", "SavedDelivery", "SavedSession"]


class _Unstored:
    """A message a `NullJournal` was given: nothing is submitted, so nothing is pending."""

    __slots__ = ()
    pending = False

    def delivered(self, session_id: str, seq: int) -> None:
        """Nothing to record."""


class NullJournal:
    """The journal of a hub without ``--journal``: `Journal`'s calls, storing nothing.

    Nothing is ever pending, so the hub acknowledges a publish as soon as every target session
    holds it, and a restart begins with no sessions.
    """

    durable = False
    restored: tuple[SavedSession, ...] = ()
    pending = 0

    def save_session(self, session_id: str, agent: str, filters: set[str] | list[str]) -> None:
        """Nothing to store."""

    def forget_session(self, session_id: str) -> None:
        """Nothing to forget."""

    def add_message(self, envelope: pb.Envelope, payload: Payload, size: int) -> _Unstored:
        """A message that will not be stored."""
        return _UNSTORED

    def ack(self, session_id: str, seqs: list[int]) -> None:
        """Nothing to drop."""

    def seq_used(self, session_id: str, seq: int) -> None:
        """Nothing to record."""

    def when_synced(self, callback: Callable[[JournalError | None], None]) -> None:
        """Call ``callback(None)`` at once: there is nothing to wait for."""
        callback(None)

    async def sync(self) -> None:
        """Return at once: there is nothing to wait for."""

    async def aclose(self) -> None:
        """Nothing to close."""


_UNSTORED = _Unstored()
