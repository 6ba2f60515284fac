"""What ``pip install`` of this repository installs: every package of the deploy app, found on disk."""

import tomllib

from tests.conftest import ROOT


def test_every_package_of_the_deploy_app_is_in_pyprojects_list():
    # setuptools installs only the packages pyproject.toml lists: deploy/conf/ (once deploy/conf.py),
    # deploy/aws/cfn/ and deploy/pipeline/ were left out, and an adopter's `pip install` had no deploy.conf,
    # so every command failed at import (docs/adopting.md).
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "deploy").rglob("__init__.py")} | {
        "deploy.k8s_templates"
    }
    assert sorted(on_disk - listed) == []
    assert sorted(listed - on_disk) == []
