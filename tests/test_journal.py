"""The hub's journal: what it persists, what a restarted hub replays, retention, bad files."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

import latentwire
from latentwire._proto import bus_pb2 as pb
from latentwire.errors import Unavailable
from latentwire.hub import Hub, HubConfig
from latentwire.hub.journal import Journal, JournalError
from latentwire.hub.server import serve

pytestmark = pytest.mark.timeout(60)


def _envelope(i: int, ttl_ms: int = 0) -> pb.Envelope:
    import time

    return pb.Envelope(id=f"m{i}", topic="t/x", sender="p", created_at_ns=time.time_ns(), ttl_ms=ttl_ms)


async def _store(journal: Journal, session: str, seqs: range, payload: bytes = b"x" * 100,
                 ttl_ms: int = 0) -> None:
    """Store one message per seq, queued for ``session``, and wait until it is committed."""
    for seq in seqs:
        env = _envelope(seq, ttl_ms)
        journal.add_message(env, payload, env.ByteSize() + len(payload)).delivered(session, seq)
    await journal.sync()


async def test_messages_and_sessions_survive_reopen_until_acked(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = await Journal.open(path)
    journal.save_session("s1", "consumer", {"t/#", "a/b"})
    journal.save_session("s2", "gone", {"t/#"})
    await _store(journal, "s1", range(1, 6))
    await _store(journal, "s2", range(1, 3))
    journal.ack("s1", [1, 3])
    journal.forget_session("s2")
    await journal.sync()
    await journal.aclose()

    journal = await Journal.open(path)
    try:
        (saved,) = journal.restored
        assert (saved.id, saved.agent, saved.filters) == ("s1", "consumer", ["a/b", "t/#"])
        assert [d.seq for d in saved.deliveries] == [2, 4, 5]
        assert [d.envelope.id for d in saved.deliveries] == ["m2", "m4", "m5"]
        assert saved.deliveries[0].payload == b"x" * 100
        assert saved.next_seq == 6
        # Acked and forgotten messages are gone from disk, not only hidden.
        assert journal.stats.messages == 3
    finally:
        await journal.aclose()


async def test_sequence_numbers_keep_rising_after_every_delivery_was_acked(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "j.db")
    journal.save_session("s1", "c", set())
    await _store(journal, "s1", range(1, 4))
    journal.ack("s1", [1, 2, 3])
    await journal.aclose()
    journal = await Journal.open(tmp_path / "j.db")
    try:
        assert journal.restored[0].deliveries == [] and journal.restored[0].next_seq == 4
    finally:
        await journal.aclose()


async def test_a_restarted_hub_redelivers_what_was_not_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = await Journal.open(path)
    server = await serve(Hub(journal=journal), port=0)
    try:
        async with latentwire.connect(server.url, agent="c", reconnect_timeout=20) as c, \
                latentwire.connect(server.url, agent="p", reconnect_timeout=20) as p:
            sub = await c.subscribe("t/#")
            for i in range(50):
                await p.publish("t/x", f"m{i}", wait=False)
            await p.flush()  # acknowledged: all 50 are in the journal
            first = [(await sub.receive(timeout=5)).text for _ in range(5)]
            await server.stop(grace=0.1)
            await journal.aclose()

            journal = await Journal.open(path)
            assert journal.stats.restored_deliveries >= 45
            server = await serve(Hub(journal=journal), port=server.port)
            rest = [(await sub.receive(timeout=15)).text for _ in range(45)]
            assert first + rest == [f"m{i}" for i in range(50)]  # in order, none twice
            with pytest.raises(TimeoutError):
                await sub.receive(timeout=0.3)
    finally:
        await server.stop(grace=0.1)
        await journal.aclose()


async def test_without_a_restart_acked_deliveries_leave_the_journal(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "j.db")
    server = await serve(Hub(journal=journal), port=0)
    try:
        async with latentwire.connect(server.url, agent="c") as c, \
                latentwire.connect(server.url, agent="p") as p:
            sub = await c.subscribe("t/#")
            await p.publish("nobody/listens", "dropped")  # routed nowhere: not stored at all
            for i in range(20):
                await p.publish("t/x", f"m{i}")
            for _ in range(20):
                await sub.receive(timeout=5)
            async with asyncio.timeout(5):
                while journal.stats.messages:  # the consumer's acks reach the journal
                    await asyncio.sleep(0.02)
    finally:
        await server.stop(grace=0.1)
        await journal.aclose()


async def test_a_failed_write_refuses_the_publish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = await Journal.open(tmp_path / "j.db")

    def disk_full(ops: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    server = await serve(Hub(journal=journal), port=0)
    try:
        async with latentwire.connect(server.url, agent="c") as c, \
                latentwire.connect(server.url, agent="p") as p:
            await c.subscribe("t/#")
            await p.publish("t/x", "stored")
            monkeypatch.setattr(journal, "_apply", disk_full)
            with pytest.raises(Unavailable, match="not stored: journal .*database or disk is full"):
                await p.publish("t/x", "not stored")
    finally:
        await server.stop(grace=0.1)
        await journal.aclose()


async def test_a_restored_session_expires_if_its_agent_never_returns(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "j.db")
    journal.save_session("s1", "c", {"t/#"})
    await _store(journal, "s1", range(1, 3))
    await journal.aclose()
    journal = await Journal.open(tmp_path / "j.db")
    hub = Hub(HubConfig(session_expiry=0.05), journal=journal)
    assert hub.sessions["c"].id == "s1" and len(hub.sessions["c"].queue) == 2
    await asyncio.sleep(0.2)
    assert "c" not in hub.sessions
    await journal.aclose()
    journal = await Journal.open(tmp_path / "j.db")
    try:
        assert journal.restored == [] and journal.stats.messages == 0
    finally:
        await journal.aclose()


async def test_expired_messages_are_not_replayed(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "j.db")
    journal.save_session("s1", "c", {"t/#"})
    await _store(journal, "s1", range(1, 3), ttl_ms=1)
    await _store(journal, "s1", range(3, 4))
    await journal.aclose()
    await asyncio.sleep(0.01)
    journal = await Journal.open(tmp_path / "j.db")
    try:
        assert [d.seq for d in journal.restored[0].deliveries] == [3]
        assert journal.stats.messages == 1
    finally:
        await journal.aclose()


# -- retention ---------------------------------------------------------------------------

async def test_retention_by_age_drops_old_messages_and_says_so(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    journal = await Journal.open(tmp_path / "j.db")
    journal.save_session("s1", "c", {"t/#"})
    await _store(journal, "s1", range(1, 4))
    await journal.aclose()
    await asyncio.sleep(0.05)
    with caplog.at_level(logging.WARNING, logger="latentwire.hub.journal"):
        journal = await Journal.open(tmp_path / "j.db", max_age=0.01)
    try:
        assert journal.restored[0].deliveries == []
        assert journal.stats.dropped_messages == 3 and journal.stats.messages == 0
        assert "retention dropped 3 messages" in caplog.text
        assert "older than max_age=0.01 s" in caplog.text
        assert "3 undelivered copies for 1 sessions will not survive a restart" in caplog.text
    finally:
        await journal.aclose()


async def test_retention_by_size_drops_the_oldest_first(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    journal = await Journal.open(tmp_path / "j.db")
    journal.save_session("s1", "c", {"t/#"})
    await _store(journal, "s1", range(1, 11), payload=b"y" * 1000)
    limit = journal.stats.stored_bytes * 4 // 10 + 10  # room for the newest 4 (ids differ in length)
    await journal.aclose()
    with caplog.at_level(logging.WARNING, logger="latentwire.hub.journal"):
        journal = await Journal.open(tmp_path / "j.db", max_bytes=limit)
    try:
        assert [d.seq for d in journal.restored[0].deliveries] == [7, 8, 9, 10]
        assert journal.stats.stored_bytes <= limit
        assert "retention dropped 6 messages" in caplog.text
        assert f"to stay under max_bytes={limit}" in caplog.text
    finally:
        await journal.aclose()


async def test_retention_also_runs_while_the_hub_is_up(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "j.db", max_age=0.05)
    try:
        journal.save_session("s1", "c", {"t/#"})
        await _store(journal, "s1", range(1, 4))
        async with asyncio.timeout(10):
            while journal.stats.dropped_messages < 3:
                await asyncio.sleep(0.05)
        assert journal.stats.messages == 0
    finally:
        await journal.aclose()


# -- bad files and settings ----------------------------------------------------------------

async def test_a_corrupt_file_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(JournalError, match=r"j\.db: file is corrupt or not a SQLite database"):
        await Journal.open(path)


async def test_a_truncated_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = await Journal.open(path)
    journal.save_session("s1", "c", {"t/#"})
    await _store(journal, "s1", range(1, 200), payload=b"z" * 3000)
    await journal.aclose()
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(JournalError, match="corrupt"):
        await Journal.open(path)


async def test_another_sqlite_database_is_not_taken_for_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    said = r"is a SQLite database but not a latentwire journal \(it has tables \['users'\]\)"
    with pytest.raises(JournalError, match=said):
        await Journal.open(path)


async def test_a_corrupt_message_row_is_named(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = await Journal.open(path)
    journal.save_session("s1", "c", {"t/#"})
    await _store(journal, "s1", range(1, 3))
    await journal.aclose()
    db = sqlite3.connect(path)
    db.execute("UPDATE messages SET header = x'ffffffff' WHERE id = 2")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="message row 2 has a corrupt envelope header"):
        await Journal.open(path)


async def test_an_unwritable_place_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    with pytest.raises(JournalError, match=r"cannot open: unable to open database file"):
        await Journal.open(blocker / "j.db")
    with pytest.raises(JournalError, match="is a directory"):
        await Journal.open(tmp_path)


@pytest.mark.parametrize("setting", [{"max_age": 0}, {"max_bytes": -1}, {"max_age": True}])
async def test_bad_retention_settings_are_refused(tmp_path: Path, setting: dict) -> None:
    name = next(iter(setting))
    with pytest.raises(JournalError, match=f"{name} must be a positive number or None"):
        await Journal.open(tmp_path / "j.db", **setting)


async def test_a_second_hub_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    first = await Journal.open(tmp_path / "j.db")
    try:
        with pytest.raises(JournalError, match="is in use .*is another hub running with this journal"):
            await Journal.open(tmp_path / "j.db")
    finally:
        await first.aclose()
    second = await Journal.open(tmp_path / "j.db")  # free again once the first one closed
    await second.aclose()
