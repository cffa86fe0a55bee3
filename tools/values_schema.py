#!/usr/bin/env python3
"""Writes charts/modelops-dask/values.schema.json (JSON Schema draft-07) and the chart's lists of
settings (templates/_helpers-settings.tpl), both from src/modelops/settings.py, the one registry.

The worker settings appear twice (worker.* and each worker.groups entry, where every key is
optional), so the schema is generated rather than edited by hand. Every object is closed with
`additionalProperties: false`, so a misspelt key fails `helm install/upgrade/template/lint`.

    python tools/values_schema.py          # rewrite the schema and the lists
    python tools/values_schema.py --check  # exit 1 if either committed file is out of date
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "charts" / "modelops-dask" / "values.schema.json"
LISTS = ROOT / "charts" / "modelops-dask" / "templates" / "_helpers-settings.tpl"
sys.path.insert(0, str(ROOT / "src"))

from modelops import settings  # noqa: E402 - the registry: stdlib-only, importable without the package's deps


def values(enum) -> list[str]:
    return [member.value for member in enum]


EXECUTORS = values(settings.ExecutorType)


def obj(props: dict, required: list[str] | None = None, description: str | None = None) -> dict:
    """A closed object: only the listed properties are allowed."""
    out: dict = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        out["required"] = required
    if description:
        out["description"] = description
    return out


def ref(name: str) -> dict:
    return {"$ref": f"#/definitions/{name}"}


STR = {"type": "string"}
BOOL = {"type": "boolean"}
INT0 = {"type": "integer", "minimum": 0}
INT1 = {"type": "integer", "minimum": 1}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
# Free-form Kubernetes objects (affinity, resources, ...): validated by the API server, not here.
K8S_OBJECT = {"type": "object"}
K8S_LIST = {"type": "array", "items": {"type": "object"}}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
SCALAR = {"type": ["string", "number", "boolean"]}
# Maps a worker group may clear with null (a group's value replaces the inherited one; {} would merge).
NULLABLE_OBJECT = {"type": ["object", "null"]}
NULLABLE_STRING_MAP = {"type": ["object", "null"], "additionalProperties": {"type": "string"}}
CONTAINERS = {"type": "array", "items": obj({"name": {"type": "string", "minLength": 1}}, required=["name"]) | {
    "additionalProperties": True}}

DEFINITIONS = {
    "executor": obj(
        {
            "type": {"type": "string", "enum": EXECUTORS,
                     "description": "MODELOPS_EXECUTOR_TYPE: " + " | ".join(EXECUTORS)},
            "coldStart": {"type": "string", "enum": values(settings.ColdStart), "description": "MODELOPS_COLD_START"},
            "taskTimeoutSeconds": {"type": "number", "minimum": 0,
                                   "description": "MODELOPS_TASK_TIMEOUT_SECONDS (0 = no limit)"},
            "warmMaxTasksPerProcess": dict(INT0, description="MODELOPS_WARM_MAX_TASKS_PER_PROCESS (0 = never recycle)"),
            "taskMemoryLimitMb": dict(INT0, description="MODELOPS_TASK_MEMORY_LIMIT_MB (0 = none)"),
            "coldPreloadModules": {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_.]*$"},
                                   "description": "MODELOPS_COLD_PRELOAD_MODULES (comma-joined)"},
            "bundleImportTimeoutSeconds": {"type": "number", "exclusiveMinimum": 0,
                                           "description": "MODELOPS_BUNDLE_IMPORT_TIMEOUT_SECONDS (> 0)"},
            "coldImportRng": {"type": "string", "enum": values(settings.ImportRng),
                              "description": "MODELOPS_COLD_IMPORT_RNG: " + " | ".join(values(settings.ImportRng))},
        }
    ),
    "bundles": obj(
        {
            "source": {"type": "string", "enum": values(settings.BundleSource), "description": "MODELOPS_BUNDLE_SOURCE"},
            "dir": {"type": "string", "pattern": "^/", "description": "MODELOPS_BUNDLES_DIR (absolute path)"},
            "volume": dict(NULLABLE_OBJECT, description="Volume source mounted read-only at dir; {} or null = none"),
            "oci": obj(
                {
                    "plainHttp": {"enum": [*values(settings.PlainHttp), True, False],
                                  "description": "MODELOPS_REGISTRY_PLAIN_HTTP: " + " | ".join(values(settings.PlainHttp))},
                    "pullSecret": {"type": "string", "pattern": "^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$",
                                   "description": "Secret (kubernetes.io/dockerconfigjson) mounted as DOCKER_CONFIG; '' = none"},
                    "cache": obj(
                        {
                            "dir": {"type": "string", "pattern": "^/",
                                    "description": "MODELOPS_BUNDLE_CACHE_DIR (absolute path; the cache volume's mount)"},
                            "maxMb": dict(INT1, description="MODELOPS_BUNDLE_CACHE_MAX_MB (> 0)"),
                            "sizeLimit": {"type": ["string", "integer"], "description": "sizeLimit of the cache emptyDir"},
                            "existingClaim": {"type": "string", "description": "a PVC for the cache instead of the emptyDir"},
                        }
                    ),
                    "registryEgress": dict(K8S_LIST, description="NetworkPolicy egress rules reaching the registry"),
                }
            ),
            "environments": obj(
                {
                    "packageIndexUrl": {"type": "string", "pattern": "^$|^(https?|file)://\\S+$",
                                        "description": "MODELOPS_PACKAGE_INDEX_URL: http(s):// or file:// URL, "
                                                       "'' = the bundle's own wheels only"},
                    "packageIndexUrlSecret": obj(
                        {
                            "name": {"type": "string", "pattern": "^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$",
                                     "description": "an existing Secret holding MODELOPS_PACKAGE_INDEX_URL; '' = none"},
                            "key": {"type": "string", "pattern": "^[-._a-zA-Z0-9]+$",
                                    "description": "the Secret's key holding the URL"},
                        }
                    ),
                    "maxMb": dict(INT1, description="MODELOPS_BUNDLE_ENV_MAX_MB (> 0)"),
                }
            ),
        }
    ),
    "probe": obj(
        {
            "enabled": BOOL,
            "initialDelaySeconds": INT0,
            "periodSeconds": INT1,
            "timeoutSeconds": INT1,
            "failureThreshold": INT1,
        }
    ),
    "env": {
        "description": "A map {NAME: value} or a list [{name, value|valueFrom}] (null: none); values are rendered as strings",
        "oneOf": [
            {"type": "null"},
            {
                "type": "object",
                "propertyNames": {"pattern": "^[-._a-zA-Z][-._a-zA-Z0-9]*$"},
                "additionalProperties": {
                    "oneOf": [
                        SCALAR,
                        obj({"valueFrom": K8S_OBJECT}, required=["valueFrom"]),
                    ]
                },
            },
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[-._a-zA-Z][-._a-zA-Z0-9]*$"},
                        "value": SCALAR,
                        "valueFrom": K8S_OBJECT,
                    },
                },
            },
        ],
    },
    "drain": obj(
        {
            "enabled": dict(BOOL, description="preStop hook `mops drain` before SIGTERM"),
            "marginSeconds": dict(INT0, description="seconds of the grace period kept for Dask to close"),
        }
    ),
    "autoscaling": obj(
        {
            "enabled": dict(BOOL, description="a KEDA ScaledObject for this group; replicas is then not rendered"),
            "minReplicas": dict(INT0, description="fewest pods (0: scale to zero)"),
            "maxReplicas": dict(INT1, description="most pods (>= 1, >= minReplicas: checked at render)"),
            "pollingInterval": dict(INT1, description="seconds between KEDA's reads of the scheduler's demand"),
            "cooldownPeriod": dict(INT0, description="seconds after the last demand before scaling to zero"),
            "scaleDown": dict(
                obj(
                    {
                        "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
                        "selectPolicy": {"type": "string", "enum": ["Max", "Min", "Disabled"]},
                        "policies": {"type": "array", "items": obj(
                            {"type": {"type": "string", "enum": ["Pods", "Percent"]},
                             "value": INT1, "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800}},
                            required=["type", "value", "periodSeconds"])},
                    }
                ),
                description="the HPA's behavior.scaleDown",
            ),
        }
    ),
    "pdb": obj(
        {
            "enabled": BOOL,
            "maxUnavailable": {"type": ["integer", "string"]},
            "minAvailable": {"type": ["integer", "string"]},
        }
    ),
}

# The image reference: top-level `image` (repository required) and each worker group's override.
IMAGE = {
    "repository": {"type": "string", "minLength": 1},
    "tag": {"type": ["string", "number"]},
    "digest": {"type": "string", "pattern": "^(sha256:[a-f0-9]{64})?$"},
    "pullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]},
}

# Worker settings: valid under worker.* and, every one optional, in each worker.groups entry.
# Pod metadata and placement, the same for the scheduler and every worker group.
POD_SETTINGS = {
    "podAnnotations": NULLABLE_STRING_MAP,
    "podLabels": NULLABLE_STRING_MAP,
    "nodeSelector": NULLABLE_STRING_MAP,
    "affinity": NULLABLE_OBJECT,
    "tolerations": K8S_LIST,
    "topologySpreadConstraints": K8S_LIST,
    "priorityClassName": STR,
    "terminationGracePeriodSeconds": INT0,
}

WORKER_SETTINGS = {
    "replicas": INT0,
    "replicasOwner": dict(
        {"type": "string", "enum": ["values", "cluster"]},
        description="who sets the group's pod count: `values` (replicas, at every upgrade) or `cluster` "
                    "(replicas at install, then kubectl scale or an external autoscaler; the chart keeps the "
                    "live count); with autoscaling.enabled, KEDA",
    ),
    "nworkers": INT1,
    "nthreads": INT1,
    "memoryLimit": {
        "description": '"auto" (the container limit / nworkers), 0 (none), bytes, or a size such as "4GiB"',
        "oneOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string", "pattern": r"^(auto|[0-9]+(\.[0-9]+)? ?([kKmMgGtTpP][iI]?[bB]?|[bB])?)$"},
        ],
    },
    "healthPort": PORT,
    "localDirectory": {"type": "string", "pattern": "^/tmp(/|$)", "description": "must be under /tmp"},
    "nameFromPod": BOOL,
    "extraArgs": {"type": "array", "items": SCALAR},
    "image": obj(IMAGE, description="This group's image, laid key by key over the top-level image"),
    "executor": ref("executor"),
    "bundles": ref("bundles"),
    "logLevel": {"type": "string", "enum": values(settings.LogLevel)},
    "env": ref("env"),
    "envFrom": K8S_LIST,
    "secretEnv": {"type": ["object", "null"], "additionalProperties": SCALAR},
    "resources": NULLABLE_OBJECT,
    "extraVolumes": dict(CONTAINERS, description="Extra pod volumes (Kubernetes Volume objects)"),
    "extraVolumeMounts": {"type": "array", "items": {"type": "object", "required": ["name", "mountPath"]}},
    "initContainers": dict(CONTAINERS, description="Init containers (Kubernetes Container objects)"),
    "extraContainers": dict(CONTAINERS, description="Sidecar containers beside `worker`"),
    "lifecycle": dict(NULLABLE_OBJECT, description="Lifecycle hooks; preStop only with drain.enabled=false"),
    "readinessProbe": ref("probe"),
    "livenessProbe": ref("probe"),
    "podDisruptionBudget": ref("pdb"),
    "drain": ref("drain"),
    "autoscaling": ref("autoscaling"),
    **POD_SETTINGS,
}


DURATION = {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}
MONITOR = {"enabled": BOOL, "interval": DURATION, "scrapeTimeout": DURATION, "labels": STRING_MAP}


def scheduler_schema() -> dict:
    return obj(
        {
            "ports": obj({"comm": PORT, "dashboard": PORT}, required=["comm", "dashboard"]),
            "extraArgs": {"type": "array", "items": SCALAR},
            "env": ref("env"),
            "resources": K8S_OBJECT,
            "service": obj(
                {
                    "type": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                    "annotations": STRING_MAP,
                    "labels": STRING_MAP,
                }
            ),
            "readinessProbe": ref("probe"),
            "livenessProbe": ref("probe"),
            "ingress": obj(
                {
                    "enabled": BOOL,
                    "className": STR,
                    "annotations": STRING_MAP,
                    "host": STR,
                    "path": {"type": "string", "pattern": "^/"},
                    "pathType": {"type": "string", "enum": ["Prefix", "Exact", "ImplementationSpecific"]},
                    "tls": K8S_LIST,
                },
                description="Ingress to the scheduler's dashboard",
            ),
            "podDeletionCost": dict(
                {"type": "string", "enum": ["auto", "enabled", "disabled"]},
                description="the scheduler keeps the worker pods' pod-deletion-cost at their running tasks "
                            "(auto: when a group autoscales)",
            ),
            "httpRoute": obj(
                {
                    "enabled": BOOL,
                    "parentRefs": K8S_LIST,
                    "hostnames": {"type": "array", "items": {"type": "string"}},
                    "path": {"type": "string", "pattern": "^/"},
                    "annotations": STRING_MAP,
                },
                description="Gateway API HTTPRoute to the scheduler's dashboard",
            ),
            **POD_SETTINGS,
        }
    )


def worker_schema() -> dict:
    """worker.*: every worker setting plus `groups`, each group every setting, all optional."""
    props = copy.deepcopy(WORKER_SETTINGS)
    props["groups"] = {
        "type": "object",
        "description": "Extra worker groups keyed by name; each inherits worker.* and overrides what it sets",
        "propertyNames": {"pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 20, "not": {"enum": ["default"]}},
        "additionalProperties": ref("workerGroup"),
    }
    return obj(props)


def pod_wide_properties() -> dict:
    """Settings shared by every pod of the release: image, service account, security, /tmp, dask config."""
    return {
        "image": obj(copy.deepcopy(IMAGE), required=["repository"]),
        "imagePullSecrets": {
            "type": "array",
            "items": {"oneOf": [{"type": "string", "minLength": 1},
                                obj({"name": {"type": "string", "minLength": 1}}, required=["name"])]},
        },
        "serviceAccount": obj({"create": BOOL, "name": STR, "annotations": STRING_MAP}),
        "podSecurityContext": K8S_OBJECT,
        "containerSecurityContext": K8S_OBJECT,
        "tmpVolume": obj(
            {
                "sizeLimit": {"type": ["string", "integer"]},
                "medium": {"type": "string", "enum": ["", "Memory"]},
            }
        ),
        "daskConfig": dict(K8S_OBJECT, description="dask.yaml content mounted at /etc/dask"),
    }


DNS_NAME = {"type": "string", "pattern": "^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$", "maxLength": 253}
QUANTITY = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"}
# A key of a Secret's data.
SECRET_KEY = {"type": "string", "pattern": "^[-._a-zA-Z0-9]+$", "maxLength": 253}


def jobs_schema() -> dict:
    """jobs.*: the runner Job template that `mops jobs submit` fills in, and who may submit."""
    return obj(
        {
            "enabled": BOOL,
            "runner": obj(
                {
                    "backoffLimit": dict(INT0, description="runner pods that may fail before the Job fails"),
                    "activeDeadlineSeconds": dict(INT0, description="0 = no limit"),
                    "ttlSecondsAfterFinished": {"type": ["integer", "null"], "minimum": 0,
                                                "description": "null = finished Jobs are kept"},
                    "terminationGracePeriodSeconds": INT0,
                    "resources": K8S_OBJECT,
                    "nodeSelector": STRING_MAP,
                    "tolerations": K8S_LIST,
                    "affinity": K8S_OBJECT,
                    "podLabels": STRING_MAP,
                    "podAnnotations": STRING_MAP,
                }
            ),
            "submitters": obj(
                {
                    "subjects": {
                        "type": "array",
                        "description": "RBAC subjects bound to the submitter Role",
                        "items": obj(
                            {
                                "kind": {"type": "string", "enum": ["User", "Group", "ServiceAccount"]},
                                "name": {"type": "string", "minLength": 1},
                                "namespace": DNS_NAME,
                                "apiGroup": {"type": "string", "enum": ["", "rbac.authorization.k8s.io"]},
                            },
                            required=["kind", "name"],
                        ),
                    }
                }
            ),
        }
    )


def results_schema() -> dict:
    """results.*: the store runner pods write to and its read-only server. The URL has no pattern
    here: the chart checks it at render, so that a URL holding credentials is refused without being
    printed (a schema error repeats the value)."""
    return obj(
        {
            "url": {"type": "string", "description": "'' = the release's claim, or s3://BUCKET[/PREFIX]"},
            "persistence": obj(
                {
                    "size": QUANTITY,
                    "storageClassName": {"type": ["string", "null"],
                                         "description": "null = the default class, '' = no class"},
                    "accessModes": {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "description": "ReadWriteOnce and/or ReadWriteMany: runner pods write and the results "
                                       "server reads at once (not ReadWriteOncePod, not ReadOnlyMany)",
                        "items": {"type": "string", "enum": ["ReadWriteOnce", "ReadWriteMany"]},
                    },
                    "existingClaim": DNS_NAME,
                    "keep": dict(BOOL, description="helm.sh/resource-policy: keep on the claim"),
                }
            ),
            "s3": obj(
                {
                    "endpoint": {"type": "string", "pattern": "^$|^https?://[^\\s@/]+(/\\S*)?$",
                                 "description": "http(s):// endpoint of an S3-compatible store; '' = AWS"},
                    "region": {"type": "string", "pattern": "^[-a-z0-9]*$"},
                    "existingSecret": DNS_NAME,
                    "accessKeyIdKey": SECRET_KEY,
                    "secretAccessKeyKey": SECRET_KEY,
                }
            ),
            "server": obj(
                {
                    "port": PORT,
                    "resources": K8S_OBJECT,
                    "allowFrom": dict(K8S_LIST, description="NetworkPolicy peers allowed to the results server"),
                }
            ),
        }
    )


def schema() -> dict:
    definitions = copy.deepcopy(DEFINITIONS)
    definitions["workerGroup"] = obj(copy.deepcopy(WORKER_SETTINGS))
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "modelops-dask values",
        "type": "object",
        "additionalProperties": False,
        "definitions": definitions,
        "properties": {
            # Helm passes `global` to every chart; allowing it keeps the chart usable as a subchart.
            "global": {"type": "object"},
            "nameOverride": STR,
            "fullnameOverride": STR,
            **pod_wide_properties(),
            "scheduler": scheduler_schema(),
            "worker": worker_schema(),
            "networkPolicy": obj(
                {
                    "enabled": BOOL,
                    "restrictWorkerEgress": BOOL,
                    "extraWorkerEgress": K8S_LIST,
                    "dnsTo": dict(K8S_LIST, description="NetworkPolicy peers of the cluster DNS (the workers' port 53 egress)"),
                    "clientPodLabels": STRING_MAP,
                    "clientNamespaceSelector": K8S_OBJECT,
                    "metricsFrom": K8S_LIST,
                }
            ),
            "tls": obj(
                {
                    "enabled": BOOL,
                    "existingSecret": {"type": "string", "pattern": "^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$",
                                       "maxLength": 253,
                                       "description": "Secret with ca.crt, tls.crt, tls.key; "
                                                      "empty: generated or cert-manager"},
                    "certManager": obj(
                        {
                            "enabled": BOOL,
                            "issuerRef": obj({"name": STR,
                                              "kind": {"type": "string", "enum": ["Issuer", "ClusterIssuer"]},
                                              "group": {"type": "string", "minLength": 1}}),
                            "duration": DURATION,
                            "renewBefore": DURATION,
                            "caDuration": DURATION,
                        }
                    ),
                    "generated": obj({"days": INT1}),
                },
                description="TLS with client certificates between Dask components (distributed.comm.tls)",
            ),
            "serviceMonitor": obj(dict(MONITOR)),
            "podMonitor": obj(dict(MONITOR), description="PodMonitor for every worker pod's /metrics (all groups)"),
            "jobs": jobs_schema(),
            "results": results_schema(),
            "tests": obj(
                {
                    "enabled": BOOL,
                    "probeTasks": INT0,
                    "minWorkers": {"oneOf": [INT1, {"type": "string", "enum": ["all"]}]},
                    "timeoutSeconds": INT1,
                    "resources": K8S_OBJECT,
                }
            ),
        },
    }


def render() -> str:
    return json.dumps(schema(), indent=2) + "\n"


def render_lists() -> str:
    """The registry's lists as named templates the chart's validation includes (JSON arrays)."""
    worker = [name for s in settings.SETTINGS if s.reader == "worker" for name in s.names]
    lists = {
        # every MODELOPS_* name a worker, the scheduler or the entrypoint reads (synonyms included)
        "variables": list(settings.KNOWN_VARS),
        # the worker settings: the chart sets each from its own values, so a group's env may not
        "workerVariables": worker,
        "executorTypes": EXECUTORS,
    }
    out = ["{{/*", "Generated by tools/values_schema.py from src/modelops/settings.py: do not edit.", "*/}}"]
    for name, items in lists.items():
        out.append(f'{{{{- define "modelops-dask.settings.{name}" -}}}}{json.dumps(items)}{{{{- end -}}}}')
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    outputs = {TARGET: render(), LISTS: render_lists()}
    if "--check" in argv:
        stale = [path for path, text in outputs.items() if not path.exists() or path.read_text() != text]
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run python tools/values_schema.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
