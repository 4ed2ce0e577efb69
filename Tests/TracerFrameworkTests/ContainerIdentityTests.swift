import Telemetry
@testable import TracerFramework
import XCTest

/// `container.id`, `k8s.pod.uid` and the Kubernetes names from cgroup lines and environments.
final class ContainerIdentityTests: XCTestCase {
    private let id = "4f1c1e0b9b3a2d6e8f7a5c4b3a291807f6e5d4c3b2a19087f6e5d4c3b2a19080"

    func testContainerIDFromEachRuntimesCgroupPath() {
        let samples: [(String, String)] = [
            ("docker, cgroup v2 (systemd driver)", "0::/system.slice/docker-\(id).scope"),
            ("docker, cgroup v1", "12:memory:/docker/\(id)\n11:cpu,cpuacct:/docker/\(id)\n1:name=systemd:/docker/\(id)"),
            ("containerd under kubelet, systemd driver",
             "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b6f0c5e_1d2a_4c3b_9e8f_7a6b5c4d3e2f.slice/cri-containerd-\(id).scope"),
            ("containerd under kubelet, cgroupfs driver, v1",
             "4:pids:/kubepods/besteffort/pod0b6f0c5e-1d2a-4c3b-9e8f-7a6b5c4d3e2f/\(id)"),
            ("CRI-O", "0::/kubepods.slice/kubepods-pod0b6f0c5e_1d2a_4c3b_9e8f_7a6b5c4d3e2f.slice/crio-\(id).scope"),
            ("podman, systemd driver", "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-\(id).scope"),
            ("podman, cgroupfs driver", "0::/libpod_parent/libpod-\(id)"),
            ("a sub-cgroup inside the container", "0::/system.slice/docker-\(id).scope/init.scope"),
            ("seen from another cgroup namespace", "0::/../../kubepods.slice/cri-containerd-\(id).scope"),
            ("v1 and v2 lines: v2 wins", "3:cpu:/docker/\(String(repeating: "a", count: 64))\n0::/system.slice/docker-\(id).scope"),
        ]
        for (name, cgroup) in samples {
            XCTAssertEqual(ContainerIdentity.containerID(cgroup: cgroup), id, name)
        }
    }

    func testNoContainerIDOutsideContainers() {
        for cgroup in ["0::/user.slice/user-1000.slice/session-3.scope", "0::/system.slice/nginx.service", "0::/", "",
                       "0::/system.slice/docker-\(id.dropLast()).scope", "0::/kubepods.slice/kubepods-burstable.slice"] {
            XCTAssertNil(ContainerIdentity.containerID(cgroup: cgroup), cgroup)
        }
    }

    func testPodUIDFromBothCgroupDrivers() {
        let uid = "0b6f0c5e-1d2a-4c3b-9e8f-7a6b5c4d3e2f"
        XCTAssertEqual(ContainerIdentity.podUID(cgroup: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b6f0c5e_1d2a_4c3b_9e8f_7a6b5c4d3e2f.slice/cri-containerd-\(id).scope"), uid)
        XCTAssertEqual(ContainerIdentity.podUID(cgroup: "4:pids:/kubepods/besteffort/pod\(uid)/\(id)"), uid)
        XCTAssertNil(ContainerIdentity.podUID(cgroup: "0::/system.slice/docker-\(id).scope"))
        XCTAssertNil(ContainerIdentity.podUID(cgroup: "0::/kubepods.slice/kubepods-burstable.slice"))
    }

    func testKubernetesNamesComeFromTheRightEnvironmentAndAreNeverInvented() {
        let cgroup = "0::/kubepods.slice/kubepods-pod0b6f0c5e_1d2a_4c3b_9e8f_7a6b5c4d3e2f.slice/cri-containerd-\(id).scope"
        let agent = ["K8S_NODE_NAME": "node-7", "K8S_POD_NAME": "tracer-x2x4z", "K8S_NAMESPACE": "tracer"]
        let traced = ContainerIdentity.attributes(cgroup: cgroup, processEnvironment: ["K8S_POD_NAME": "checkout-5d9c", "K8S_NAMESPACE": "shop"],
                                                  agentEnvironment: agent)
        XCTAssertEqual(traced.map(\.key), [SemanticConventions.containerID, SemanticConventions.k8sPodUID, SemanticConventions.k8sNodeName,
                                           SemanticConventions.k8sPodName, SemanticConventions.k8sNamespaceName])
        XCTAssertEqual(traced.map(\.value), [id, "0b6f0c5e-1d2a-4c3b-9e8f-7a6b5c4d3e2f", "node-7", "checkout-5d9c", "shop"])

        let bare = ContainerIdentity.attributes(cgroup: "0::/system.slice/nginx.service", processEnvironment: [:], agentEnvironment: agent)
        XCTAssertEqual(bare.map(\.key), [SemanticConventions.k8sNodeName], "the agent's own pod name and namespace are not the traced process's")
        XCTAssertTrue(ContainerIdentity.attributes(cgroup: "", processEnvironment: [:], agentEnvironment: [:]).isEmpty)
    }
}
