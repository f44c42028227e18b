"""Sampling profiles of an API worker under load, with py-spy (``pip install py-spy``).

:class:`ProfileRecorder` runs ``py-spy record --format raw`` (collapsed stacks, frames
aggregated by function, idle threads left out) against one worker during a measured wrk run;
:func:`top_frames` turns a recording into a table of frames: the share of the
samples that are in a frame (inclusive) and that end in it (self).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameShare:
    """One frame's share of the samples, percent."""

    frame: str
    inclusive_pct: float
    self_pct: float


def top_frames(collapsed: Path, limit: int = 25) -> tuple[int, list[FrameShare]]:
    """``(samples, frames)``: the ``limit`` frames with the largest inclusive share.

    Args:
        collapsed: py-spy ``--format raw`` output, one ``frame;frame;...;leaf count`` per line
            (root first).
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if total == 0:
        return 0, []
    shares = [
        FrameShare(frame, 100.0 * n / total, 100.0 * own[frame] / total)
        for frame, n in inclusive.most_common()
        if not frame.startswith(("process ", "thread "))
    ]
    return total, shares[:limit]


class ProfileRecorder:
    """Records one py-spy profile per case into ``folder``."""

    def __init__(self, folder: Path, *, gil_only: bool = False) -> None:
        self.folder = folder
        # py-spy --gil: only the thread holding the GIL is sampled, so the samples are where
        # the worker's Python CPU goes, without threads waiting for the GIL or for I/O
        self.gil_only = gil_only
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.files: list[Path] = []
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.exe = exe

    def start(self, pid: int, name: str, seconds: float) -> None:
        """Start recording ``pid`` for ``seconds`` (non-blocking sampling, 250 Hz)."""
        out = self.folder / f"{name}.txt"
        self.files.append(out)
        self.proc = subprocess.Popen(  # noqa: S603 - py-spy from the virtualenv
            [
                self.exe, "record", "--pid", str(pid), "--duration", str(round(seconds)),
                "--rate", "250", "--function", "--nonblocking", "--format", "raw",
                "--output", str(out), *(["--gil"] if self.gil_only else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def wait(self) -> None:
        """Wait for the current recording to be written."""
        if self.proc is not None:
            self.proc.wait(timeout=120)
            self.proc = None

    def summary(self, limit: int = 25) -> str:
        """Markdown tables of the top frames of every recording."""
        parts: list[str] = []
        for path in self.files:
            if not path.exists():
                parts.append(f"{path.name}: no profile written (py-spy needs ptrace rights)")
                continue
            total, frames = top_frames(path, limit)
            parts += [
                "",
                f"### {path.stem}: {total} samples of one worker "
                + ("(the thread holding the GIL)" if self.gil_only else "(non-idle threads)"),
                "",
                "| frame | inclusive % | self % |",
                "|---|---:|---:|",
            ]
            parts += [f"| `{f.frame}` | {f.inclusive_pct:.1f} | {f.self_pct:.1f} |" for f in frames]
        return "\n".join(parts)
