"""The Kubernetes API as plain JSON, through the official client's configuration and transport.

The client library handles kubeconfig files and contexts, in-cluster service accounts, TLS and
authentication; requests go through its ApiClient with manifests as plain dicts, so a Job template
rendered by the chart reaches the API server field for field (the typed models would drop a field
they do not know).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class JobsError(Exception):
    """Something `mops jobs` cannot do; the message names what and why, and what was (not) created."""


class KubeError(JobsError):
    def __init__(self, status: int, reason: str, message: str, what: str):
        self.status, self.reason, self.api_message = status, reason, message
        super().__init__(f"{what}: {status} {reason}: {message}")


@dataclass
class Kube:
    api: object  # kubernetes.client.ApiClient
    namespace: str
    server: str

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None,
                namespace: str | None = None) -> Kube:
        try:
            from kubernetes import client, config
            from kubernetes.config.config_exception import ConfigException
        except ImportError:
            raise JobsError("mops jobs and mops results --release need the kubernetes package: "
                            "pip install 'modelops-dask[jobs]'") from None
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        try:
            if path is None and not Path("~/.kube/config").expanduser().exists() \
                    and os.environ.get("KUBERNETES_SERVICE_HOST"):
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api = client.ApiClient(configuration)
                default_namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
            else:
                api = config.new_client_from_config(config_file=path, context=context)
                _, active = config.list_kube_config_contexts(config_file=path)
                if context:
                    contexts, _ = config.list_kube_config_contexts(config_file=path)
                    active = next(c for c in contexts if c["name"] == context)
                default_namespace = active.get("context", {}).get("namespace") or "default"
        except (ConfigException, FileNotFoundError, StopIteration) as exc:
            raise JobsError(f"no usable Kubernetes configuration ({path or '~/.kube/config'}"
                            f"{', context ' + context if context else ''}): {exc}") from None
        return cls(api, namespace or default_namespace, api.configuration.host)

    # -- requests ---------------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, query: dict | None = None,
                content_type: str = "application/json", timeout: float | tuple = 60, what: str = ""):
        """The raw response (urllib3, not yet read) of one request; KubeError for a status >= 400."""
        headers = {"Accept": "application/json, */*"}
        if body is not None:
            headers["Content-Type"] = content_type
        resource = path + (f"?{urlencode(query)}" if query else "")
        try:
            method, url, headers, body, _ = self.api.param_serialize(
                method, resource, header_params=headers, body=body, auth_settings=["BearerToken"])
            response = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - urllib3's connection errors, named with the server
            if isinstance(exc, JobsError):
                raise
            raise JobsError(f"cannot reach the Kubernetes API server {self.server}: "
                            f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None
        if response.status >= 400:
            data = response.read()
            try:
                status = json.loads(data)
                message, reason = status.get("message", ""), status.get("reason", "")
            except ValueError:
                message, reason = data.decode(errors="replace")[:500].strip(), ""
            raise KubeError(response.status, reason or response.reason, message, what or f"{method} {path}")
        return response

    def json(self, method: str, path: str, body=None, query: dict | None = None,
             content_type: str = "application/json", what: str = "") -> dict:
        return json.loads(self.request(method, path, body, query, content_type, what=what).read() or b"{}")

    def get(self, path: str, query: dict | None = None, what: str = "") -> dict:
        return self.json("GET", path, query=query, what=what)

    def get_or_none(self, path: str, what: str = "") -> dict | None:
        try:
            return self.get(path, what=what)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def items(self, path: str, selector: str = "", what: str = "") -> list[dict]:
        return self.get(path, {"labelSelector": selector} if selector else None, what=what).get("items", [])

    def bytes(self, path: str, query: dict | None = None, timeout: float = 60, what: str = "") -> bytes:
        return self.request("GET", path, query=query, timeout=timeout, what=what).read()

    def lines(self, path: str, query: dict, what: str = "") -> Iterator[str]:
        """A streamed body's lines (e.g. a followed pod log), as they arrive."""
        response = self.request("GET", path, query=query, timeout=(10, None), what=what)
        buffer = b""
        for chunk in response.response.stream(4096, decode_content=True):
            buffer += chunk
            *whole, buffer = buffer.split(b"\n")
            for line in whole:
                yield line.decode(errors="replace")
        if buffer:
            yield buffer.decode(errors="replace")

    # -- paths ------------------------------------------------------------------------------------
    def ns_path(self, kind: str, name: str = "", group: str = "") -> str:
        base = f"/apis/{group}" if group else "/api/v1"
        return f"{base}/namespaces/{self.namespace}/{kind}" + (f"/{name}" if name else "")

    # -- who may do what --------------------------------------------------------------------------
    def allowed(self, verb: str, resource: str, group: str = "", subresource: str = "", name: str = "") -> bool:
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": {"namespace": self.namespace, "verb": verb, "group": group,
                                                  "resource": resource, "subresource": subresource, "name": name}}}
        answer = self.json("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review,
                           what="asking the API server what this user may do")
        return bool(answer.get("status", {}).get("allowed"))

    def whoami(self) -> str:
        try:
            review = self.json("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                               {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
            return review.get("status", {}).get("userInfo", {}).get("username") or "this user"
        except JobsError:
            return "this user"
