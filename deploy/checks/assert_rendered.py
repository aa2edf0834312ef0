"""Assertions on the chart's rendered manifests (make deploy-check):

    python3 assert_rendered.py RENDERED.yaml [--discovering SERVICE ...]

Every workload has native gRPC startup/readiness/liveness probes, requests
and limits, the security context (non-root, read-only root, no privilege
escalation, every capability dropped, seccomp RuntimeDefault), a preStop
pause, a termination grace period above preStop + drain, and a
PodDisruptionBudget selecting it. RBAC exists only for the service accounts
of the services named by --discovering, grants only list/watch on
EndpointSlices, and only those pods mount a token. Every service but the
gateway has a NetworkPolicy whose every rule names its sources, and its
gRPC port admits exactly its callers (CALLERS below) and the `helm test`
pods. Every `MLMESH_*` variable a container is given is a setting of its
service: a row of the service's generated settings reference
(docs/configuration/mlmesh-<service>.md), so a renamed or misspelt key in a
template fails here instead of being ignored at run time. Exits 1 naming
every failure.
"""

import argparse
import pathlib
import re
import sys

import yaml

failures: list[str] = []

# Who calls whom: the only pods a service's gRPC port admits (besides
# `helm test` pods and, for the registry, labelled client namespaces).
CALLERS = {
    "embedding": {"gateway"},
    "vector-search": {"gateway"},
    "inference": {"gateway"},
    "registry": {"inference"},
}


def check(cond: bool, what: str) -> None:
    if not cond:
        failures.append(what)


ROOT = pathlib.Path(__file__).resolve().parents[2]


def known_variables(service: str) -> set[str]:
    """The environment variables of a service's generated settings reference."""
    page = ROOT / "docs" / "configuration" / f"mlmesh-{service}.md"
    if not page.exists():
        failures.append(f"{page} is missing")
        return set()
    return set(re.findall(r"^\| `[^`]+` \| `(MLMESH_[A-Z0-9_]+)` \|", page.read_text(), re.M))


def env_value(container: dict, name: str):
    for e in container.get("env", []):
        if e["name"] == name:
            return e.get("value")
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("--discovering", nargs="*", default=[])
    ap.add_argument("--admin-token", action="store_true",
                    help="registry and inference must read the admin token from a mounted Secret")
    ap.add_argument("--tls", action="store_true",
                    help="every service but the gateway serves mutual TLS from a cert-manager Secret")
    args = ap.parse_args()
    with open(args.rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
    check(bool(workloads), "no workloads rendered")
    pdbs = by_kind.get("PodDisruptionBudget", [])
    discovering_sas = set()
    for w in workloads:
        name = f'{w["kind"]}/{w["metadata"]["name"]}'
        component = w["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = w["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        check(psc.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot")
        check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: seccomp RuntimeDefault")
        check(w["metadata"].get("namespace") is not None, f"{name}: namespace set")
        if component in args.discovering:
            discovering_sas.add(pod["serviceAccountName"])
            check(pod.get("automountServiceAccountToken") is True, f"{name}: discovers, so mounts its token")
        else:
            check(pod.get("automountServiceAccountToken") is False, f"{name}: mounts no token")
        known = known_variables(component)
        for c in pod["containers"]:
            cname = f"{name}/{c['name']}"
            for e in c.get("env", []):
                if e["name"].startswith("MLMESH_") and e["name"] != "MLMESH_CONFIG":
                    check(e["name"] in known,
                          f"{cname}: {e['name']} is not a setting of mlmesh-{component} (docs/configuration/mlmesh-{component}.md)")
            serves_tls = args.tls and component != "gateway"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c.get(probe, {})
                if serves_tls:
                    check(p.get("httpGet") == {"path": "/healthz", "port": "metrics"},
                          f"{cname}: {probe} on /healthz of the metrics port (the server speaks only TLS)")
                    continue
                check("grpc" in p, f"{cname}: {probe} is a native gRPC probe")
                ports = {pt["name"]: pt["containerPort"] for pt in c.get("ports", [])}
                check(p.get("grpc", {}).get("port") == ports.get("grpc"), f"{cname}: {probe} on the gRPC port")
            tls_files = {e["name"]: e.get("value") for e in c.get("env", []) if "TLS__" in e["name"]}
            mounted = any(m["mountPath"] == "/etc/mlmesh/tls" for m in c.get("volumeMounts", []))
            if args.tls:
                want = ({"MLMESH_DOWNSTREAM__TLS__CA_FILE", "MLMESH_DOWNSTREAM__TLS__CERT_FILE"} if component == "gateway"
                        else {"MLMESH_SERVER__TLS__CERT_FILE", "MLMESH_SERVER__TLS__CLIENT_CA_FILE"})
                check(want <= set(tls_files) and mounted, f"{cname}: TLS files {sorted(want)} from a mounted Secret")
                if component == "inference":
                    check(str(tls_files.get("MLMESH_SERVER__TLS__ADMIN_IDENTITIES", "")).startswith(
                        w["metadata"]["name"].replace("-inference", "-gateway") + "."),
                          f"{cname}: the gateway's certificate is the admin identity")
                    check("MLMESH_INFERENCE__REGISTRY_TLS__CA_FILE" in tls_files, f"{cname}: TLS to the registry")
            else:
                check(not tls_files and not mounted, f"{cname}: no TLS expected")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    check(r in res.get(kind, {}), f"{cname}: resources.{kind}.{r}")
            sc = c.get("securityContext", {})
            check(sc.get("readOnlyRootFilesystem") is True, f"{cname}: read-only root")
            check(sc.get("allowPrivilegeEscalation") is False, f"{cname}: no privilege escalation")
            check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{cname}: drops ALL capabilities")
            pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            grace = int(env_value(c, "MLMESH_SERVER__SHUTDOWN_GRACE_SECS") or 0)
            check(pre > 0, f"{cname}: preStop pause")
            check(grace > 0, f"{cname}: drain time set")
            check(pod.get("terminationGracePeriodSeconds", 30) > pre + grace,
                  f"{cname}: terminationGracePeriodSeconds above preStop + drain")
            check(env_value(c, "MLMESH_SERVER__LISTEN") is not None, f"{cname}: listen address set")
            token = env_value(c, "MLMESH_SERVER__ADMIN_TOKEN_FILE") or env_value(c, "MLMESH_DOWNSTREAM__ADMIN_TOKEN_FILE")
            if args.admin_token and component in ("registry", "inference", "gateway"):
                mounted = any(m["mountPath"] == "/etc/mlmesh/admin" for m in c.get("volumeMounts", []))
                secret = any(v.get("secret", {}).get("secretName") for v in pod.get("volumes", [])
                             if v["name"] == "admin-token")
                check(token == "/etc/mlmesh/admin/token" and mounted and secret,
                      f"{cname}: reads the admin token from a mounted Secret")
            else:
                check(token is None, f"{cname}: no admin token expected")
        labels = w["spec"]["selector"]["matchLabels"]
        check(any(p["spec"]["selector"]["matchLabels"] == labels for p in pdbs), f"{name}: a PodDisruptionBudget selects it")
        if w["kind"] == "StatefulSet":
            check(bool(w["spec"].get("volumeClaimTemplates")), f"{name}: a volume per pod")
    for svc in by_kind.get("Service", []):
        for port in svc["spec"]["ports"]:
            if port["name"] == "grpc":
                check(port.get("appProtocol") == "grpc", f"Service/{svc['metadata']['name']}: appProtocol grpc")
    # RBAC: only the discovering services' accounts, only EndpointSlices, read-only.
    for role in by_kind.get("Role", []) + by_kind.get("ClusterRole", []):
        for rule in role.get("rules", []):
            check(rule.get("apiGroups") == ["discovery.k8s.io"] and rule.get("resources") == ["endpointslices"],
                  f"{role['kind']}/{role['metadata']['name']}: grants only EndpointSlices")
            check(sorted(rule.get("verbs", [])) == ["list", "watch"],
                  f"{role['kind']}/{role['metadata']['name']}: only list and watch")
    bound = {s["name"] for b in by_kind.get("RoleBinding", []) + by_kind.get("ClusterRoleBinding", [])
             for s in b.get("subjects", [])}
    check(bound == discovering_sas, f"RBAC bound to {sorted(bound)}, expected exactly {sorted(discovering_sas)}")
    check(not by_kind.get("ClusterRole") and not by_kind.get("ClusterRoleBinding"), "no cluster-wide RBAC")
    policies = {p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component"): p
                for p in by_kind.get("NetworkPolicy", [])}
    for w in workloads:
        component = w["metadata"]["labels"]["app.kubernetes.io/component"]
        if component == "gateway":
            continue
        policy = policies.get(component)
        check(policy is not None, f"{component}: a NetworkPolicy selects it")
        if policy is None:
            continue
        grpc_pods = set()
        for rule in policy["spec"].get("ingress", []):
            check(bool(rule.get("from")), f"NetworkPolicy/{policy['metadata']['name']}: a rule without sources")
            if any(p.get("port") == "grpc" for p in rule.get("ports", [])):
                for src in rule.get("from", []):
                    pod = src.get("podSelector", {}).get("matchLabels", {})
                    if pod:
                        grpc_pods.add(pod.get("app.kubernetes.io/component"))
        check(grpc_pods == CALLERS[component] | {"health-test"},
              f"NetworkPolicy/{policy['metadata']['name']}: gRPC from {sorted(grpc_pods)}, expected {sorted(CALLERS[component] | {'health-test'})}")
    certs = {c["spec"]["secretName"]: c for c in by_kind.get("Certificate", [])}
    if args.tls:
        for w in workloads:
            secret = f'{w["metadata"]["name"]}-tls'
            cert = certs.get(secret)
            check(cert is not None, f"{w['metadata']['name']}: a Certificate writes {secret}")
            if cert:
                ns = w["metadata"]["namespace"]
                check(f'{w["metadata"]["name"]}.{ns}.svc' in cert["spec"]["dnsNames"],
                      f"Certificate/{cert['metadata']['name']}: names the Service's cluster DNS name")
                check({"server auth", "client auth"} <= set(cert["spec"].get("usages", [])),
                      f"Certificate/{cert['metadata']['name']}: valid for server and client")
    else:
        check(not certs, "no Certificates expected")
    for f in failures:
        print(f"FAIL {args.rendered}: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
