import XCTest
@testable import ExecutableInspection

/// Reading overlay mounts from mountinfo (the end-to-end case is OverlayIdentityTests, with a real overlay).
final class OverlayLayersTests: XCTestCase {
    func testLayersTopmostFirstAndEscapes() {
        XCTAssertEqual(OverlayLayers.layers(fromOptions: "rw,lowerdir=/l1:/l2,upperdir=/u,workdir=/w,xino=off"), ["/u", "/l1", "/l2"])
        XCTAssertEqual(OverlayLayers.layers(fromOptions: "ro,lowerdir=/image"), ["/image"], "a read-only overlay has no upperdir")
        XCTAssertEqual(OverlayLayers.unescape("/var/lib/my\\040dir"), "/var/lib/my dir")
        XCTAssertEqual(OverlayLayers.unescape("/plain"), "/plain")
    }

    func testProcessViews() {
        XCTAssertEqual(OverlayLayers.processView(of: "/proc/42/root/usr/lib/libssl.so.3").mountinfo, "/proc/42/mountinfo")
        XCTAssertEqual(OverlayLayers.processView(of: "/proc/42/root/usr/lib/libssl.so.3").path, "/usr/lib/libssl.so.3")
        XCTAssertEqual(OverlayLayers.processView(of: "/srv/app").mountinfo, "/proc/self/mountinfo")
        XCTAssertEqual(OverlayLayers.processView(of: "/srv/app").path, "/srv/app")
        XCTAssertNil(OverlayLayers.processView(of: "relative").path)
    }

    func testAFileOutsideOverlaysIsItsOwnTarget() throws {
        XCTAssertEqual(try FileIdentity(attachmentTargetOf: "/bin/sh"), try FileIdentity(path: "/bin/sh"))
        XCTAssertEqual(try FileIdentity(attachmentTargetOf: "/proc/self/exe"), try FileIdentity(path: "/proc/self/exe"))
    }
}
