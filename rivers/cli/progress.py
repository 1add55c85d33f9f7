"""What `rivers materialize` shows: a live progress display on a terminal and a summary table at the end.

`RunProgress` is a run listener (see `rivers.run.listening`): the coordinator calls it with
(event, step, result) for every step transition; a rich `Live` display redraws from its state.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from rivers.plan import Step
    from rivers.results import LogEntry, RunResult, StepResult

STYLES = {"succeeded": "green", "failed": "bold red", "skipped": "yellow", "running": "cyan", "queued": "blue",
          "pending": "dim"}
MAX_TABLE_ROWS = 60  # beyond this, succeeded steps are folded into one line; failures are always listed
MAX_RUNNING_NAMES = 8
MAX_TRACEBACKS = 3
MAX_OUTPUT_LINES = 200  # a failed step's captured output under the summary: its last lines


@dataclass
class StepRow:
    key: str
    outputs: tuple[str, ...] = ()
    status: str = "pending"
    duration_s: float | None = None
    error: str = ""
    traceback: str = ""
    logs: list[LogEntry] = field(default_factory=list)


class RunProgress:
    """Step states of one run, fed by coordinator events, read by the display thread."""

    def __init__(self) -> None:
        self.rows: dict[str, StepRow] = {}
        self.planned_order: dict[str, int] = {}
        self.upstreams: dict[str, frozenset[str]] = {}
        self.started = time.monotonic()
        self.run_id: str | None = None  # set by the CLI, else learnt from the first step result
        self._lock = threading.Lock()

    # -- the listener -----------------------------------------------------------------------
    def __call__(self, event: str, step: Step, result: StepResult | None) -> None:
        with self._lock:
            if event == "planned":  # sent for every step of the plan before the first one runs
                self.planned_order[step.key] = len(self.planned_order)
            row = self.rows.get(step.key)
            if row is None:  # a step the plan could not foresee (a fan-out instance)
                row = self.rows[step.key] = StepRow(step.key, step.outputs)
                self.upstreams[step.key] = step.upstream_steps
            if event == "planned":
                return
            if result is not None and self.run_id is None:
                self.run_id = result.run_id or None
            if event == "running":  # a process started it (a worker's step process, a pod): its coordinator says so
                if row.status in ("pending", "queued"):
                    row.status = "running"
            elif event == "started":  # handed to its executor; "running" once a process starts it (mark_running)
                # an in_process step is "started" by the coordinator's own thread (or event loop) as it runs it
                row.status = "running" if getattr(step, "executor", None) == "in_process" else "queued"
            elif event == "attempt_failed":  # retried: it waits for its next attempt
                if row.status in ("queued", "running"):
                    row.status = "queued"
            elif event == "skipped":
                row.status = "skipped"
                row.error = self._skip_reason(step.key)
            else:
                row.status = event
                if result is not None:
                    row.duration_s = result.duration_s
                    if result.error is not None:
                        row.error = result.error.summary()
                        row.traceback = result.error.traceback
                    row.logs = list(result.logs)

    def mark_running(self, key: str) -> None:
        """A process started the step (its "running" record); a step already finished stays finished."""
        with self._lock:
            row = self.rows.get(key)
            if row is not None and row.status in ("pending", "queued"):
                row.status = "running"

    def _skip_reason(self, key: str) -> str:
        culprits = [up for up in sorted(self.upstreams.get(key, ())) if self.rows.get(up, StepRow(up)).status
                    in ("failed", "skipped")]
        if culprits:
            return f"skipped: upstream '{culprits[0]}' did not succeed"
        return "skipped: upstream dependency failed"

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STYLES, 0)
        for row in self.rows.values():
            counts[row.status] += 1
        return counts

    # -- live display -----------------------------------------------------------------------
    def render(self) -> RenderableType:
        with self._lock:
            counts = self.counts()
            running = [row.key for row in self.rows.values() if row.status == "running"]
        total = len(self.rows)
        finished = counts["succeeded"] + counts["failed"] + counts["skipped"]
        head = Table.grid(padding=(0, 1))
        head.add_row(
            ProgressBar(total=max(total, 1), completed=finished, width=30),
            Text(f"{finished}/{total} steps", style="bold"),
            Text(f"{time.monotonic() - self.started:.1f}s", style="dim"),
        )
        line = Text.assemble(
            (f"{counts['succeeded']} done", STYLES["succeeded"]), "  ",
            (f"{counts['running']} running", STYLES["running"]), "  ",
            (f"{counts['queued']} queued", STYLES["queued"] if counts["queued"] else "dim"), "  ",
            (f"{counts['failed']} failed", STYLES["failed"] if counts["failed"] else "dim"), "  ",
            (f"{counts['skipped']} skipped", STYLES["skipped"] if counts["skipped"] else "dim"),
        )
        names = ", ".join(running[:MAX_RUNNING_NAMES])
        if len(running) > MAX_RUNNING_NAMES:
            names += f" (+{len(running) - MAX_RUNNING_NAMES} more)"
        parts: list[RenderableType] = [head, line]
        if names:
            parts.append(Text(f"running: {names}", style=STYLES["running"], overflow="ellipsis", no_wrap=True))
        return Group(*parts)

    # -- the end ----------------------------------------------------------------------------
    def summary_table(self) -> Table:
        table = Table(title="rivers run", title_justify="left", expand=False)
        table.add_column("step / asset", overflow="fold")
        table.add_column("status")
        table.add_column("duration", justify="right")
        table.add_column("error", overflow="fold")
        rows = self.ordered_rows()
        room = max(0, MAX_TABLE_ROWS - sum(row.status == "failed" for row in rows))
        shown: list[StepRow] = []
        for row in rows:  # failures are always listed; the rest while there is room
            if row.status == "failed" or room > 0:
                room -= row.status != "failed"
                shown.append(row)
        for row in shown:
            table.add_row(
                _label(row), Text(row.status, style=STYLES.get(row.status, "")),
                "-" if row.duration_s is None else _duration(row.duration_s), _first_line(row.error),
            )
        listed = {row.key for row in shown}
        hidden = [row for row in rows if row.key not in listed]
        if hidden:
            kinds = ", ".join(f"{n} {status}" for status, n in _tally(hidden).items())
            table.add_row(Text(f"(+{len(hidden)} more: {kinds})", style="dim"), "", "", "")
        return table

    def ordered_rows(self) -> list[StepRow]:
        """Plan order; a step found during the run (fan-out instance `t__k`) right after its base step `t`."""
        order = self.planned_order
        end = len(order)

        def position(arrival: int, key: str) -> tuple[int, int]:
            base = key.rsplit("__", 1)[0]
            return (order[key], 0) if key in order else (order.get(base, end), 1 + arrival)

        keyed = [(position(i, key), row) for i, (key, row) in enumerate(self.rows.items())]
        return [row for _, row in sorted(keyed, key=lambda item: item[0])]

    def tracebacks(self) -> list[tuple[str, str]]:
        """(step, traceback) of the first failed steps, for the user to debug."""
        failed = [row for row in self.rows.values() if row.status == "failed" and row.traceback]
        return [(row.key, row.traceback.rstrip()) for row in failed[:MAX_TRACEBACKS]]

    def failed_outputs(self) -> list[tuple[str, list[LogEntry]]]:
        """(step, captured output) of the first failed steps that printed or logged anything."""
        failed = [row for row in self.ordered_rows() if row.status == "failed" and row.logs]
        return [(row.key, row.logs) for row in failed[:MAX_TRACEBACKS]]

    def final_line(self, result: RunResult) -> Text:
        counts = self.counts()
        verdict = ("succeeded", "bold green") if result.success else ("failed", "bold red")
        return Text.assemble(
            "run ", (result.run_id, "bold"), " ", verdict,
            f": success={result.success}, {len(self.rows)} steps, {counts['failed']} failed, "
            f"{counts['skipped']} skipped, {time.monotonic() - self.started:.2f}s",
        )


def _tally(rows: list[StepRow]) -> dict[str, int]:
    tally: dict[str, int] = {}
    for row in rows:
        tally[row.status] = tally.get(row.status, 0) + 1
    return tally


def _label(row: StepRow) -> str:
    if row.outputs and row.outputs != (row.key,):
        return f"{row.key} -> {', '.join(row.outputs)}"
    return row.key


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _first_line(message: str, limit: int = 300) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def print_summary(console: Console, progress: RunProgress, result: RunResult) -> None:
    from rivers.cli.main import user_traceback

    console.print(progress.summary_table())
    for key, text in progress.tracebacks():
        console.print(Text(f"\ntraceback of step '{key}':", style="bold red"))
        console.print(Text(user_traceback(text)), soft_wrap=True, highlight=False)
    for key, entries in progress.failed_outputs():
        console.print(Text(f"\noutput of step '{key}' ({len(entries)} lines):", style="bold red"))
        if len(entries) > MAX_OUTPUT_LINES:
            console.print(Text(f"... {len(entries) - MAX_OUTPUT_LINES} earlier lines: rivers logs {result.run_id} "
                               f"{key}", style="dim"))
        for entry in entries[-MAX_OUTPUT_LINES:]:
            console.print(log_line(entry), soft_wrap=True, highlight=False)
    console.print(progress.final_line(result), soft_wrap=True)


LEVEL_STYLES = {"DEBUG": "dim", "INFO": "", "WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold red"}


def log_line(entry: LogEntry, step: str | None = None, *, date: bool = False) -> Text:
    """`[2026-12-01 ]12:51:47.431  [step]  WARNING  message` (stdout and stderr lines name their stream)."""
    when = datetime.fromtimestamp(entry.created).strftime("%Y-%m-%d %H:%M:%S.%f" if date else "%H:%M:%S.%f")[:-3]
    source = f"  {entry.logger}" if entry.logger in ("stdout", "stderr") else ""
    return Text.assemble(
        (when, "dim"), "  ", *(((step, "bold"), "  ") if step else ()),
        (f"{entry.level:<7}", LEVEL_STYLES.get(entry.level, "")), (source, "dim"), "  ", entry.message,
    )


def print_interrupted(console: Console, progress: RunProgress) -> None:
    """After Ctrl-C: the table as far as the run got, and the run's id."""
    console.print(progress.summary_table())
    counts = progress.counts()
    run = f"run {progress.run_id}" if progress.run_id else "the run (no step had ended, its id unknown)"
    console.print(Text.assemble(
        (run, "bold"), " ", ("interrupted", "bold yellow"),
        f": {counts['succeeded']} succeeded, {counts['failed']} failed, {counts['running']} running, "
        f"{f'{queued} queued, ' if (queued := counts['queued']) else ''}{counts['pending']} not started, "
        f"{time.monotonic() - progress.started:.2f}s"), soft_wrap=True)
