"""Study requirements (routing.py): what a study may require, and how it is checked."""

from __future__ import annotations

import json

import pytest

from modelops.routing import NoWorkerForRequirement, Requirement, check_requirement, worker_resources
from modelops.study import Study, StudyError

WORKERS = {
    "tcp://a:1": {"resources": worker_resources("isolated_warm", "default")},
    "tcp://b:1": {"resources": worker_resources("cold", "cold")},
}


def test_study_file_requires_executor_and_group(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"name": "s", "bundle": "sir", "parameters": [{}],
                                "requires": {"executor": "cold", "group": "cold"}}))
    study = Study.load(path)
    assert study.requires.resources() == {"modelops-executor-cold": 1, "modelops-group-cold": 1}


def test_a_study_without_requires_has_no_restriction():
    study = Study(name="s", bundle="sir", parameters=[{}])
    assert not study.requires and study.requires.resources() is None


@pytest.mark.parametrize("requires, field", [({"executor": "hot"}, "requires.executor"),
                                             ({"group": "a b"}, "requires.group"),
                                             ({"gruop": "cold"}, "requires.gruop")])
def test_bad_requires_is_refused_naming_the_field(tmp_path, requires, field):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"name": "s", "bundle": "sir", "parameters": [{}], "requires": requires}))
    with pytest.raises(StudyError, match=field.replace(".", r"\.")):
        Study.load(path)


def test_check_requirement_returns_the_matching_workers():
    assert check_requirement(Requirement(executor="cold"), WORKERS) == ["tcp://b:1"]
    assert check_requirement(Requirement(group="default"), WORKERS) == ["tcp://a:1"]


def test_check_requirement_names_the_requirement_and_the_groups_connected():
    with pytest.raises(NoWorkerForRequirement) as err:
        check_requirement(Requirement(executor="direct", group="debug"), WORKERS)
    assert "executor 'direct' in group 'debug'" in str(err.value)
    assert "cold (cold), default (isolated_warm)" in str(err.value)
