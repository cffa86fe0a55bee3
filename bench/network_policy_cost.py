"""What NetworkPolicy enforcement costs a new connection on the local cluster (kube-network-policies
over NFQUEUE): the same client pod opens N TCP connections to a server pod, with the diversion to the
enforcer on and off, alternating rounds in one run; median microseconds per connection and the ratio.

Root and a running `make cluster-up` cluster are needed (it toggles cluster/lib.sh's iptables chains,
and restores them). Usage: python bench/network_policy_cost.py [--connects 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "cluster"))

from cluster_support import Release, Target, restricted_pod  # noqa: E402

# Runs in the client pod: N connections, one after the other; prints the microseconds of each.
CONNECT = """python3 -c '
import json, socket, sys, time
out = []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter()
    socket.create_connection((sys.argv[1], 8080), timeout=10).close()
    out.append((time.perf_counter() - t0) * 1e6)
print(json.dumps(out))
'"""
SERVER = "python3 -c 'import socket; s = socket.create_server((\"\", 8080), backlog=128)\nwhile True: s.accept()[0].close()'"


def lib(function: str) -> None:
    subprocess.run(["bash", "-c", f"source {REPO}/cluster/lib.sh && {function}"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connects", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    target = Target.from_env_file(REPO / ".cluster" / "env")
    ns = Release(target, "helm4", "bench", f"bench-netpol-{uuid.uuid4().hex[:5]}")
    target.kubectl("create", "namespace", ns.namespace)
    try:
        for name, script in (("server", SERVER), ("client", "exec sleep 3600")):
            pod = restricted_pod(name, target.image, script, labels={"bench": name})
            ns.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
        ns.kubectl("wait", "--for=condition=Ready", "pod/server", "pod/client", "--timeout=180s", timeout=200)
        server = target.kubectl_json("--namespace", ns.namespace, "get", "pod", "server")["status"]["podIP"]
        results: dict[str, list[float]] = {"enforced": [], "not enforced": []}
        for _ in range(args.rounds):
            for mode in results:
                lib("divert_to_enforcer" if mode == "enforced" else "undivert_from_enforcer")
                time.sleep(1)
                out = ns.kubectl("exec", "client", "--", "sh", "-c", f"{CONNECT} {server} {args.connects}", timeout=600)
                results[mode].append(statistics.median(json.loads(out.strip().splitlines()[-1])))
    finally:
        lib("divert_to_enforcer")
        target.kubectl("delete", "namespace", ns.namespace, "--wait=false")
    on, off = statistics.median(results["enforced"]), statistics.median(results["not enforced"])
    print(f"{args.connects} connections x {args.rounds} rounds, median of the rounds' medians:")
    print(f"  enforced (first packet decided by kube-network-policies): {on:8.0f} us per connection")
    print(f"  not enforced (diversion removed):                         {off:8.0f} us per connection")
    print(f"  ratio {on / off:.2f}x, +{on - off:.0f} us per new connection (established traffic is not queued)")


if __name__ == "__main__":
    main()
