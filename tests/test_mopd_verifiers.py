"""Verifiers: rewards and feedback; the code verifier kills runaways and refuses the network."""

from __future__ import annotations

import socket

import pytest
from latentwire.errors import ConfigError
from latentwire.training.mopd import verifiers
from latentwire.training.mopd.verifiers import (
    CodeVerifier,
    MathVerifier,
    MultipleChoiceVerifier,
    TinyworldVerifier,
    ToolCallVerifier,
    make_verifier,
)


@pytest.mark.parametrize(("text", "reward"), [
    ("so the total is \\boxed{42}", 1.0),
    ("3 apples and 4 pears\n#### 1,000", 0.0),
    ("we get 41, no wait, 42", 1.0),
    ("\\boxed{42.0} though #### 7", 1.0),  # boxed wins
    ("no idea", 0.0),
])
def test_math(text: str, reward: float) -> None:
    assert MathVerifier()(text, 42).reward == reward
    assert MathVerifier()("#### 1,000", "1000").reward == 1.0


def test_multiple_choice() -> None:
    mc = MultipleChoiceVerifier()
    assert mc("I think the answer is (C).", "C").reward == 1.0
    assert mc("Answer: b", "B").reward == 1.0
    assert mc("A seems wrong, so D", "D").reward == 1.0
    assert mc("none fits", "A") == verifiers.Verdict(0.0, "no choice found (write 'answer: X')")


def test_tool_call() -> None:
    gold = {"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}
    tc = ToolCallVerifier()
    assert tc('call: {"name": "get_weather", "arguments": {"days": 2, "city": "Oslo"}}', gold).reward == 1.0
    assert tc('{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\", \\"days\\": 2}"}', gold).reward == 1.0
    wrong = tc('{"name": "get_weather", "arguments": {"city": "Bergen", "days": 2}}', gold)
    assert wrong.reward == 0.0 and "wrong arguments" in wrong.feedback
    assert "expected 'get_weather'" in tc('{"name": "search", "arguments": {}}', gold).feedback
    assert tc("I would call the weather tool", gold).reward == 0.0
    with pytest.raises(ConfigError, match="tool_call gold"):
        tc("{}", {"arguments": {}})


def test_tinyworld() -> None:
    assert TinyworldVerifier()("abcd", "abcd").reward == 1.0
    assert TinyworldVerifier()("abdc", "abcd") == verifiers.Verdict(0.0, "wrong; 50% of characters right")


TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


def test_code_passes_and_fails() -> None:
    code = CodeVerifier(timeout_s=20)
    assert code("```python\ndef add(a, b):\n    return a + b\n```", TESTS).reward == 1.0
    failed = code("def add(a, b):\n    return a - b\n", TESTS)
    assert failed.reward == 0.0 and "AssertionError" in failed.feedback


def test_code_runaway_is_killed() -> None:
    verdict = CodeVerifier(timeout_s=2, cpu_seconds=1)("def add(a, b):\n    while True:\n        pass\n", TESTS)
    assert verdict.reward == 0.0
    assert "killed" in verdict.feedback


def test_code_memory_hog_is_killed() -> None:
    verdict = CodeVerifier(timeout_s=20, memory_mb=200)("x = bytearray(1 << 30)\ndef add(a, b):\n    return a + b\n", TESTS)
    assert verdict.reward == 0.0
    assert "MemoryError" in verdict.feedback


@pytest.mark.parametrize("use_unshare", [True, False])
def test_code_network_is_refused(use_unshare: bool) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(0.5)
        program = (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n"
                   "def add(a, b):\n    return a + b\n")
        verdict = CodeVerifier(timeout_s=20, use_unshare=use_unshare)(program, TESTS)
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever connected
    assert verdict.reward == 0.0
    if not use_unshare:  # the audit hook alone refuses it, and says so
        assert "network access is disabled" in verdict.feedback


def test_make_verifier() -> None:
    assert isinstance(make_verifier("code", timeout_s=1.0), CodeVerifier)
    with pytest.raises(ConfigError, match="no verifier configured"):
        make_verifier(None)
    with pytest.raises(ConfigError, match="unknown verifier 'regex'"):
        make_verifier("regex")
    with pytest.raises(ConfigError, match="bad options for verifier 'math'"):
        make_verifier("math", strict=True)
