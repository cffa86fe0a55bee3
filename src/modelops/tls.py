"""TLS with client certificates between Dask components, and for the clients of `mops`.

Dask does the TLS itself (`distributed.comm.tls.*`): every connection to a `tls://` address needs a
certificate signed by the CA that the other side trusts, in both directions (Dask sets
`verify_mode = CERT_REQUIRED` on both ends, and checks no host name: the CA is the cluster's own).
This module only

- builds the client's `distributed.security.Security` from `--tls-ca-file/--tls-cert/--tls-key`,
  or from the Dask configuration (`distributed.comm.tls.ca-file`, `...client.cert`, `...client.key`,
  e.g. `DASK_DISTRIBUTED__COMM__TLS__CA_FILE`), checking the files first so that a missing or
  unreadable one is an error naming the option (or configuration key) and the path;
- says which environment variables give a Dask process (scheduler, worker and its nanny, client)
  its TLS settings from one directory holding `ca.crt`, `tls.crt` and `tls.key` (what the chart mounts);
- makes throwaway certificates with the openssl CLI for local TLS clusters (tests, `mops bench`).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

TLS_SCHEME = "tls://"
# The keys of a kubernetes.io/tls Secret with its CA (cert-manager writes the same three).
CA_KEY = "ca.crt"
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"

# option name -> the Dask configuration key it stands for
CA_CONFIG = "distributed.comm.tls.ca-file"
CERT_CONFIG = "distributed.comm.tls.client.cert"
KEY_CONFIG = "distributed.comm.tls.client.key"


class TLSConfigError(ValueError):
    """A TLS setting that cannot work, named with its value and what is expected."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


def dask_tls_env(directory: str | Path) -> dict[str, str]:
    """The environment that makes a Dask scheduler, worker (and nanny) or client use TLS with the
    certificate in `directory` for every role, and refuse plain TCP."""
    d = str(directory).rstrip("/")
    env = {
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": f"{d}/{CA_KEY}",
    }
    for role in ("SCHEDULER", "WORKER", "CLIENT"):
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__CERT"] = f"{d}/{CERT_KEY}"
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__KEY"] = f"{d}/{KEY_KEY}"
    return env


@dataclass(frozen=True)
class ClientTLS:
    ca_file: str
    cert: str
    key: str | None

    def security(self):
        from distributed.security import Security

        return Security(require_encryption=True, tls_ca_file=self.ca_file, tls_client_cert=self.cert,
                        tls_client_key=self.key)


def _from_config(key: str) -> str | None:
    import dask.config

    value = dask.config.get(key, default=None)
    return str(value) if value else None


def _readable(path: str, what: str, option: str) -> None:
    p = Path(path)
    try:
        with p.open("rb") as f:
            f.read(1)
    except IsADirectoryError:
        raise TLSConfigError(f"{what} {path}: is a directory, expected a PEM file", option) from None
    except OSError as exc:
        raise TLSConfigError(f"{what} {path}: cannot be read ({exc.strerror or exc})", option) from None


def client_tls(address: str, ca_file: str | None = None, cert: str | None = None,
               key: str | None = None) -> ClientTLS | None:
    """The client's TLS settings for connecting to `address`, checked; None for a plain address without
    TLS options. Options win over the Dask configuration, one by one."""
    sources = {
        "--tls-ca-file": (ca_file, CA_CONFIG),
        "--tls-cert": (cert, CERT_CONFIG),
        "--tls-key": (key, KEY_CONFIG),
    }
    if not address.startswith(TLS_SCHEME):
        named = [option for option, (value, _) in sources.items() if value]
        if named:
            raise TLSConfigError(f"{', '.join(named)} given for scheduler address {address!r}: TLS options need a "
                                 f"{TLS_SCHEME}HOST:PORT address", named[0])
        return None
    resolved: dict[str, tuple[str | None, str]] = {}
    for option, (value, config_key) in sources.items():
        if value:
            resolved[option] = (value, option)
        else:
            resolved[option] = (_from_config(config_key), f"{config_key} (Dask configuration)")
    for option in ("--tls-ca-file", "--tls-cert"):
        if not resolved[option][0]:
            config_key = sources[option][1]
            env = "DASK_" + config_key.upper().replace(".", "__").replace("-", "_")
            raise TLSConfigError(
                f"scheduler {address} uses TLS: give {option} (or set {config_key} in the Dask configuration, "
                f"e.g. {env}); a {TLS_SCHEME} scheduler accepts only clients with a certificate signed by its CA",
                option)
    ca_path, ca_what = resolved["--tls-ca-file"]
    cert_path, cert_what = resolved["--tls-cert"]
    key_path, key_what = resolved["--tls-key"]
    _readable(ca_path, f"{ca_what}: CA certificate", "--tls-ca-file")
    _readable(cert_path, f"{cert_what}: client certificate", "--tls-cert")
    if key_path:
        _readable(key_path, f"{key_what}: client key", "--tls-key")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        context.load_verify_locations(cafile=ca_path)
    except (ssl.SSLError, ValueError) as exc:
        raise TLSConfigError(f"{ca_what}: {ca_path} is not a PEM CA certificate ({exc})", "--tls-ca-file") from None
    try:
        context.load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, ValueError) as exc:
        key_part = f" and {key_what}: {key_path}" if key_path else " (holding its key too, as no key was given)"
        # the reason only (e.g. KEY_VALUES_MISMATCH, PEM lib): never the files' contents
        raise TLSConfigError(f"{cert_what}: {cert_path}{key_part} are not a PEM certificate and its private key "
                             f"({getattr(exc, 'reason', None) or exc})", "--tls-cert") from None
    return ClientTLS(ca_file=ca_path, cert=cert_path, key=key_path)


def client_security(address: str, ca_file: str | None = None, cert: str | None = None, key: str | None = None):
    """`distributed.security.Security` for a client of `address` (None: Dask's default for a plain address)."""
    tls = client_tls(address, ca_file, cert, key)
    return tls.security() if tls else None


# -- throwaway certificates (local TLS clusters: tests and `mops bench --transports`) -------------
class CertificateError(RuntimeError):
    """The openssl CLI is missing or could not make a certificate."""


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise CertificateError("the openssl CLI is not on PATH (it makes the local TLS cluster's certificates)")
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    if proc.returncode != 0:
        raise CertificateError(f"openssl {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A CA made by the openssl CLI: (certificate, key), P-256, valid two days."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}-ca.crt", directory / f"{name}-ca.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name} CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)
    return cert, key


def make_signed_cert(directory: Path, name: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A certificate for server and client use signed by `ca`: (certificate, key)."""
    cert, key, csr = directory / f"{name}.crt", directory / f"{name}.key", directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}", cwd=directory)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext), cwd=directory)
    return cert, key


def mount_dir(directory: Path, ca: Path, leaf: tuple[Path, Path]) -> Path:
    """`directory` holding ca.crt, tls.crt and tls.key as the chart mounts them (what `dask_tls_env` reads)."""
    directory.mkdir(parents=True, exist_ok=True)
    for source, target in ((ca, CA_KEY), (leaf[0], CERT_KEY), (leaf[1], KEY_KEY)):
        (directory / target).write_bytes(source.read_bytes())
    return directory


@dataclass(frozen=True)
class ThrowawayTLS:
    """A release's certificates, made locally: the pods' Secret (one certificate for scheduler, workers and
    nannies) and a user's own client certificate signed by the same CA."""

    pods_dir: Path
    client: ClientTLS


def make_throwaway_tls(directory: Path) -> ThrowawayTLS:
    ca = make_ca(directory, "throwaway")
    pods = mount_dir(directory / "pods", ca[0], make_signed_cert(directory, "pods", ca))
    cert, key = make_signed_cert(directory, "client", ca)
    return ThrowawayTLS(pods, ClientTLS(str(ca[0]), str(cert), str(key)))
