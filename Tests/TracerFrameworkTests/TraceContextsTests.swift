import Synchronization
import Telemetry
@testable import TracerFramework
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

    /// Go HTTP/2 and gRPC: a stream read by one goroutine (the connection's reader) is served by another (its
    /// handler), which a tracer names; the handler serves the stream's span until the stream ends.
    func testAStreamHandlerServesTheStreamItsReaderRead() {
        let stream = TraceContexts.Stream(pid: 10, mover: 7, id: 3)
        let handler = TraceContexts.Goroutine(pid: 10, goid: 20)
        let span = server()
        contexts.openServedStream(stream, span)
        XCTAssertNil(contexts.serving(handler))
        contexts.handlesStream(stream, handler: 20)
        XCTAssertEqual(contexts.serving(handler)?.spanID, span.spanID)
        XCTAssertEqual(contexts.serving(.init(pid: 10, goid: 21), creator: 20)?.spanID, span.spanID, "a goroutine the handler started (go1.21+)")
        XCTAssertNil(contexts.serving(.init(pid: 10, goid: 7)), "the reader serves nothing")
        // Same-host linking gave the span other ids after it started: the handler's calls take those.
        let linked = SpanIdentity(traceID: .random(), spanID: span.spanID, parentSpanID: .random(), flags: 1)
        contexts.replaceServing(.init(pid: 10, goid: 7), spanID: span.spanID, with: linked)
        XCTAssertEqual(contexts.serving(handler)?.traceID, linked.traceID)
        contexts.closeServedStream(stream)
        XCTAssertNil(contexts.serving(handler))
        contexts.handlesStream(stream, handler: 22)
        XCTAssertNil(contexts.serving(.init(pid: 10, goid: 22)), "an ended stream has no handler")
    }

    /// A handler whose stream's reader is not the goroutine that read it (unknown, or a connection's first frames
    /// read during its handshake) gets the one open stream of the process with that id; with two, none.
    func testAStreamOfAnUnknownReaderIsMatchedByIdOnlyWhenUnique() {
        let (first, second) = (server(), server())
        contexts.openServedStream(.init(pid: 10, mover: 7, id: 1), first)
        contexts.handlesStream(.init(pid: 10, mover: 0, id: 1), handler: 20)
        XCTAssertEqual(contexts.serving(.init(pid: 10, goid: 20))?.spanID, first.spanID)
        contexts.openServedStream(.init(pid: 10, mover: 8, id: 3), first)
        contexts.openServedStream(.init(pid: 10, mover: 9, id: 3), second)
        contexts.handlesStream(.init(pid: 10, mover: 0, id: 3), handler: 21)
        XCTAssertNil(contexts.serving(.init(pid: 10, goid: 21)), "two connections have a stream 3: no guessing")
        contexts.openServedStream(.init(pid: 11, mover: 5, id: 5), second)
        contexts.handlesStream(.init(pid: 10, mover: 0, id: 5), handler: 23)
        XCTAssertNil(contexts.serving(.init(pid: 10, goid: 23)), "another process's stream")
        // Threads of processes that are not Go never keep streams (nothing names their handlers).
        contexts.openServedStream(.init(pid: 12, mover: TraceContexts.Goroutine.thread(4), id: 1), first)
        contexts.handlesStream(.init(pid: 12, mover: 0, id: 1), handler: 30)
        XCTAssertNil(contexts.serving(.init(pid: 12, goid: 30)))
    }

    /// The first parent asked for a process's call announces it once (the agent then attaches what matters only
    /// in calling processes); a process forgotten and seen again is announced again.
    func testAProcessFirstCallIsAnnouncedOnce() {
        let announced = Mutex<[UInt32]>([])
        contexts.onFirstCall { pid in announced.withLock { $0.append(pid) } }
        _ = contexts.serving(.init(pid: 10, goid: 5))
        _ = contexts.serving(.init(pid: 10, goid: 6))
        _ = contexts.serving(.init(pid: 11, goid: TraceContexts.Goroutine.thread(3)))
        XCTAssertEqual(announced.withLock { $0 }, [10, 11])
        contexts.forget(pid: 10)
        _ = contexts.serving(.init(pid: 10, goid: 5))
        XCTAssertEqual(announced.withLock { $0 }, [10, 11, 10])
    }
}
