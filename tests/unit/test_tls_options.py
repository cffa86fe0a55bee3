"""The client's TLS settings (`modelops.tls`, `--tls-*` of mops run/doctor): bad input is an error naming
the option (or Dask configuration key), the path and what is expected; no key material is ever printed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import dask.config
import pytest

from modelops.jobs.manifests import runner_args
from modelops.tls import TLSConfigError, client_security, client_tls, dask_tls_env
from tests.helpers import clean_env, make_tls_dir

REPO = Path(__file__).resolve().parents[2]
ADDRESS = "tls://sched.example:8786"

if shutil.which("openssl") is None:
    pytest.skip("the openssl CLI makes this module's certificates", allow_module_level=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_tls_dir(tmp_path_factory.mktemp("tls"))


def test_valid_files_give_a_security_that_requires_encryption(certs):
    security = client_security(ADDRESS, str(certs["ca"]), str(certs["cert"]), str(certs["key"]))
    assert security.require_encryption is True
    assert security.tls_ca_file == str(certs["ca"]) and security.tls_client_cert == str(certs["cert"])
    assert security.get_connection_args("client")["ssl_context"] is not None


def test_a_plain_address_without_options_needs_nothing():
    assert client_security("tcp://sched:8786") is None


def test_tls_options_for_a_plain_address_are_refused(certs):
    with pytest.raises(TLSConfigError, match=r"--tls-cert given for scheduler address 'tcp://s:1'.*tls://") as err:
        client_tls("tcp://s:1", cert=str(certs["cert"]))
    assert err.value.option == "--tls-cert"


def test_a_tls_address_without_a_ca_names_the_option_and_the_configuration_key(certs):
    with dask.config.set({"distributed.comm.tls.ca-file": None}):
        with pytest.raises(TLSConfigError) as err:
            client_tls(ADDRESS, cert=str(certs["cert"]), key=str(certs["key"]))
    text = str(err.value)
    assert "give --tls-ca-file" in text and "distributed.comm.tls.ca-file" in text
    assert "DASK_DISTRIBUTED__COMM__TLS__CA_FILE" in text and err.value.option == "--tls-ca-file"


@pytest.mark.parametrize("which", ["ca", "cert", "key"])
def test_a_missing_file_is_named_with_its_option_and_path(certs, tmp_path, which):
    files = {"ca": str(certs["ca"]), "cert": str(certs["cert"]), "key": str(certs["key"])}
    missing = str(tmp_path / f"no-{which}.pem")
    files[which] = missing
    with pytest.raises(TLSConfigError) as err:
        client_tls(ADDRESS, files["ca"], files["cert"], files["key"])
    option = {"ca": "--tls-ca-file", "cert": "--tls-cert", "key": "--tls-key"}[which]
    assert str(err.value).startswith(f"{option}: ") and missing in str(err.value)
    assert "cannot be read (No such file or directory)" in str(err.value)


def test_a_key_that_does_not_match_the_certificate_is_refused_without_printing_it(certs):
    with pytest.raises(TLSConfigError) as err:
        client_tls(ADDRESS, str(certs["ca"]), str(certs["cert"]), str(certs["foreign_key"]))
    text = str(err.value)
    assert "are not a PEM certificate and its private key" in text and str(certs["foreign_key"]) in text
    assert "PRIVATE KEY" not in text and certs["foreign_key"].read_text().splitlines()[1] not in text


def test_a_ca_file_that_is_not_a_certificate_is_refused(certs):
    with pytest.raises(TLSConfigError, match=r"--tls-ca-file: .* is not a PEM CA certificate"):
        client_tls(ADDRESS, str(certs["key"]), str(certs["cert"]), str(certs["key"]))


def test_the_dask_configuration_is_used_when_no_option_is_given(certs):
    with dask.config.set({"distributed.comm.tls.ca-file": str(certs["ca"]),
                          "distributed.comm.tls.client.cert": str(certs["cert"]),
                          "distributed.comm.tls.client.key": str(certs["key"])}):
        tls = client_tls(ADDRESS)
        assert (tls.ca_file, tls.cert, tls.key) == (str(certs["ca"]), str(certs["cert"]), str(certs["key"]))
        # an option wins over the configuration, and a bad configured path is named by its key
    with dask.config.set({"distributed.comm.tls.ca-file": "/nonexistent/ca.crt"}):
        with pytest.raises(TLSConfigError, match=r"distributed.comm.tls.ca-file \(Dask configuration\).*"
                                                 r"/nonexistent/ca.crt: cannot be read"):
            client_tls(ADDRESS, cert=str(certs["cert"]), key=str(certs["key"]))


def test_the_pod_environment_is_what_dask_reads(certs):
    """dask_tls_env (the chart renders the same variables) gives every role the mounted files."""
    env = dask_tls_env("/etc/modelops/tls/")
    config = dask.config.collect_env(env)["distributed"]["comm"]
    assert config["require_encryption"] is True
    assert config["tls"]["ca_file"] == "/etc/modelops/tls/ca.crt"
    for role in ("scheduler", "worker", "client"):
        assert config["tls"][role] == {"cert": "/etc/modelops/tls/tls.crt", "key": "/etc/modelops/tls/tls.key"}


def test_mops_run_names_the_option_and_path_and_exits_2(tmp_path, certs):
    missing = tmp_path / "laptop.crt"
    done = subprocess.run([sys.executable, "-m", "modelops.cli.main", "run", "examples/sir/study.json",
                           "--scheduler", ADDRESS, "--tls-ca-file", str(certs["ca"]), "--tls-cert", str(missing),
                           "--tls-key", str(certs["key"])], capture_output=True, text=True, env=clean_env(),
                          cwd=REPO, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--tls-cert" in done.stderr and str(missing) in done.stderr and "cannot be read" in done.stderr


def test_runner_args_carry_the_release_certificate_paths():
    tls = {"caFile": "/etc/modelops/tls/ca.crt", "certFile": "/etc/modelops/tls/tls.crt",
           "keyFile": "/etc/modelops/tls/tls.key"}
    args = runner_args("/s/study.json", "tls://rel-scheduler:8786", "file:///r", "job-1", tls=tls)
    assert args[args.index("--scheduler") + 1] == "tls://rel-scheduler:8786"
    assert args[args.index("--tls-ca-file") + 1] == "/etc/modelops/tls/ca.crt"
    assert args[args.index("--tls-cert") + 1] == "/etc/modelops/tls/tls.crt"
    assert args[args.index("--tls-key") + 1] == "/etc/modelops/tls/tls.key"
    assert "--tls-cert" not in runner_args("/s/study.json", "tcp://rel-scheduler:8786", "file:///r", "job-1")
