import Telemetry
import TracerFramework
import XCTest

/// Which request a call is made for: a goroutine's (the last it started serving), or a thread's when exactly one
/// is in flight on it (an event-loop thread serving several names none).
final class TraceContextsTests: XCTestCase {
    private let contexts = TraceContexts()
    private func server() -> SpanIdentity { contexts.newIdentity(parent: nil) }

    func testAThreadServingOneRequestParentsItsCallsAndSeveralInFlightParentNone() {
        let thread = TraceContexts.Goroutine(pid: 10, goid: TraceContexts.Goroutine.thread(42))
        let (first, second) = (server(), server())
        contexts.startServing(thread, first)
        XCTAssertEqual(contexts.serving(thread)?.spanID, first.spanID)
        XCTAssertEqual(contexts.child(of: contexts.serving(thread)).parentSpanID, first.spanID)
        // An event loop: a second request read before the first was answered. A call now could be for either.
        contexts.startServing(thread, second)
        XCTAssertNil(contexts.serving(thread))
        XCTAssertNil(contexts.finishServing(thread, spanID: first.spanID))
        XCTAssertEqual(contexts.serving(thread)?.spanID, second.spanID, "one left in flight")
        XCTAssertNil(contexts.finishServing(thread, spanID: second.spanID))
        XCTAssertNil(contexts.serving(thread))
        // Another thread of the process, or the same thread id in another process, is not this one.
        contexts.startServing(thread, first)
        XCTAssertNil(contexts.serving(.init(pid: 10, goid: TraceContexts.Goroutine.thread(43))))
        XCTAssertNil(contexts.serving(.init(pid: 11, goid: TraceContexts.Goroutine.thread(42))))
        XCTAssertNil(contexts.serving(.init(pid: 10, goid: 42)), "goroutine 42 is not thread 42")
        contexts.forget(pid: 10)
        XCTAssertNil(contexts.serving(thread))
    }

    func testAThreadWhoseRequestsNeverEndedIsNotHeldForever() {
        let thread = TraceContexts.Goroutine(pid: 10, goid: TraceContexts.Goroutine.thread(7))
        for _ in 0..<40 { contexts.startServing(thread, server()) } // ends lost (connections gone)
        let latest = server()
        contexts.startServing(thread, latest)
        XCTAssertNil(contexts.serving(thread), "still several in flight after the bound cleared the oldest")
        let fresh = TraceContexts()
        for _ in 0..<16 { fresh.startServing(thread, fresh.newIdentity(parent: nil)) }
        let after = fresh.newIdentity(parent: nil)
        fresh.startServing(thread, after)
        XCTAssertEqual(fresh.serving(thread)?.spanID, after.spanID, "16 never ended: dropped, the new request is the one in flight")
    }

    func testAGoroutineServesTheRequestItStartedLast() {
        let goroutine = TraceContexts.Goroutine(pid: 10, goid: 5)
        let (first, second) = (server(), server())
        contexts.startServing(goroutine, first)
        contexts.startServing(goroutine, second)
        XCTAssertEqual(contexts.serving(goroutine)?.spanID, second.spanID)
        _ = contexts.finishServing(goroutine, spanID: second.spanID)
        XCTAssertNil(contexts.serving(goroutine))
    }
}
