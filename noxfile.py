"""Development sessions: `nox -s tests lint typecheck conformance bench demo`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite with branch coverage (the soak test runs at its CI size; ILLUMASS_SOAK_KEYS=50000
    for the full run)."""
    session.install("-e", ".[test]")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", "-q")
    session.run("coverage", "report")


@nox.session
def conformance(session: nox.Session) -> None:
    """The conformance suite against the real Kuzzle 2.56 (../shared/kuzzle), which may not skip.

    ILLUMASS_KUZZLE_URL (and ILLUMASS_KUZZLE_UNCAPPED_URL) use servers already running instead.
    """
    session.install("-e", ".[test]")
    session.run(
        "python",
        "-m",
        "pytest",
        "tests/conformance",
        "-m",
        "kuzzle",
        *session.posargs,
        env={"ILLUMASS_REQUIRE_KUZZLE": "1"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/ and tests/."""
    session.install("-e", ".[test]", "mypy>=1.10")
    session.run("mypy", "--strict", "src", "tests")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against baselines; `nox -s bench -- --quick` for a smoke run."""
    session.install("-e", ".[cli,bench]")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The whole lifecycle against the embedded FakeIllumass."""
    session.install(".[cli]")
    session.run("illumass", "demo")
