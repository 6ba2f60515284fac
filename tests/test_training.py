"""The training course's sandbox exercises, run as written against the sandbox, output checked against the course.

Each numbered exercise of a module's "## Exercises" runs its ``sh`` blocks line by line, in order, on a new
sandbox per module: ``python manage.py …`` in this process (through ``call_command``, with the line's
``VAR=value`` prefixes in the environment), ``kubectl`` and other commands in a shell. Every backquoted piece
of the exercise's *Expected* paragraph must appear in what the commands printed (``N`` stands for a number,
``…`` for anything). Exercises marked *(test cluster)* or *(by hand)* are left to people.
"""

import os
import re
import shlex
import shutil
import subprocess
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from deploy.k8s import rollout
from tests.conftest import ROOT
from tests.fake_apiserver import sandbox, write_sandbox_files

TRAINING = ROOT / "docs" / "training"
MODULES = sorted(TRAINING.glob("0*.md"))
LEFT_TO_PEOPLE = ("*(test cluster)*", "*(by hand)*")


def exercises(text):
    """[(number, [command lines], [expected pieces])] of the "## Exercises" section."""
    section = text.split("## Exercises", 1)[1].split("\n## ", 1)[0]
    found = []
    for item in re.split(r"\n(?=\d+\. )", section)[1:]:
        number = int(item.split(".", 1)[0])
        if any(mark in item for mark in LEFT_TO_PEOPLE):
            continue
        blocks = re.findall(r"```sh\n(.*?)\n\s*```", item, re.DOTALL)
        commands = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
        expected = re.search(r"\*Expected\*:(.*?)(?:\n\s*\n|\Z)", item, re.DOTALL)
        pieces = re.findall(r"`([^`]+)`", expected.group(1)) if expected else []
        found.append((number, commands, pieces))
    return found


def pattern(piece):
    text = re.escape(piece).replace("…", ".*?")
    return re.compile(re.sub(r"\\?\bN\b", r"\\d+", text))


def test_the_expected_pieces_are_patterns_that_can_fail():
    assert pattern("Revision N deployed").search("Revision 12 deployed")
    assert not pattern("Revision N deployed").search("Revision 12 failed")
    assert pattern("job django-app-migrate-… complete").search("job django-app-migrate-1a2b complete")
    sample = "1. Run:\n\n    ```sh\n    python manage.py check\n    ```\n\n    *Expected*: `ok` and `N`.\n"
    assert exercises("## Exercises\n\n" + sample) == [(1, ["python manage.py check"], ["ok", "N"])]


class Shell:
    def __init__(self, cwd, monkeypatch):
        self.cwd, self.monkeypatch = cwd, monkeypatch

    def run(self, line):
        tokens = shlex.split(line)
        env = {}
        while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):
            name, _, value = tokens.pop(0).partition("=")
            env[name] = value
        if tokens[:2] != ["python", "manage.py"]:
            result = subprocess.run(
                ["bash", "-c", line], cwd=self.cwd, env={**os.environ, **env}, capture_output=True, text=True,
                timeout=120,
            )  # fmt: skip
            return result.stdout + result.stderr + f"\n(exit status {result.returncode})\n"
        redirect = None
        if ">" in tokens:
            redirect = self.cwd / tokens[tokens.index(">") + 1]
            tokens = tokens[: tokens.index(">")]
        out = StringIO()
        status = 0
        with self.monkeypatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            try:
                call_command(*tokens[2:], stdout=out, stderr=out)
            except CommandError as exc:
                out.write(f"CommandError: {exc}\n")
                status = exc.returncode
        if redirect:
            redirect.write_text(out.getvalue())
            return f"(exit status {status})\n"
        return out.getvalue() + f"(exit status {status})\n"


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES, ids=[m.stem for m in MODULES])
def test_every_sandbox_exercise_prints_what_the_course_expects(module, tmp_path, monkeypatch):
    todo = exercises(module.read_text())
    if not todo:
        pytest.skip(f"{module.name} has no sandbox exercise")
    if any(line.startswith("kubectl") for _, commands, _ in todo for line in commands) and not shutil.which("kubectl"):
        pytest.skip("kubectl is not installed: the kubectl lines of the course need it")
    for name in list(os.environ):
        if name.startswith("DEPLOY_") or name in {"KUBECONFIG", "KUBERNETES_SERVICE_HOST"}:
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # kubectl's cache, the deploy's kubeconfig lookup
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rollout, "POLL_SECONDS", 0.05)
    shell = Shell(tmp_path, monkeypatch)
    failures = []
    with sandbox(tick=0.02) as server:
        _, env_file = write_sandbox_files(server, tmp_path / "build" / "sandbox")
        for line in env_file.read_text().splitlines():
            if line.startswith("export ") and not line.startswith("export DEBUG="):
                name, _, value = line.removeprefix("export ").partition("=")
                monkeypatch.setenv(name, value)
        for number, commands, pieces in todo:
            assert commands and pieces, f"{module.name} exercise {number}: no command or no expected result"
            printed = "".join(shell.run(line) for line in commands)
            missing = [piece for piece in pieces if not pattern(piece).search(printed)]
            if missing:
                failures.append(f"{module.name} exercise {number}: {missing} not in:\n{printed[-3000:]}")
    assert failures == [], "\n\n".join(failures)


def test_every_self_check_question_has_its_answer_folded_after_it():
    for module in MODULES:
        section = module.read_text().split("## Self-check", 1)[1]
        questions = re.findall(r"^- .+$", section, re.MULTILINE)
        answers = re.findall(r'^    \?\?\? note "Answer"\n(?:        .+\n?)+', section, re.MULTILINE)
        assert len(questions) >= 2 and len(answers) == len(questions), f"{module.name}: a question has no answer"
