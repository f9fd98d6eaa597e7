"""Verifiers: a reward in [0, 1] and a line of textual feedback for one completion.

================  ==========================================================================
name              gold answer, and what counts as correct
================  ==========================================================================
``math``          a number; the completion's ``\\boxed{...}``, else its ``#### x`` line, else its
                  last number, compared numerically (``1,000`` and ``1000.0`` equal ``1000``)
``multiple_choice`` a letter (A-J); ``answer: B`` / ``(B)`` / the last standalone capital letter
``code``          Python test code (asserts); the completion (fenced code is unwrapped) and the
                  tests run in a subprocess with CPU-time, memory and wall-clock limits and no
                  network; reward 1 when it exits 0
``tool_call``     ``{"name": ..., "arguments": {...}}``; the first JSON object in the completion
                  must have the same name and equal arguments (a JSON-string ``arguments`` is
                  parsed first)
``tinyworld``     the tinyworld answer string; exact match (feedback gives per-character accuracy)
================  ==========================================================================

No network for code: the child runs under ``unshare -rn`` (an empty network namespace) where the
kernel allows user namespaces, and in every case behind a Python audit hook installed before the
candidate code runs that refuses socket creation, connects and name lookups. The audit hook is a
guard against ordinary Python code, not a sandbox against a determined attacker (ctypes can reach
libc directly); run untrusted code inside a container as well.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from latentwire.errors import ConfigError

__all__ = [
    "VERIFIERS",
    "CodeVerifier",
    "MathVerifier",
    "MultipleChoiceVerifier",
    "TinyworldVerifier",
    "ToolCallVerifier",
    "Verdict",
    "make_verifier",
]


@dataclass(frozen=True)
class Verdict:
    """A verifier's judgement: ``reward`` in [0, 1] and a short ``feedback`` line for humans or prompts."""

    reward: float
    feedback: str


class MathVerifier:
    """Final-number match: ``\\boxed{}``, then ``####``, then the last number in the text."""

    name = "math"
    _number = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")

    def extract(self, text: str) -> str | None:
        """The final answer written in ``text`` (as written), or None."""
        boxed = re.findall(r"\\boxed\{([^{}]*)\}", text)
        if boxed:
            return boxed[-1].strip()
        hashes = re.findall(r"####\s*([^\n]+)", text)
        if hashes:
            return hashes[-1].strip()
        numbers = self._number.findall(text)
        return numbers[-1] if numbers else None

    @staticmethod
    def _value(text: str) -> float | None:
        try:
            return float(text.replace(",", "").replace("$", "").strip())
        except ValueError:
            return None

    def __call__(self, completion: str, gold: Any) -> Verdict:
        found = self.extract(completion)
        if found is None:
            return Verdict(0.0, "no final answer found (write \\boxed{x} or '#### x')")
        got, want = self._value(found), self._value(str(gold))
        if got is not None and want is not None and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9):
            return Verdict(1.0, f"correct: {found}")
        return Verdict(0.0, f"wrong final answer {found!r}")


class MultipleChoiceVerifier:
    """The chosen letter against the gold letter."""

    name = "multiple_choice"

    def extract(self, text: str) -> str | None:
        """The letter the completion chose, or None."""
        said = re.findall(r"answer\s*(?:is)?\s*[:=]?\s*\(?([A-J])\)?\b", text, flags=re.IGNORECASE)
        if said:
            return said[-1].upper()
        marked = re.findall(r"\(([A-J])\)", text)
        if marked:
            return marked[-1]
        alone = re.findall(r"\b([A-J])\b", text)
        return alone[-1] if alone else None

    def __call__(self, completion: str, gold: Any) -> Verdict:
        found = self.extract(completion)
        if found is None:
            return Verdict(0.0, "no choice found (write 'answer: X')")
        return Verdict(float(found == str(gold).strip().upper()), f"chose {found}")


# Runs before the candidate code in the child: set the limits (here rather than in a preexec_fn,
# which is unsafe in a process with threads), refuse the network from Python, then run the file.
_GUARD = """\
import resource, sys
cpu_seconds, memory = int(sys.argv[2]), int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
def _no_network(event, args):
    if event in ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
                 "socket.gethostbyname", "socket.sendto", "urllib.Request"):
        raise PermissionError("network access is disabled in the code verifier (" + event + ")")
sys.addaudithook(_no_network)
path = sys.argv[1]
sys.argv = sys.argv[1:2]
code = compile(open(path).read(), path, "exec")
exec(code, {"__name__": "__main__"})
"""


@functools.cache
def _unshare_works() -> bool:
    """True when ``unshare -rn`` can make an empty network namespace here (probed once)."""
    tool = shutil.which("unshare")
    if tool is None:
        return False
    try:
        return subprocess.run([tool, "-rn", "true"], capture_output=True, timeout=5, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class CodeVerifier:
    """Run the completion followed by the gold tests; reward 1 when the program exits 0.

    Limits: ``cpu_seconds`` of CPU time (RLIMIT_CPU), ``memory_mb`` of address space
    (RLIMIT_AS), ``timeout_s`` of wall-clock time (the whole process group is killed), no
    network (see the module docstring).
    """

    name = "code"

    def __init__(self, timeout_s: float = 5.0, cpu_seconds: int = 5, memory_mb: int = 512,
                 use_unshare: bool = True) -> None:
        if timeout_s <= 0 or cpu_seconds < 1 or memory_mb < 16:
            raise ConfigError(f"code verifier limits too small: timeout_s={timeout_s}, "
                              f"cpu_seconds={cpu_seconds}, memory_mb={memory_mb} (memory_mb >= 16)")
        self.timeout_s, self.cpu_seconds, self.memory_mb = timeout_s, cpu_seconds, memory_mb
        self.use_unshare = use_unshare

    @staticmethod
    def extract(text: str) -> str:
        """The code in ``text``: the last fenced block when there is one, else the text."""
        blocks = re.findall(r"```(?:python|py)?\n(.*?)```", text, flags=re.DOTALL)
        return blocks[-1] if blocks else text

    def run(self, program: str) -> tuple[int | None, str]:
        """Run ``program``; ``(exit code or None on timeout, last lines of its output)``."""
        with tempfile.TemporaryDirectory(prefix="lw-verify-") as folder:
            path = os.path.join(folder, "candidate.py")
            with open(path, "w") as handle:
                handle.write(program)
            command = [sys.executable, "-I", "-c", _GUARD, path, str(self.cpu_seconds),
                       str(self.memory_mb * 1024 * 1024)]
            if self.use_unshare and _unshare_works():
                command = [shutil.which("unshare") or "unshare", "-rn", *command]
            proc = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"})
            try:
                output, _ = proc.communicate(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                output, _ = proc.communicate()
                return None, output.decode(errors="replace")[-500:]
            return proc.returncode, output.decode(errors="replace")[-500:]

    def __call__(self, completion: str, gold: Any) -> Verdict:
        code, output = self.run(self.extract(completion) + "\n\n" + str(gold) + "\n")
        if code is None:
            return Verdict(0.0, f"killed after {self.timeout_s:g} s wall-clock")
        if code == 0:
            return Verdict(1.0, "all tests passed")
        if code < 0:
            return Verdict(0.0, f"killed by signal {-code} (CPU or memory limit)")
        last = output.strip().splitlines()[-1] if output.strip() else f"exit code {code}"
        return Verdict(0.0, f"tests failed: {last}")


def _first_json_object(text: str) -> Any:
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            return decoder.raw_decode(text, start)[0]
        except json.JSONDecodeError:
            continue
    return None


class ToolCallVerifier:
    """The first JSON object in the completion against the expected function call."""

    name = "tool_call"

    @staticmethod
    def _normalise(call: Any) -> tuple[Any, Any] | None:
        if not isinstance(call, dict) or "name" not in call:
            return None
        arguments = call.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return None
        return call["name"], arguments

    def __call__(self, completion: str, gold: Any) -> Verdict:
        want = self._normalise(json.loads(gold) if isinstance(gold, str) else gold)
        if want is None:
            raise ConfigError(f"tool_call gold must be {{'name': ..., 'arguments': {{...}}}}, got {gold!r}")
        got = self._normalise(_first_json_object(completion))
        if got is None:
            return Verdict(0.0, "no JSON function call with a 'name' found")
        if got[0] != want[0]:
            return Verdict(0.0, f"called {got[0]!r}, expected {want[0]!r}")
        if got[1] != want[1]:
            return Verdict(0.0, f"{got[0]} called with wrong arguments {got[1]!r}")
        return Verdict(1.0, f"correct call to {got[0]}")


class TinyworldVerifier:
    """Exact match against a tinyworld answer (`tinyworld.tasks.score`)."""

    name = "tinyworld"

    def __call__(self, completion: str, gold: Any) -> Verdict:
        from latentwire.tinyworld.tasks import score

        s = score(completion, str(gold))
        return Verdict(s.exact, "exact match" if s.exact else f"wrong; {s.char:.0%} of characters right")


VERIFIERS = {v.name: v for v in (MathVerifier, MultipleChoiceVerifier, CodeVerifier, ToolCallVerifier,
                                 TinyworldVerifier)}


def make_verifier(name: str | None, **options: Any) -> Any:
    """The verifier called ``name`` built with ``options``; a clear error when it is missing or unknown."""
    if not name:
        raise ConfigError(f"no verifier configured; set verifier to one of {', '.join(VERIFIERS)}")
    if name not in VERIFIERS:
        raise ConfigError(f"unknown verifier {name!r}; choose one of {', '.join(VERIFIERS)}")
    try:
        return VERIFIERS[name](**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for verifier {name!r}: {exc}") from exc
