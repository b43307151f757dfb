import FlitzWire
import Foundation
import Testing

@testable import FlitzClient

/// `Authenticate.call_signals` (protocol/calls.md 3.2): only a connection that runs a `CallController` asks for call
/// signals; `send`, `receive`, `sync` and a `listen` without calls never do. And the client's call-signal queue is
/// bounded (review finding 3).
@Suite struct CallSignalsFlagTests {
    /// The `call_signals` value of every `Authenticate` the client wrote, in order.
    final class AuthenticateLog: Sendable {
        private let flags = WaitQueue<Bool>()
        init(_ client: FlitzClient) {
            client.frameTap.withLock { tap in
                tap = { frame in
                    if case .authenticate(let authenticate) = frame.body { self.flags.push(authenticate.callSignals) }
                }
            }
        }
        /// Everything logged so far.
        func taken() async -> [Bool] {
            var flags: [Bool] = []
            while flags.count < 1000, self.flags.count > 0, let flag = await self.flags.next(timeout: .seconds(1)) { flags.append(flag) }
            return flags
        }
        /// The next one; nil after 60 s (a failure guard).
        func next() async -> Bool? { await flags.next(timeout: .seconds(60)) }
    }

    @Test func onlyConnectionsRunningACallControllerAskForCallSignals() async throws {
        let relay = try await InProcessRelay()
        let (alice, _) = try await relay.aliceAndBob()
        let log = AuthenticateLog(alice)
        _ = try await alice.send(to: "bob", text: "hi")
        _ = try await alice.sync(onWarning: { _ in })
        let plain = await log.taken()
        #expect(plain.count >= 2 && plain.allSatisfy { !$0 }, "send and sync leave call_signals unset: \(plain)")
        let controller = CallController(client: alice)
        try await alice.withCalls(controller) { _ in }
        #expect(await log.taken() == [true], "withCalls sets it")
        let listening = Task { try await alice.listen(onEvent: { _ in }) }
        let first = await log.next()
        let calling = Task { try await alice.listen(calls: CallController(client: alice), onEvent: { _ in }) }
        let second = await log.next()
        #expect(first == false, "listen without calls leaves it unset")
        #expect(second == true, "listen(calls:) sets it")
        listening.cancel()
        calling.cancel()
        _ = await listening.result
        _ = await calling.result
        await relay.stop()
    }

    @Test func aFullCallSignalQueueDropsTheOldest() async {
        let queue = WaitQueue<Int>(limit: RelayConnection.maxQueuedCallSignals)
        for value in 1...100 { queue.push(value) }
        #expect(queue.count == 64)
        #expect(await queue.next(timeout: .seconds(1)) == 37)
        queue.finish()
    }
}
