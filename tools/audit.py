"""``make audit``: known vulnerabilities of the pinned dependencies (requirements.lock), with
pip-audit, failing unless every package was actually checked.

pip-audit asks a vulnerability database over the network (PyPI's JSON API, or OSV with
``--vulnerability-service osv``). Without that network access it marks every package
"could not be audited" and still reports "No known vulnerabilities found" with exit status 0;
this wrapper reads its JSON report instead and fails (exit 2) when a package was skipped, and
says so, so that an audit that could not run never passes for a clean one.

Usage: ``python -m tools.audit [pip-audit options]`` (pip-audit on the PATH or beside Python).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

EXIT_CLEAN = 0
EXIT_VULNERABLE = 1
EXIT_NOT_AUDITED = 2
LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"


@dataclass
class AuditSummary:
    """What a pip-audit JSON report says: packages checked, skipped (and why), vulnerable."""

    audited: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    vulnerable: dict[str, list[str]] = field(default_factory=dict)

    @property
    def exit_status(self) -> int:
        """0 all checked and clean, 1 a known vulnerability, 2 something was not checked."""
        if self.vulnerable:
            return EXIT_VULNERABLE
        if self.skipped or not self.audited:
            return EXIT_NOT_AUDITED
        return EXIT_CLEAN


def summarize(report: dict[str, Any]) -> AuditSummary:
    """Read pip-audit's ``--format json`` report (``{"dependencies": [...]}``)."""
    summary = AuditSummary()
    for dependency in report.get("dependencies", []):
        name = f"{dependency['name']}=={dependency.get('version', '?')}"
        if "skip_reason" in dependency:
            summary.skipped[name] = dependency["skip_reason"]
            continue
        summary.audited.append(name)
        ids = [vuln["id"] for vuln in dependency.get("vulns", [])]
        if ids:
            summary.vulnerable[name] = ids
    return summary


def explain(summary: AuditSummary) -> str:
    """One paragraph for the person running the audit."""
    total = len(summary.audited) + len(summary.skipped)
    if summary.vulnerable:
        found = "; ".join(f"{n}: {', '.join(ids)}" for n, ids in summary.vulnerable.items())
        return f"known vulnerabilities in {len(summary.vulnerable)} packages: {found}"
    if summary.skipped or not summary.audited:
        example = next(iter(summary.skipped.values()), "no package in the report")
        return (
            f"AUDIT DID NOT RUN: {len(summary.skipped)} of {total} packages could not be "
            f"checked (e.g. {example}). pip-audit needs network access to a vulnerability "
            "database (PyPI's JSON API, or OSV with --vulnerability-service osv); run "
            "`make audit` where it is reachable. This is not a clean result."
        )
    return f"no known vulnerabilities in the {total} pinned packages"


def run_pip_audit(arguments: Sequence[str]) -> dict[str, Any]:
    """pip-audit's JSON report on requirements.lock (no resolution: the pins are the set)."""
    beside = Path(sys.executable).with_name("pip-audit")
    executable = str(beside) if beside.exists() else shutil.which("pip-audit")
    if executable is None:
        raise FileNotFoundError("pip-audit is not installed (make audit installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "report.json"
        command = [
            executable,
            "--requirement", str(LOCK),
            "--no-deps",
            "--disable-pip",
            "--format", "json",
            "--output", str(output),
            "--progress-spinner", "off",
            *arguments,
        ]  # fmt: skip
        completed = subprocess.run(  # noqa: S603 - our own argument list, no shell
            command, check=False, capture_output=True, text=True
        )
        if not output.exists():
            raise RuntimeError(f"pip-audit failed ({completed.returncode}): {completed.stderr}")
        report: dict[str, Any] = json.loads(output.read_text())
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the audit; the exit status is :attr:`AuditSummary.exit_status`."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = summarize(run_pip_audit(list(sys.argv[1:] if argv is None else argv)))
    message = explain(summary)
    if summary.exit_status == EXIT_CLEAN:
        logger.info(message)
    else:
        logger.error(message)
    return summary.exit_status


if __name__ == "__main__":
    sys.exit(main())
