"""Two versions of Kairos in one benchmark run: the current checkout and a baseline commit.

The baseline is checked out with ``git worktree add --detach`` into a temporary directory (removed at the
end) and run with the *same* virtualenv: a subprocess gets ``<worktree>/src`` first on ``PYTHONPATH``,
ahead of the editable install of this checkout (the baseline's dependencies are a subset of the current
ones). Every measurement that has a baseline runs one subprocess per version and repeat,
``python bench/<part>.py --json-out FILE ...``; the harness (``bench/``) is this checkout's in both, so
both versions get the same workload from the same seeds. Before anything is measured, each version's
environment is checked to import ``kairos`` from where it should.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from _common import BENCH, PYTHON, ROOT, bench_env

__all__ = ["Version", "baseline_version", "current_version", "interleaved", "run_part"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Version:
    label: str  # "old" (the baseline) or "new" (this checkout)
    commit: str  # short commit id, "+ changes" when the checkout has uncommitted ones
    subject: str
    src: Path  # put first on PYTHONPATH

    def env(self) -> dict[str, str]:
        """The environment of a Kairos process of this version: defaults, the version's code first."""
        path = os.pathsep.join(p for p in (str(self.src), os.environ.get("PYTHONPATH", "")) if p)
        return bench_env(PYTHONPATH=path)

    def describe(self) -> str:
        return f"{self.commit} ({self.subject})"


def _git(*args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _check(version: Version) -> Version:
    """Fail early unless the version's environment imports ``kairos`` from ``version.src``."""
    code = "import kairos, kairos.config, kairos.runtime; print(kairos.__file__)"
    # Not from this checkout's directory: `python -c` puts the working directory first on sys.path.
    cwd = tempfile.gettempdir()
    proc = subprocess.run([PYTHON, "-c", code], env=version.env(), cwd=cwd, capture_output=True, text=True, check=False)
    found = Path(proc.stdout.strip()).resolve() if proc.returncode == 0 else None
    if found is None or not found.is_relative_to(version.src.resolve()):
        raise RuntimeError(
            f"{version.label} ({version.commit}): kairos imported from {found or proc.stderr.strip()[-500:]},"
            f" not from {version.src}"
        )
    return version


def current_version() -> Version:
    commit = _git("rev-parse", "--short", "HEAD")
    if _git("status", "--porcelain", "--untracked-files=no", "--", "src"):
        commit += " + changes"
    return _check(Version("new", commit, _git("log", "-1", "--format=%s"), ROOT / "src"))


@contextlib.contextmanager
def baseline_version(rev: str) -> Iterator[Version]:
    """A detached worktree of ``rev`` in a temporary directory, removed on the way out."""
    try:
        full = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except RuntimeError:
        raise RuntimeError(f"baseline {rev!r} is not a commit of this repository") from None
    tmp = Path(tempfile.mkdtemp(prefix="kairos-bench-baseline-"))
    tree = tmp / "baseline"
    _git("worktree", "add", "--detach", "--quiet", str(tree), full)
    try:
        # Compiled now, so that no run of the baseline pays for compiling its modules.
        subprocess.run([PYTHON, "-m", "compileall", "-q", str(tree / "src")], check=False)
        short = _git("rev-parse", "--short", full)
        yield _check(Version("old", short, _git("log", "-1", "--format=%s", full), tree / "src"))
    finally:
        with contextlib.suppress(RuntimeError):
            _git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(tmp, ignore_errors=True)


def run_part(part: str, version: Version, args: Sequence[str], workdir: Path, tag: str) -> dict[str, Any]:
    """Run ``bench/<part>.py --json-out FILE *args`` as ``version``; return what it wrote.

    The part's output goes to this terminal as it runs; a failing part raises with its exit code.
    """
    out = workdir / f"{part}-{version.label}-{tag}.json"
    argv = [PYTHON, str(BENCH / f"{part}.py"), "--json-out", str(out), *args]
    proc = subprocess.Popen(argv, env=version.env(), cwd=workdir)
    try:
        code = proc.wait()
    except BaseException:
        # Interrupted (Ctrl-C reaches the part too; SIGTERM only this process): the part stops its
        # servers on SIGTERM, and is killed if it takes too long.
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if code != 0 or not out.exists():
        raise RuntimeError(f"{part} ({version.label}, {tag}) failed with exit code {code}")
    data: dict[str, Any] = json.loads(out.read_text())
    where = Path(str(data.get("kairos_path", ""))).resolve()
    if not where.is_relative_to(version.src.resolve()):
        raise RuntimeError(f"{part} ({version.label}) ran kairos from {where}, not {version.src}")
    return data


def interleaved(versions: Sequence[Version], repeats: int, fn: Callable[[Version, int], T]) -> dict[str, list[T]]:
    """``fn(version, i)`` for i in range(repeats), versions alternating: old, new, old, new ...

    Runs of the same repeat are back to back, so they see the same machine; their ratio is one pair.
    """
    out: dict[str, list[T]] = {v.label: [] for v in versions}
    for i in range(repeats):
        for v in versions:
            out[v.label].append(fn(v, i))
    return out
