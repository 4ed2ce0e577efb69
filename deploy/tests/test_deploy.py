"""Offline checks of deploy/: the Kubernetes manifests and the rendered Helm chart against the Kubernetes
JSON schemas (kubernetes-validate, strict), yamllint, the Dockerfile's stages and runtime libraries, the
collector and compose examples, and the systemd unit (systemd-analyze verify).

Run: python3 -m unittest discover -s deploy/tests -v
TRACER_BINARY names the built `tracer` whose shared libraries the image must provide (skipped when unset).
"""
import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import kubernetes_validate
from kubernetes_validate.utils import all_versions
import yaml

DEPLOY = Path(__file__).resolve().parents[1]
CHART = DEPLOY / "helm" / "tracer"
# The oldest and the newest Kubernetes versions whose schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = [min(all_versions(), key=lambda v: tuple(map(int, v.split(".")))),
                       kubernetes_validate.latest_version()]
CAPABILITIES = ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH", "CHECKPOINT_RESTORE"]


def validate_resources(test, documents, source):
    """Every document is a valid Kubernetes object (strict: unknown fields are errors) for each version."""
    for document in documents:
        for version in KUBERNETES_VERSIONS:
            with test.subTest(source=source, kind=document.get("kind"), version=version):
                try:
                    kubernetes_validate.validate(document, version, strict=True)
                except kubernetes_validate.ValidationError as error:
                    test.fail(f"{source}: {document.get('kind')}/{document['metadata'].get('name')}: {error.message} "
                              f"at {'.'.join(map(str, error.path))} (Kubernetes {version})")


def yamllint(test, paths):
    result = subprocess.run(["python3", "-m", "yamllint", "-f", "parsable", "-c", str(DEPLOY / ".yamllint"), *map(str, paths)],
                            capture_output=True, text=True)
    test.assertEqual(result.returncode, 0, result.stdout + result.stderr)


def agent_container(documents):
    daemonset = next(d for d in documents if d["kind"] == "DaemonSet")
    return daemonset, daemonset["spec"]["template"]["spec"]["containers"][0]


def check_node_agent_pod(test, documents):
    """What every deployment of the agent must hold: hostPID, the mounts, the downward API, no privilege."""
    daemonset, container = agent_container(documents)
    pod = daemonset["spec"]["template"]["spec"]
    test.assertTrue(pod["hostPID"])
    test.assertFalse(pod.get("automountServiceAccountToken", True))
    security = container["securityContext"]
    test.assertTrue(security["readOnlyRootFilesystem"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in ["/sys/kernel/tracing", "/sys/fs/bpf", "/sys/kernel/security"]:
        test.assertIn(path, mounts)
        test.assertEqual(volumes[mounts[path]["name"]]["hostPath"]["path"], path)
    test.assertTrue(mounts["/sys/kernel/security"]["readOnly"])
    env = {e["name"]: e for e in container["env"]}
    for name, field in [("K8S_NODE_NAME", "spec.nodeName"), ("K8S_POD_NAME", "metadata.name"),
                        ("K8S_NAMESPACE", "metadata.namespace")]:
        test.assertEqual(env[name]["valueFrom"]["fieldRef"]["fieldPath"], field)
    test.assertIn("OTEL_EXPORTER_OTLP_ENDPOINT", env)
    configmaps = [d for d in documents if d["kind"] == "ConfigMap"]
    test.assertEqual(volumes[mounts["/etc/tracer"]["name"]]["configMap"]["name"], configmaps[0]["metadata"]["name"])
    config = yaml.safe_load(configmaps[0]["data"]["tracer.yaml"])
    test.assertTrue(config["discovery"]["instrument"], "the configuration selects something")
    test.assertEqual(container["args"][:2], ["--config", "/etc/tracer/tracer.yaml"])
    return security, env


class KubernetesManifestTests(unittest.TestCase):
    def documents(self):
        return [d for f in sorted((DEPLOY / "kubernetes").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]

    def test_manifests_are_valid_kubernetes_objects(self):
        documents = self.documents()
        self.assertEqual(sorted(d["kind"] for d in documents), ["ConfigMap", "DaemonSet", "Namespace", "ServiceAccount"])
        validate_resources(self, documents, "deploy/kubernetes")
        yamllint(self, sorted((DEPLOY / "kubernetes").glob("*.yaml")))

    def test_daemonset_is_not_privileged_and_holds_the_minimal_capabilities(self):
        documents = self.documents()
        security, _ = check_node_agent_pod(self, documents)
        self.assertFalse(security["privileged"])
        self.assertEqual(security["capabilities"]["drop"], ["ALL"])
        self.assertEqual(security["capabilities"]["add"], CAPABILITIES)
        namespaces = {d["metadata"].get("namespace") for d in documents if d["kind"] != "Namespace"}
        self.assertEqual(namespaces, {next(d for d in documents if d["kind"] == "Namespace")["metadata"]["name"]})


class HelmChartTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="helm-render-")
        cls.renderer = os.path.join(cls.work, "helm-render")
        subprocess.run(["go", "build", "-o", cls.renderer, str(Path(__file__).parent / "helm-render" / "main.go")],
                       check=True, env={**os.environ, "GO111MODULE": "off"})
        cls.values = yaml.safe_load((CHART / "values.yaml").read_text())
        cls.chart = yaml.safe_load((CHART / "Chart.yaml").read_text())

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work)

    def render(self, **overrides):
        """The chart's manifests for values.yaml with `overrides` merged in (like `helm template --set`)."""
        values = copy.deepcopy(self.values)
        for path, value in overrides.items():
            node = values
            *parents, last = path.split("__")
            for key in parents:
                node = node[key]
            node[last] = value
        context = {"Values": values, "Release": {"Name": "tracer", "Namespace": "observability", "Service": "Helm"},
                   "Chart": {"Name": self.chart["name"], "Version": self.chart["version"], "AppVersion": self.chart["appVersion"]}}
        context_file = os.path.join(self.work, "context.json")
        with open(context_file, "w") as f:
            json.dump(context, f)
        result = subprocess.run([self.renderer, str(CHART), context_file], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        rendered = os.path.join(self.work, "rendered.yaml")
        with open(rendered, "w") as f:
            f.write(result.stdout)
        yamllint(self, [rendered])
        return [d for d in yaml.safe_load_all(result.stdout) if d]

    def test_chart_metadata(self):
        self.assertEqual(self.chart["apiVersion"], "v2")
        self.assertEqual(self.chart["name"], CHART.name)
        self.assertRegex(self.chart["version"], r"^\d+\.\d+\.\d+$")
        yamllint(self, [CHART / "Chart.yaml", CHART / "values.yaml"])

    def test_default_values_render_valid_unprivileged_manifests(self):
        documents = self.render()
        self.assertEqual(sorted(d["kind"] for d in documents), ["ConfigMap", "DaemonSet", "ServiceAccount"])
        validate_resources(self, documents, "helm chart, default values")
        security, env = check_node_agent_pod(self, documents)
        self.assertFalse(security["privileged"])
        self.assertEqual(security["capabilities"]["add"], CAPABILITIES)
        self.assertNotIn("OTEL_EXPORTER_OTLP_HEADERS", env, "no headers, no secret")
        daemonset, container = agent_container(documents)
        self.assertEqual(container["image"], f"tracer:{self.chart['appVersion']}")
        self.assertIn("--enforce-caps", container["args"])
        self.assertEqual(yaml.safe_load(next(d for d in documents if d["kind"] == "ConfigMap")["data"]["tracer.yaml"]),
                         self.values["config"])
        self.assertRegex(daemonset["spec"]["template"]["metadata"]["annotations"]["checksum/config"], r"^[0-9a-f]{64}$")

    def test_privileged_sys_admin_headers_and_metrics(self):
        privileged = self.render(security__privileged=True)
        validate_resources(self, privileged, "helm chart, privileged")
        security, _ = check_node_agent_pod(self, privileged)
        self.assertTrue(security["privileged"])
        self.assertNotIn("capabilities", security)

        documents = self.render(security__sysAdmin=True, otlp__headers="authorization=Bearer abc", prometheusPort=9400,
                                enforceCapabilities=False, image__tag="1.2.3")
        validate_resources(self, documents, "helm chart, SYS_ADMIN, headers, metrics")
        security, env = check_node_agent_pod(self, documents)
        self.assertEqual(security["capabilities"]["add"], CAPABILITIES + ["SYS_ADMIN"])
        secret = next(d for d in documents if d["kind"] == "Secret")
        self.assertEqual(secret["stringData"]["OTEL_EXPORTER_OTLP_HEADERS"], "authorization=Bearer abc")
        self.assertEqual(env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"]["name"], secret["metadata"]["name"])
        _, container = agent_container(documents)
        self.assertEqual(container["args"][2:], ["--prometheus-port", "9400"])
        self.assertEqual(container["ports"], [{"name": "metrics", "containerPort": 9400}])
        self.assertEqual(container["image"], "tracer:1.2.3")

        existing = self.render(otlp__headers="ignored=1", otlp__existingSecret="otlp-auth")
        validate_resources(self, existing, "helm chart, existing secret")
        self.assertFalse([d for d in existing if d["kind"] == "Secret"], "an existing secret is used, not created")
        _, env = check_node_agent_pod(self, existing)
        self.assertEqual(env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"]["name"], "otlp-auth")

    def test_missing_endpoint_fails_the_render(self):
        values = {"otlp__endpoint": ""}
        with self.assertRaises(AssertionError) as raised:
            self.render(**values)
        self.assertIn("otlp.endpoint is required", str(raised.exception))


def dockerfile_stages(text):
    """(base image, stage name, instructions) per stage; continuation lines joined."""
    stages = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, argument = line.partition(" ")
        if instruction.upper() == "FROM":
            image, _, name = argument.partition(" AS ")
            stages.append((image.strip(), name.strip(), []))
        else:
            stages[-1][2].append((instruction.upper(), argument.strip()))
    return stages


class DockerfileTests(unittest.TestCase):
    text = (DEPLOY / "Dockerfile").read_text()

    def test_build_and_runtime_stages(self):
        build, runtime = dockerfile_stages(self.text)
        self.assertRegex(build[0], r"^swift:6\.\d+-bookworm$")
        self.assertEqual(runtime[0], "debian:bookworm-slim")
        self.assertIn(("RUN", next(a for i, a in build[2] if i == "RUN" and "swift build" in a)), build[2])
        self.assertRegex(next(a for i, a in build[2] if i == "RUN" and "swift build" in a),
                         r"swift build -c release --static-swift-stdlib")
        copies = [a for i, a in runtime[2] if i == "COPY"]
        self.assertEqual(copies, [f"--from={build[1]} /out/tracer /usr/local/bin/tracer"])
        self.assertIn(("ENTRYPOINT", '["/usr/local/bin/tracer"]'), runtime[2])
        for _, _, instructions in (build, runtime):
            for instruction, argument in instructions:
                if instruction == "RUN" and "apt-get install" in argument:
                    self.assertIn("--no-install-recommends", argument)
                    self.assertIn("rm -rf /var/lib/apt/lists/*", argument)

    def installed_packages(self, stage):
        packages = []
        for instruction, argument in stage[2]:
            if instruction == "RUN" and "apt-get install" in argument:
                words = argument.split("apt-get install", 1)[1].split("&&")[0].split()
                packages += [w for w in words if not w.startswith("-")]
        return packages

    def test_runtime_stage_installs_every_library_the_binary_links(self):
        binary = os.environ.get("TRACER_BINARY")
        if not binary:
            self.skipTest("TRACER_BINARY is not set")
        runtime = dockerfile_stages(self.text)[1]
        installed = self.installed_packages(runtime)
        for package in installed:
            self.assertTrue(subprocess.run(["apt-cache", "show", package], capture_output=True).returncode == 0,
                            f"{package} is not a Debian package")
        # The base image holds the essential packages; apt brings the dependencies of the installed ones.
        essential = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Essential}\n"], capture_output=True, text=True,
                                   check=True).stdout
        base = {line.split()[0] for line in essential.splitlines() if line.endswith(" yes")}
        def closure(packages):
            """The packages with everything they depend on, recursively."""
            tree = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                                   "--no-breaks", "--no-replaces", "--no-enhances", *packages],
                                  capture_output=True, text=True, check=True).stdout
            return {line.strip().split(":")[0] for line in tree.splitlines() if not line.startswith(" ")} | set(packages)
        base = closure(sorted(base))
        provided = closure(installed) | base
        needed = self.shared_libraries(binary)
        self.assertTrue(needed, "ldd found no libraries")
        for library, path, direct in needed:
            owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
            if owner.returncode != 0:  # /lib is a symlink to /usr/lib on Debian 12: try the other spelling.
                other = path[4:] if path.startswith("/usr/") else "/usr" + path
                owner = subprocess.run(["dpkg", "-S", other], capture_output=True, text=True)
            self.assertEqual(owner.returncode, 0, f"{library} ({path}) belongs to no Debian package")
            package = owner.stdout.split(":")[0]
            self.assertTrue(package in provided, f"{library} ({package}) is not installed in the runtime stage")
            if direct:
                self.assertTrue(package in installed or package in base,
                                f"{library} is linked directly: install {package} explicitly in the runtime stage")

    @staticmethod
    def shared_libraries(binary):
        """(soname, path, linked directly) for every library ldd resolves, except the Swift runtime (linked
        statically in the image by --static-swift-stdlib) and the vDSO; and for every library the binary
        loads with dlopen (capstone, opened when RET offsets are first needed), which ldd does not show: the
        sonames it names as C strings beyond its DT_NEEDED, resolved with ldconfig, with their own
        dependencies. A dlopen'ed library counts as linked directly: nothing else pulls it into the image."""
        dynamic = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True).stdout
        direct = set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic))
        found = DockerfileTests.ldd(binary, direct)
        named = {m.decode() for m in re.findall(rb"(?<=\0)(lib[A-Za-z0-9_+-]+\.so\.[0-9]+)(?=\0)", Path(binary).read_bytes())}
        cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
        for soname in sorted(named - direct):
            path = re.search(rf"^\s*{re.escape(soname)} \(.*x86-64.*\) => (\S+)$", cache, re.M)
            assert path, f"the binary names {soname} (dlopen) but ldconfig does not know it on this machine"
            found.append((soname, path.group(1), True))
            found += DockerfileTests.ldd(path.group(1), set())
        return found

    @staticmethod
    def ldd(binary, direct):
        """(soname, path, soname in direct) for every library ldd resolves for `binary`, except the Swift
        runtime and the vDSO."""
        found = []
        for line in subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout.splitlines():
            match = re.match(r"\s*(\S+) => (/\S+)", line) or re.match(r"\s*(/\S+) \(", line)
            if not match:
                continue
            library, path = (match.group(1), match.group(2)) if match.lastindex == 2 else (os.path.basename(match.group(1)), match.group(1))
            if "/swift" in path or "/opt/" in path:
                continue
            found.append((library, os.path.realpath(path) if not os.path.exists(path) else path, library in direct))
        return found

    def test_dockerignore_keeps_build_outputs_out(self):
        ignored = (DEPLOY.parent / ".dockerignore").read_text().split()
        for pattern in [".build", ".git"]:
            self.assertIn(pattern, ignored)


class CollectorAndComposeTests(unittest.TestCase):
    def test_collector_pipelines_use_defined_components(self):
        config = yaml.safe_load((DEPLOY / "collector" / "otelcol.yaml").read_text())
        self.assertEqual(config["receivers"]["otlp"]["protocols"]["http"]["endpoint"], "0.0.0.0:4318")
        pipelines = config["service"]["pipelines"]
        self.assertIn("traces", pipelines)
        for pipeline in pipelines.values():
            for kind in ["receivers", "processors", "exporters"]:
                for name in pipeline.get(kind, []):
                    self.assertIn(name, config[kind], f"{kind}: {name} is used but not defined")
        self.assertIn("debug", pipelines["traces"]["exporters"])
        yamllint(self, [DEPLOY / "collector" / "otelcol.yaml"])

    def test_compose_runs_app_agent_and_collector(self):
        compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yaml").read_text())
        services = compose["services"]
        self.assertTrue({"app", "tracer", "collector"} <= set(services))
        agent = services["tracer"]
        self.assertEqual(agent["pid"], "host")
        self.assertTrue(agent["read_only"])
        self.assertNotIn("privileged", agent)
        self.assertEqual(agent["cap_drop"], ["ALL"])
        self.assertEqual(agent["cap_add"], CAPABILITIES)
        self.assertEqual(agent["build"]["dockerfile"], "deploy/Dockerfile")
        self.assertTrue((DEPLOY / "compose" / agent["build"]["context"] / agent["build"]["dockerfile"]).resolve().is_file())
        endpoint = agent["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        self.assertEqual(endpoint, "http://collector:4318")
        mounted = services["collector"]["volumes"][0].split(":")[0]
        self.assertTrue((DEPLOY / "compose" / mounted).resolve().is_file(), mounted)
        yamllint(self, [DEPLOY / "compose" / "docker-compose.yaml"])


class SystemdUnitTests(unittest.TestCase):
    def test_unit_verifies(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze is not installed (apt-get install systemd)")
        unit = (DEPLOY / "systemd" / "tracer.service").read_text()
        self.assertIn("AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_CHECKPOINT_RESTORE", unit)
        self.assertIn("Restart=on-failure", unit)
        self.assertNotRegex(unit, r"(?m)^User=root")
        with tempfile.TemporaryDirectory() as directory:
            # verify checks that ExecStart's program exists: point it at a real file.
            binary = os.path.abspath(os.environ.get("TRACER_BINARY") or "/bin/true")
            path = os.path.join(directory, "tracer.service")
            with open(path, "w") as f:
                f.write(unit.replace("/usr/local/bin/tracer", binary))
            result = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True)
            complaints = [line for line in (result.stdout + result.stderr).splitlines() if "tracer.service" in line]
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(complaints, [], "unknown keys and bad values are only warnings: treat them as failures")
        environment = (DEPLOY / "systemd" / "tracer.env").read_text()
        self.assertRegex(environment, r"(?m)^OTEL_EXPORTER_OTLP_ENDPOINT=http")
        config = yaml.safe_load((DEPLOY / "systemd" / "tracer.yaml").read_text())
        self.assertTrue(config["discovery"]["instrument"])


if __name__ == "__main__":
    unittest.main()
