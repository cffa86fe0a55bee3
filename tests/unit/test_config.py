"""Every rule of the worker's env config, including each bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from modelops.settings import BundleSource, ColdStart, ConfigError, ExecutorType, LogLevel
from modelops.worker.config import RuntimeConfig


@pytest.fixture
def base(tmp_path) -> dict[str, str]:
    return {"MODELOPS_BUNDLES_DIR": str(tmp_path)}


def test_defaults(base):
    config = RuntimeConfig.from_env(base)
    assert config.executor is ExecutorType.ISOLATED_WARM
    assert config.cold_start is ColdStart.FORK
    assert config.task_timeout_seconds == 0
    assert config.warm_max_tasks_per_process == 0
    assert config.bundle_source is BundleSource.FILE
    assert config.log_level is LogLevel.INFO
    assert config.worker_group == "default"
    assert config.cold_preload_modules == ()
    assert config.task_memory_limit_mb == 0


def test_reads_os_environ_when_no_mapping_given(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELOPS_EXECUTOR_TYPE", "cold")
    monkeypatch.setenv("MODELOPS_BUNDLES_DIR", str(tmp_path))
    assert RuntimeConfig.from_env().executor is ExecutorType.COLD


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("cold", "cold"), (" COLD ", "cold"), ("Direct", "direct"), ("isolated_warm\n", "isolated_warm")],
)
def test_executor_values_are_normalised(base, raw, expected):
    assert RuntimeConfig.from_env({**base, "MODELOPS_EXECUTOR_TYPE": raw}).executor.value == expected


def test_synonym_alone_sets_the_executor(base):
    assert RuntimeConfig.from_env({**base, "MODELOPS_EXECUTOR": "cold"}).executor is ExecutorType.COLD


def test_synonyms_that_agree_after_normalising_are_accepted(base):
    env = {**base, "MODELOPS_EXECUTOR": "Cold", "MODELOPS_EXECUTOR_TYPE": "cold "}
    assert RuntimeConfig.from_env(env).executor is ExecutorType.COLD


def test_synonyms_that_disagree_are_an_error_naming_both(base):
    env = {**base, "MODELOPS_EXECUTOR": "cold", "MODELOPS_EXECUTOR_TYPE": "isolated_warm"}
    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_env(env)
    message = str(info.value)
    assert "MODELOPS_EXECUTOR_TYPE" in message and "MODELOPS_EXECUTOR" in message
    assert "cold" in message and "isolated_warm" in message and "disagree" in message


@pytest.mark.parametrize("variable", ["MODELOPS_EXECUTOR_TYPE", "MODELOPS_EXECUTOR"])
def test_unknown_executor_names_variable_value_and_allowed(base, variable):
    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_env({**base, variable: "clod"})
    message = str(info.value)
    assert message.startswith(f"{variable}='clod'")
    assert "direct, isolated_warm, cold" in message
    assert info.value.variable == variable and info.value.value == "clod"


@pytest.mark.parametrize(
    ("variable", "raw", "allowed"),
    [
        ("MODELOPS_COLD_START", "forkk", "fork, spawn"),
        ("MODELOPS_BUNDLE_SOURCE", "s3", "file, image"),
        ("MODELOPS_LOG_LEVEL", "verbose", "DEBUG, INFO, WARNING, ERROR"),
        ("MODELOPS_TASK_TIMEOUT_SECONDS", "ten", "a number >= 0"),
        ("MODELOPS_TASK_TIMEOUT_SECONDS", "-1", "a number >= 0"),
        ("MODELOPS_TASK_TIMEOUT_SECONDS", "nan", "a number >= 0"),
        ("MODELOPS_TASK_TIMEOUT_SECONDS", "inf", "a number >= 0"),
        ("MODELOPS_WARM_MAX_TASKS_PER_PROCESS", "1.5", "an integer >= 0"),
        ("MODELOPS_WARM_MAX_TASKS_PER_PROCESS", "-2", "an integer >= 0"),
        ("MODELOPS_TASK_MEMORY_LIMIT_MB", "1G", "an integer >= 0"),
        ("MODELOPS_WORKER_GROUP", "two words", "a non-empty name without spaces"),
        ("MODELOPS_WORKER_GROUP", "  ", "a non-empty name without spaces"),
        ("MODELOPS_COLD_PRELOAD_MODULES", "numpy, scipy-stats", "a comma-separated list of module names"),
        ("MODELOPS_BUNDLES_DIR", " ", "a directory path"),
        ("MODELOPS_BUNDLE_CACHE_MAX_MB", "0", "an integer > 0"),
        ("MODELOPS_BUNDLE_CACHE_MAX_MB", "1.5", "an integer > 0"),
        ("MODELOPS_REGISTRY_PLAIN_HTTP", "sometimes", "`auto` or a boolean"),
        ("MODELOPS_PACKAGE_INDEX_URL", "pypi.org/simple", "an http://, https:// or file:// URL"),
        ("MODELOPS_BUNDLE_ENV_MAX_MB", "0", "an integer > 0"),
        ("MODELOPS_BUNDLE_SOURCE", "registry", "one of file, image, oci"),
    ],
)
def test_bad_values_are_errors_naming_variable_value_and_allowed(base, variable, raw, allowed):
    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_env({**base, variable: raw})
    message = str(info.value)
    assert info.value.variable == variable and repr(raw) in message and allowed in message


def test_missing_bundles_dir_is_an_error_for_file_bundles(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="MODELOPS_BUNDLES_DIR=.*nope.*an existing directory"):
        RuntimeConfig.from_env({"MODELOPS_BUNDLES_DIR": str(missing)})


def test_missing_bundles_dir_is_fine_for_image_bundles(tmp_path):
    env = {"MODELOPS_BUNDLES_DIR": str(tmp_path / "nope"), "MODELOPS_BUNDLE_SOURCE": "image"}
    assert RuntimeConfig.from_env(env).bundle_source is BundleSource.IMAGE


def test_every_variable_is_parsed(base, tmp_path):
    env = {
        "MODELOPS_EXECUTOR_TYPE": "cold",
        "MODELOPS_COLD_START": "Spawn",
        "MODELOPS_TASK_TIMEOUT_SECONDS": "12.5",
        "MODELOPS_WARM_MAX_TASKS_PER_PROCESS": "7",
        "MODELOPS_BUNDLE_SOURCE": "IMAGE",
        "MODELOPS_BUNDLES_DIR": f" {tmp_path} ",
        "MODELOPS_LOG_LEVEL": "debug",
        "MODELOPS_WORKER_GROUP": "leaky",
        "MODELOPS_COLD_PRELOAD_MODULES": "numpy, scipy.stats,,",
        "MODELOPS_TASK_MEMORY_LIMIT_MB": "512",
    }
    config = RuntimeConfig.from_env(env)
    assert config.executor is ExecutorType.COLD
    assert config.cold_start is ColdStart.SPAWN
    assert config.task_timeout_seconds == 12.5
    assert config.warm_max_tasks_per_process == 7
    assert config.bundle_source is BundleSource.IMAGE
    assert config.bundles_dir == Path(tmp_path)
    assert config.log_level is LogLevel.DEBUG
    assert config.worker_group == "leaky"
    assert config.cold_preload_modules == ("numpy", "scipy.stats")
    assert config.task_memory_limit_mb == 512


def test_unknown_modelops_variable_warns_with_closest_name(base, caplog):
    with caplog.at_level(logging.WARNING, logger="modelops.config"):
        RuntimeConfig.from_env({**base, "MODELOPS_EXECUTER_TYPE": "cold", "MODELOPS_ZZZ": "1"})
    messages = [r.getMessage() for r in caplog.records]
    assert any("MODELOPS_EXECUTER_TYPE" in m and "did you mean MODELOPS_EXECUTOR_TYPE?" in m for m in messages)
    assert any("MODELOPS_ZZZ" in m and "did you mean" not in m for m in messages)


def test_a_typo_does_not_change_the_executor(base):
    # the typo is warned about, and the executor stays the documented default, not the typo's value
    assert RuntimeConfig.from_env({**base, "MODELOPS_EXECUTER_TYPE": "cold"}).executor is ExecutorType.ISOLATED_WARM
