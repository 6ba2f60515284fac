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
            lines += [f"### `{path.name}`", "", "The plan failed before it wrote its report (see the job's log).", ""]
            continue
        stack, changes = report.get("stack", path.stem), report.get("changes") or []
        lines += [f"### Stack `{_cell(stack)}`", ""]
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
