#!/usr/bin/env python3
"""deploy/k8s checked offline: every overlay renders with `kubectl kustomize`, and the
rendered objects hang together and fit the binaries they run.

Per overlay (deploy/k8s/overlays/*):
  - renders; has the learner StatefulSet (1 replica, PVC, headless Service), the two
    server Deployments behind headless Services, the actor Deployment, the job
    ConfigMap and a PodMonitor;
  - every Service's selector matches the pod labels of exactly one workload, and each of
    its ports targets a port that workload's container declares;
  - every probe's port exists on its container; the servers' and learner's probes are
    native gRPC health probes (TCP where TLS is on) and each has a startup probe;
  - every flag a container passes is one its binary accepts (the binary's --helpfull,
    run from RLHF_BIN_DIR), `--metrics_port`/`--port` equal the declared container ports,
    and `$(VAR)` references are defined env vars; env vars are referenced or known;
  - the actors' addresses are dns:/// names of headless Services on their gRPC port;
  - files passed in flags lie under a mount of that container; mounts have volumes;
    ConfigMaps the pods mount are rendered; Secrets are the documented ones;
  - every container has CPU/memory requests and a memory limit;
  - the PodMonitor selects every rlhf pod, its port is each pod's metrics port, and its
    relabelings give the `component` values the dashboard and alert rules use;
  - an HPA (if any) targets the actor Deployment with a metric that
    prometheus-adapter-values.yaml defines from counters the actor exposes.
And the job YAML of the ConfigMap loads with our config loader (`rlhf run
--launcher slurm --submit=false` with the /models paths pointed at a scratch dir).
"""
import glob
import os
import re
import subprocess
import tempfile
import unittest

import yaml

SRC = os.environ.get("RLHF_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("RLHF_BIN_DIR", os.path.join(SRC, "build", "bin"))
K8S = os.path.join(SRC, "deploy", "k8s")
OVERLAYS = sorted(glob.glob(os.path.join(K8S, "overlays", "*")))
# Dashboard / alert label values (deploy/prometheus/alerts.yml, launcher targets).
COMPONENTS = {"learner", "actor", "reward_server", "reference_server"}
# Secrets the manifests mount; created by the user (docs/deploy.md).
DOCUMENTED_SECRETS = {"rlhf-token", "rlhf-tls"}
# Env vars read by a library rather than by a flag (OpenMP / LibTorch thread count).
LIBRARY_ENV = {"OMP_NUM_THREADS"}


def render(overlay):
    out = subprocess.run(["kubectl", "kustomize", overlay], capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError("kubectl kustomize %s failed:\n%s" % (overlay, out.stderr))
    return [d for d in yaml.safe_load_all(out.stdout) if d]


_HELP = {}


def accepted_flags(binary):
    """Flag names the binary accepts, from its --helpfull (absl lists every flag)."""
    if binary not in _HELP:
        path = os.path.join(BIN, binary)
        out = subprocess.run([path, "--helpfull"], capture_output=True, text=True)
        text = out.stdout + out.stderr
        names = set(re.findall(r"^\s+--([A-Za-z0-9_]+) \(", text, re.M))
        if not names:
            raise AssertionError("%s --helpfull listed no flags:\n%s" % (path, text[:2000]))
        _HELP[binary] = names
    return _HELP[binary]


def pod_templates(objs):
    """(workload, pod template) for Deployments and StatefulSets."""
    return [(o, o["spec"]["template"]) for o in objs
            if o["kind"] in ("Deployment", "StatefulSet")]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def container_port(container, ref):
    """The containerPort a probe/Service port reference (name or number) means, or None."""
    for p in container.get("ports", []):
        if ref == p.get("name") or ref == p["containerPort"]:
            return p["containerPort"]
    return None


def flags_of(container):
    """--name=value (or bare --name) arguments as {name: value-or-True}."""
    flags = {}
    for a in container.get("args", []):
        m = re.match(r"^--([A-Za-z0-9_]+)(?:=(.*))?$", a)
        assert m, "argument %r of %s is not a --flag" % (a, container["name"])
        flags[m.group(1)] = m.group(2) if m.group(2) is not None else True
    return flags


def relabel(rules, meta):
    """Prometheus relabelling (action replace) over a dict of source labels."""
    labels = dict(meta)
    for r in rules:
        value = ";".join(labels.get(s, "") for s in r["sourceLabels"])
        m = re.fullmatch(r.get("regex", "(.*)"), value)
        if m:
            labels[r["targetLabel"]] = m.expand(r.get("replacement", "$1")
                                                .replace("${", "\\g<").replace("}", ">"))
    return labels


class K8sManifestsTest(unittest.TestCase):
    def test_overlays_exist(self):
        names = {os.path.basename(o) for o in OVERLAYS}
        self.assertTrue({"cpu", "tls"} <= names, names)

    def test_every_overlay(self):
        for overlay in OVERLAYS:
            with self.subTest(overlay=os.path.basename(overlay)):
                self.check_overlay(overlay)

    def check_overlay(self, overlay):
        objs = render(overlay)
        by_kind = {}
        for o in objs:
            by_kind.setdefault(o["kind"], []).append(o)
        named = {(o["kind"], o["metadata"]["name"]): o for o in objs}
        pods = pod_templates(objs)

        # The shape the issue asks for.
        learner = named[("StatefulSet", "rlhf-learner")]
        self.assertEqual(learner["spec"]["replicas"], 1)
        self.assertTrue(learner["spec"]["volumeClaimTemplates"])
        for svc in ("rlhf-learner", "rlhf-reward-server", "rlhf-reference-server"):
            self.assertEqual(named[("Service", svc)]["spec"].get("clusterIP"), "None", svc)
        self.assertEqual(learner["spec"]["serviceName"], "rlhf-learner")
        for d in ("rlhf-reward-server", "rlhf-reference-server", "rlhf-actor"):
            self.assertIn(("Deployment", d), named)
        self.assertEqual(len(by_kind.get("PodMonitor", [])), 1)
        configmaps = {o["metadata"]["name"] for o in by_kind.get("ConfigMap", [])}
        self.assertTrue(any(c.startswith("rlhf-job") for c in configmaps), configmaps)

        # Services select one workload each and target its ports.
        for svc in by_kind["Service"]:
            sel = svc["spec"]["selector"]
            targets = [(w, t) for w, t in pods if matches(sel, t["metadata"]["labels"])]
            self.assertEqual(len(targets), 1, "Service %s selects %s" % (
                svc["metadata"]["name"], [w["metadata"]["name"] for w, _ in targets]))
            container = targets[0][1]["spec"]["containers"][0]
            for p in svc["spec"]["ports"]:
                self.assertIsNotNone(container_port(container, p.get("targetPort", p["port"])),
                                     "%s port %s" % (svc["metadata"]["name"], p))
        # Workload selectors match their own templates.
        for w, t in pods:
            self.assertTrue(matches(w["spec"]["selector"]["matchLabels"], t["metadata"]["labels"]))

        volumes_ok = set(configmaps)
        pvcs = {o["metadata"]["name"] for o in by_kind.get("PersistentVolumeClaim", [])}
        for w, t in pods:
            spec = t["spec"]
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            claim_templates = {c["metadata"]["name"] for c in w["spec"].get("volumeClaimTemplates", [])}
            for v in volumes.values():
                if "configMap" in v:
                    self.assertIn(v["configMap"]["name"], volumes_ok)
                if "secret" in v:
                    self.assertIn(v["secret"]["secretName"], DOCUMENTED_SECRETS)
                if "persistentVolumeClaim" in v:
                    self.assertIn(v["persistentVolumeClaim"]["claimName"], pvcs)
            for c in spec["containers"]:
                where = "%s/%s" % (w["metadata"]["name"], c["name"])
                binary = os.path.basename(c["command"][0])
                self.assertEqual(c["command"][0], "/opt/rlhf/bin/" + binary, where)
                flags = flags_of(c)
                accepted = accepted_flags(binary)
                for f in flags:
                    self.assertIn(f, accepted, "%s: %s does not accept --%s" % (where, binary, f))
                # Declared ports are the ports the process binds.
                declared = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                self.assertEqual(int(flags["metrics_port"]), declared["metrics"], where)
                if "port" in flags:
                    self.assertEqual(int(flags["port"]), declared["grpc"], where)
                # Probes hit declared ports; servers have gRPC (or TCP) health probes.
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    if probe not in c:
                        continue
                    body = c[probe]
                    kinds = [k for k in ("grpc", "httpGet", "tcpSocket", "exec") if k in body]
                    self.assertEqual(len(kinds), 1, where + " " + probe)
                    if kinds[0] != "exec":
                        self.assertIsNotNone(container_port(c, body[kinds[0]]["port"]),
                                             "%s %s port" % (where, probe))
                self.assertIn("startupProbe", c, where)
                self.assertIn("livenessProbe", c, where)
                if "grpc" in declared:
                    self.assertIn("readinessProbe", c, where)
                    kind = [k for k in ("grpc", "tcpSocket") if k in c["readinessProbe"]]
                    tls = "tls_cert" in flags or "set" in flags and "tls_cert" in flags["set"]
                    self.assertEqual(kind, ["tcpSocket" if tls else "grpc"], where)
                # Env: $(VAR) references defined; every var referenced or library-read.
                env = {e["name"] for e in c.get("env", [])}
                refs = set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(c.get("args", []))))
                self.assertLessEqual(refs, env, where)
                self.assertLessEqual(env - refs, LIBRARY_ENV, where)
                # Files in flags lie under this container's mounts; mounts have volumes.
                mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
                for m in c.get("volumeMounts", []):
                    self.assertTrue(m["name"] in volumes or m["name"] in claim_templates,
                                    "%s mount %s" % (where, m["name"]))
                for name, value in flags.items():
                    if not isinstance(value, str) or name.endswith("_address"):
                        continue
                    for path in re.findall(r"(?:^|[=,:])(/[^,:]+)", value):
                        self.assertTrue(any(path.startswith(mp + "/") for mp in mounts),
                                        "%s --%s: %s is on no mount" % (where, name, path))
                # Actors dial headless Services on their gRPC port.
                for key in ("learner_address", "reward_address", "reference_address"):
                    if key not in flags:
                        continue
                    m = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", flags[key])
                    self.assertIsNotNone(m, "%s --%s=%s" % (where, key, flags[key]))
                    svc = named[("Service", m.group(1))]
                    self.assertEqual(svc["spec"]["clusterIP"], "None")
                    port = [p for p in svc["spec"]["ports"] if p["port"] == int(m.group(2))]
                    self.assertEqual(len(port), 1, flags[key])
                    self.assertEqual(port[0]["targetPort"], "grpc", flags[key])
                # Resources.
                res = c.get("resources", {})
                self.assertIn("cpu", res.get("requests", {}), where)
                self.assertIn("memory", res.get("requests", {}), where)
                self.assertIn("memory", res.get("limits", {}), where)

        # Prometheus Operator targets: every pod, on its metrics port, with our labels.
        pm = by_kind["PodMonitor"][0]
        endpoint = pm["spec"]["podMetricsEndpoints"][0]
        seen_components = set()
        for w, t in pods:
            labels = t["metadata"]["labels"]
            self.assertTrue(matches(pm["spec"]["selector"]["matchLabels"], labels),
                            w["metadata"]["name"])
            c = t["spec"]["containers"][0]
            self.assertEqual(container_port(c, endpoint["port"]), int(flags_of(c)["metrics_port"]))
            meta = {"__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k): v
                    for k, v in labels.items()}
            meta["__meta_kubernetes_pod_name"] = w["metadata"]["name"] + "-abc12"
            out = relabel(endpoint.get("relabelings", []), meta)
            self.assertIn(out.get("component"), COMPONENTS, (w["metadata"]["name"], out))
            seen_components.add(out["component"])
            if out["component"] == "actor":
                self.assertEqual(out.get("actor_id"), meta["__meta_kubernetes_pod_name"])
        self.assertEqual(seen_components, COMPONENTS)

        # Autoscaling: the actor Deployment, on a metric the adapter rules define.
        for hpa in by_kind.get("HorizontalPodAutoscaler", []):
            self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"], "rlhf-actor")
            with open(os.path.join(overlay, "prometheus-adapter-values.yaml")) as f:
                adapter = yaml.safe_load(f)
            rules = adapter["rules"]["custom"]
            served = {r["name"]["as"]: r for r in rules}
            with open(os.path.join(SRC, "actor", "actor.cc")) as f:
                actor_src = f.read()
            for m in hpa["spec"]["metrics"]:
                name = m["pods"]["metric"]["name"]
                self.assertIn(name, served)
                for series in re.findall(r"(rlhf_[a-z_]+?)\{", served[name]["metricsQuery"]):
                    self.assertIn('Name("%s")' % series, actor_src, series)

    def test_job_configmap_loads(self):
        """The ConfigMap's job YAML passes our loader (unknown keys, types, ranges)."""
        with open(os.path.join(K8S, "base", "job.yaml")) as f:
            job = f.read()
        with tempfile.TemporaryDirectory() as tmp:
            # The loader checks that files outside the run dir exist: point /models and
            # the token at a scratch copy.
            job = job.replace("/models/", tmp + "/models/").replace("/etc/rlhf/", tmp + "/etc/")
            job = job.replace("/var/lib/rlhf/", tmp + "/var/")
            for d in ("models/sft", "models/rm", "models/data", "etc/token"):
                os.makedirs(os.path.join(tmp, d))
            for f in ("models/sft/config.json", "models/rm/config.json",
                      "models/data/rl_train.jsonl", "etc/token/token"):
                with open(os.path.join(tmp, f), "w") as out:
                    out.write("{}\n")
            path = os.path.join(tmp, "job.yaml")
            with open(path, "w") as out:
                out.write(job)
            out = subprocess.run([os.path.join(BIN, "rlhf"), "run", "--launcher=slurm",
                                  "--submit=false", "--config=" + path],
                                 capture_output=True, text=True, cwd=tmp)
            self.assertEqual(out.returncode, 0, out.stderr)
            # And a mistake in it is caught (the check is not vacuous).
            bad = os.path.join(tmp, "bad.yaml")
            with open(bad, "w") as out:
                out.write(job.replace("prompts_per_step:", "prompts_per_stepp:"))
            out = subprocess.run([os.path.join(BIN, "rlhf"), "run", "--launcher=slurm",
                                  "--submit=false", "--config=" + bad],
                                 capture_output=True, text=True, cwd=tmp)
            self.assertNotEqual(out.returncode, 0)
            self.assertIn("rl.prompts_per_stepp", out.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
