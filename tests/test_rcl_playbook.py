"""Playbook and operations: dedup, budget, counters, pruning, versions, files, per-operation rejection."""

from __future__ import annotations

import json

import pytest

from latentwire.agents.rcl.errors import PlaybookError
from latentwire.agents.rcl.operations import Operation, apply_operations, parse_operations
from latentwire.agents.rcl.playbook import Playbook


def book_with(*contents: str, **limits: int) -> Playbook:
    book = Playbook(**limits)
    for c in contents:
        book.add("rules", c)
    return book


def test_dedup_ignores_case_and_spaces() -> None:
    book = book_with("Check the unit first.")
    with pytest.raises(PlaybookError, match="duplicate of entry e-0001"):
        book.add("other", "  check the   UNIT first. ")


def test_budget_and_oversize_are_refused() -> None:
    book = book_with("a1", "a2", max_entries=2)
    with pytest.raises(PlaybookError, match="max_entries=2"):
        book.add("rules", "a3")
    with pytest.raises(PlaybookError, match="oversize"):
        Playbook(max_entry_chars=10).add("rules", "x" * 11)
    with pytest.raises(PlaybookError, match="max_chars=5"):
        Playbook(max_chars=5).add("rules", "abcdef")


def test_counters_and_pruning_act_on_the_right_entries() -> None:
    book = book_with("good rule", "bad rule", "mixed rule")
    for _ in range(3):
        book.credit("e-0002", helpful=False)
    book.credit("e-0003", helpful=False)
    book.credit("e-0003", helpful=False)
    book.credit("e-0003", helpful=True)
    book.credit("e-0001", helpful=True)
    book.credit("e-0404", helpful=False)  # a deleted entry: ignored
    assert [(e.id, e.helpful, e.harmful) for e in book.entries.values()] == [
        ("e-0001", 1, 0), ("e-0002", 0, 3), ("e-0003", 1, 2)]
    assert [e.id for e in book.prune(threshold=2)] == ["e-0002"]
    assert list(book.entries) == ["e-0001", "e-0003"]


def test_dedup_merges_the_same_guidance_into_its_best_judged_entry() -> None:
    book = book_with("use a1 for k1", "USE A1 FOR K1 (again)", "use a2 for k2", "k1 wants a1")
    book.credit("e-0002", helpful=True)
    book.credit("e-0004", helpful=False)
    same = {"use a1 for k1": "k1", "USE A1 FOR K1 (again)": "k1", "k1 wants a1": "k1"}
    gone = book.dedup(lambda content: same.get(content, content))
    assert [e.id for e in gone] == ["e-0001", "e-0004"]  # e-0002 has the best record
    assert list(book.entries) == ["e-0002", "e-0003"]
    assert (book.entries["e-0002"].helpful, book.entries["e-0002"].harmful) == (1, 1)  # counters merged
    assert book.dedup(lambda content: content) == []


def test_renderings() -> None:
    book = book_with("one")
    book.add("style", "two")
    actor = book.render_for_actor()
    assert "## rules\n- [e-0001] one" in actor and "## style\n- [e-0002] two" in actor
    book.credit("e-0002", helpful=False)
    assert "- [e-0001] one\n" in book.render_for_actor()  # counters only once judged
    assert "- [e-0002] two (helpful 0, harmful 1)" in book.render_for_actor()
    opt = book.render_for_optimizer(assessed={"e-0002"})
    assert "  [e-0001] (rules) helpful=0 harmful=0: one" in opt
    assert "* [e-0002] (style)" in opt


def test_versions_diff_and_file_roundtrip(tmp_path) -> None:
    book = book_with("keep", "change me", "drop me")
    v1 = book.commit("first")
    book.update("e-0002", "changed")
    book.delete("e-0003")
    book.add("rules", "new")
    v2 = book.commit("second")
    diff = book.diff(v1, v2)
    assert [e.id for e in diff.added] == ["e-0004"] and [e.id for e in diff.removed] == ["e-0003"]
    assert [(a.content, b.content) for a, b in diff.changed] == [("change me", "changed")]
    path = tmp_path / "book.json"
    book.save(path)
    again = Playbook.load(path)
    assert again.to_dict() == book.to_dict()
    assert again.diff(v1).render() == diff.render()


def test_corrupt_files_name_the_problem(tmp_path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(PlaybookError, match="not JSON"):
        Playbook.load(path)
    data = book_with("x").to_dict()
    del data["entries"][0]["content"]
    path.write_text(json.dumps(data))
    with pytest.raises(PlaybookError, match=r"entries\[0\] must have"):
        Playbook.load(path)
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(PlaybookError, match="not a playbook"):
        Playbook.load(path)


def test_malformed_operations_are_rejected_one_by_one() -> None:
    book = book_with("existing")
    ops, bad = parse_operations('Here you go:\n```json\n{"operations": ['
                                '{"op": "ADD", "section": "s", "content": "fresh"},'
                                '{"op": "FROB"}, 7, {"op": "UPDATE", "content": "no id"},'
                                '{"op": "DELETE", "entry_id": "e-0099"},'
                                '{"op": "ADD", "section": "s", "content": "EXISTING"},'
                                '{"op": "ADD", "section": "s", "content": "' + "y" * 500 + '"}]}\n```')
    assert [r.reason for r in bad] == ["unknown operation 'FROB' (allowed: ADD, UPDATE, DELETE)",
                                       "an operation must be a JSON object, not int", "UPDATE needs entry_id"]
    result = apply_operations(book, ops, max_ops=3)
    assert [op.content for op, _ in result.applied] == ["fresh"]
    reasons = [r.reason for r in result.rejected]
    assert reasons[0] == "no entry 'e-0099'" and reasons[1] == "duplicate of entry e-0001"
    assert reasons[2].startswith("oversize")
    assert parse_operations("I think the agent should try harder.")[1][0].reason.startswith("not JSON")


def test_add_only_mode_and_operation_limit() -> None:
    book = book_with("a", "b")
    ops = [Operation("UPDATE", "e-0001", content="a2"), Operation("DELETE", "e-0002"),
           Operation("ADD", section="s", content="c"), Operation("ADD", section="s", content="d")]
    result = apply_operations(book, ops, max_ops=1, add_only=True)
    assert [op.content for op, _ in result.applied] == ["c"]
    assert [r.reason for r in result.rejected] == [
        "UPDATE refused: the optimiser is in ADD-only mode",
        "DELETE refused: the optimiser is in ADD-only mode",
        "over the limit of 1 operations per step"]
    assert [e.content for e in book.entries.values()] == ["a", "b", "c"]
