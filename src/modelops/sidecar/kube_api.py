"""The few Kubernetes API calls the sidecar makes, with its container's ServiceAccount token (standard
library only: the image carries no Kubernetes client)."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


class ApiError(Exception):
    """The Kubernetes API could not be used: the message says why."""


class InClusterApi:
    def __init__(self, root: Path = SERVICE_ACCOUNT, host: str | None = None, timeout: float = 10.0):
        token_file = root / "token"
        if not token_file.is_file():
            raise ApiError(f"no ServiceAccount token at {token_file} (the container mounts none)")
        self.token_file = token_file  # read at every call: the kubelet rotates the projected token
        self.namespace = (root / "namespace").read_text().strip()
        if host is None:
            h, p = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            host = f"https://{'[' + h + ']' if h and ':' in h else h}:{p}" if h else "https://kubernetes.default.svc"
        self.host = host
        self.timeout = timeout
        ca = root / "ca.crt"
        self.context = ssl.create_default_context(cafile=str(ca) if ca.is_file() else None)

    def _call(self, method: str, path: str, body: dict | None = None, content_type: str = "") -> dict:
        headers = {"Authorization": f"Bearer {self.token_file.read_text().strip()}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.host + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as reply:
                return json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = ""
            try:
                detail = json.loads(exc.read()).get("message", "")
            except Exception:  # noqa: BLE001 - the status says enough
                pass
            raise ApiError(f"{method} {path}: HTTP {exc.code} {exc.reason}{': ' + detail if detail else ''}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ApiError(f"{method} {path}: {exc}") from None

    def pods(self, selector: str) -> dict[str, tuple[str, int | None]]:
        """Pod IP -> (name, its deletion cost now; None when unreadable) of the running pods `selector` names."""
        query = urllib.parse.urlencode({"labelSelector": selector})
        pods = self._call("GET", f"/api/v1/namespaces/{self.namespace}/pods?{query}")
        out = {}
        for pod in pods.get("items", []):
            meta = pod["metadata"]
            ip = pod.get("status", {}).get("podIP")
            if ip and not pod.get("spec", {}).get("hostNetwork") and not meta.get("deletionTimestamp"):
                try:
                    cost = int((meta.get("annotations") or {}).get(DELETION_COST, 0))
                except ValueError:
                    cost = None  # not ours to keep as is: rewritten at the next change
                out[ip] = (meta["name"], cost)
        return out

    def set_deletion_cost(self, pod: str, cost: int) -> None:
        """A merge patch of the one annotation: the Role allows patching pods, the sidecar patches only this."""
        self._call("PATCH", f"/api/v1/namespaces/{self.namespace}/pods/{pod}",
                   {"metadata": {"annotations": {DELETION_COST: str(int(cost))}}}, "application/merge-patch+json")
