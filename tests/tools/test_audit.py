"""``make audit`` never reports a clean result for an audit that could not run (issue 18,
failure 10: pip-audit said "No known vulnerabilities found" after auditing 0 of 162)."""

from __future__ import annotations

from tools.audit import EXIT_CLEAN, EXIT_NOT_AUDITED, EXIT_VULNERABLE, explain, summarize

UNREACHABLE = {
    "dependencies": [
        {"name": "fastapi", "skip_reason": "Dependency not found on PyPI and could not be audited"},
        {"name": "numpy", "skip_reason": "Dependency not found on PyPI and could not be audited"},
    ]
}


def test_an_audit_that_checked_nothing_fails_and_says_it_needs_network() -> None:
    """Every package skipped (no vulnerability database reachable): exit 2, said plainly."""
    summary = summarize(UNREACHABLE)
    assert summary.exit_status == EXIT_NOT_AUDITED
    message = explain(summary)
    assert "AUDIT DID NOT RUN" in message and "2 of 2" in message
    assert "network access" in message
    assert "no known vulnerabilities" not in message.lower()


def test_an_empty_report_is_not_clean() -> None:
    """A report listing no package at all audited nothing."""
    assert summarize({"dependencies": []}).exit_status == EXIT_NOT_AUDITED


def test_one_skipped_package_is_enough_to_fail() -> None:
    """A partial audit is not a clean one."""
    report = {
        "dependencies": [
            {"name": "fastapi", "version": "0.115.0", "vulns": []},
            {"name": "private-pkg", "skip_reason": "not on PyPI"},
        ]
    }
    assert summarize(report).exit_status == EXIT_NOT_AUDITED


def test_a_known_vulnerability_fails_naming_it() -> None:
    """A vulnerable pin: exit 1, with the package and advisory id."""
    report = {
        "dependencies": [
            {"name": "jinja2", "version": "2.0", "vulns": [{"id": "PYSEC-2019-217"}]},
            {"name": "numpy", "version": "2.0.0", "vulns": []},
        ]
    }
    summary = summarize(report)
    assert summary.exit_status == EXIT_VULNERABLE
    assert "jinja2==2.0: PYSEC-2019-217" in explain(summary)


def test_everything_checked_and_clean_passes() -> None:
    """All packages checked, none vulnerable: exit 0."""
    report = {"dependencies": [{"name": "numpy", "version": "2.0.0", "vulns": []}]}
    summary = summarize(report)
    assert summary.exit_status == EXIT_CLEAN
    assert explain(summary) == "no known vulnerabilities in the 1 pinned packages"
