"""A pull request comment from ``aws_provision --plan --json`` reports."""

import json
from pathlib import Path

MARKER = "<!-- deploy_pipeline: infrastructure plan -->"


def _cell(value):
    return str(value).replace("|", "\\|").replace("\n", " ")


def plan_comment(paths):
    """Markdown for the reports in ``paths``; a missing or unreadable report is said, not skipped."""
    lines = [MARKER, "## Infrastructure plan", ""]
    for path in map(Path, paths):
        try:
            report = json.loads(path.read_text())
        except FileNotFoundError:
            lines += [f"### `{path.name}`", "", "No report: the plan did not run (see the job's log).", ""]
            continue
        except ValueError:
            report = None
        if not isinstance(report, dict):
            lines += [f"### `{path.name}`", "", "The plan failed before it wrote its report (see the job's log).", ""]
            continue
        stack, changes = report.get("stack", path.stem), report.get("changes") or []
        lines += [f"### Stack `{_cell(stack)}`" if "stack" in report else f"### `{path.name}`", ""]
        if report.get("ok") is False:
            # aws_provision --json writes its error into the report: a failed plan is not "no change".
            lines += [f"**The plan failed**: {_cell(report.get('error', 'no error given'))}", ""]
            continue
        if not changes:
            lines += ["No change.", ""]
            continue
        replaced = [c for c in changes if c.get("replacement") in ("True", "Conditional")]
        lines.append(f"{len(changes)} change(s)" + (f", **{len(replaced)} replacement(s)**" if replaced else "") + ":")
        lines += ["", "| action | resource | type | replacement |", "|---|---|---|---|"]
        for c in changes:
            lines.append(
                f"| {_cell(c.get('action', ''))} | `{_cell(c.get('resource', ''))}` | {_cell(c.get('type', ''))} | "
                f"{_cell(c.get('replacement') or '')} |"
            )
        lines.append("")
    lines.append("Applied after merge, from the `infrastructure` environment, once a reviewer approves.")
    return "\n".join(lines) + "\n"
