#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import FlitzRelay
import FlitzWire
import Foundation
import Testing

/// A plain HTTP/1.1 GET over a loopback socket (no HTTP client library in the test target), on a thread of its
/// own: a blocking read on the cooperative pool could starve the relay's handlers running in the same process.
/// - Returns: the status code and the body; throws `TestTimeout` when the relay does not answer in 60 s (a
///   failure guard only: a loaded CI machine running many suites at once can take seconds).
func httpGet(port: Int, path: String) async throws -> (status: Int, body: String) {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try blockingHTTPGet(port: port, path: path) }) }.start()
    }
}

private func blockingHTTPGet(port: Int, path: String) throws -> (status: Int, body: String) {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { throw TestTimeout() }
    defer { close(descriptor) }
    var timeout = timeval(tv_sec: 60, tv_usec: 0)
    setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw TestTimeout() }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
    guard write(descriptor, request, request.count) == request.count else { throw TestTimeout() }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = read(descriptor, &buffer, buffer.count)
        if count < 0 { throw TestTimeout() }
        if count == 0 { break }
        response.append(contentsOf: buffer[0..<count])
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let headerEnd = text.range(of: "\r\n\r\n"), let status = Int(text.split(separator: " ").dropFirst().first ?? "") else {
        throw TestTimeout()
    }
    var body = String(text[headerEnd.upperBound...])
    if text[..<headerEnd.lowerBound].lowercased().contains("transfer-encoding: chunked") { body = dechunk(body) }
    return (status, body)
}

/// The payload of a chunked HTTP body.
private func dechunk(_ body: String) -> String {
    var rest = Substring(body)
    var out = ""
    while let lineEnd = rest.range(of: "\r\n"), let size = Int(rest[..<lineEnd.lowerBound], radix: 16), size > 0 {
        let start = lineEnd.upperBound
        let utf8 = rest[start...].utf8
        let end = utf8.index(utf8.startIndex, offsetBy: size)
        out += String(rest[start..<end])
        rest = rest[end...].dropFirst(2)
    }
    return out
}

/// The value of the sample `name` (with its labels, as written) in a Prometheus text exposition.
func sample(_ exposition: String, _ name: String) -> Double? {
    for line in exposition.split(separator: "\n") where !line.hasPrefix("#") {
        let parts = line.split(separator: " ")
        if parts.count >= 2, parts[0] == name { return Double(parts[1]) }
    }
    return nil
}

/// `/healthz`, `/health` and Prometheus `/metrics` (`protocol/relay.md`, "Health and metrics").
@Suite struct MetricsTests {
    @Test func healthEndpointsAnswerOk() async throws {
        try await RelayHarness.run { relay in
            for path in ["/healthz", "/health"] {
                let (status, body) = try await httpGet(port: relay.port, path: path)
                #expect(status == 200)
                #expect(body == "ok")
            }
        }
    }

    @Test func countersMoveWithSendReceiveErrorsAndExpiry() async throws {
        try await RelayHarness.run(configure: { _ in }) { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await relay.connect { connection in
                _ = try await connection.register(bob)
                // The first connection of this relay, still open (a closed one is uncounted a moment after close).
                #expect(sample(try await httpGet(port: relay.port, path: "/metrics").body, "flitz_relay_connections") == 1)
            }
            let before = try await httpGet(port: relay.port, path: "/metrics").body
            #expect(sample(before, "flitz_relay_envelopes_in_total") == 0)
            #expect(sample(before, "flitz_relay_queued_items") == 0)

            try await relay.connect { connection in
                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
                let outcomes = try await connection.submit([outgoing(1, to: "bob"), outgoing(2, to: "bob", ttl: 1), outgoing(3, to: "nobody")])
                #expect(outcomes.map(\.hasError) == [false, false, true])
            }
            let afterSend = try await httpGet(port: relay.port, path: "/metrics").body
            #expect(sample(afterSend, "flitz_relay_envelopes_in_total") == 2)
            #expect(sample(afterSend, #"flitz_relay_errors_total{code="UNKNOWN_RECIPIENT"}"#) == 1)
            #expect(sample(afterSend, "flitz_relay_commit_seconds_count") == 1)
            // flitz_relay_queued_items is recounted at most every 10 s of wall time, so its value here depends on
            // how long the steps above took; queueDepthCountsQueuedItems checks the count itself.

            // Envelope 2 expires undelivered (ttl 1 s).
            relay.clock.advance(seconds: 2)
            let swept = try await relay.app.relay.sweep()
            #expect(swept.expiredEnvelopes == 1)

            try await relay.connect { connection in
                let delivered = try await connection.authenticate(bob)
                #expect(delivered.flatMap(\.envelopes).map { $0.envelopeID.first! } == [1])
                var acknowledge = WireAcknowledge()
                acknowledge.envelopeIds = delivered.flatMap(\.envelopes).map(\.envelopeID)
                _ = try await connection.request(.acknowledge(acknowledge))
                // Still authenticating is refused: an error counted by code.
                #expect(try await connection.request(bob.authenticate(nonce: connection.nonce, deviceID: 1)).errorCode == .alreadyAuthenticated)
            }
            let after = try await httpGet(port: relay.port, path: "/metrics").body
            #expect(sample(after, "flitz_relay_envelopes_delivered_total") == 1)
            #expect(sample(after, "flitz_relay_envelopes_expired_total") == 1)
            #expect(sample(after, #"flitz_relay_errors_total{code="ALREADY_AUTHENTICATED"}"#) == 1)
            #expect(after.contains("# TYPE flitz_relay_commit_seconds histogram"))
        }
    }

    @Test func queueDepthCountsQueuedItems() async throws {
        try await RelayHarness.run(configure: { _ in }) { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await relay.connect { connection in _ = try await connection.register(bob) }
            try await relay.connect { connection in
                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
                _ = try await connection.submit((1...3).map { outgoing($0, to: "bob") })
            }
            #expect(sample(try await httpGet(port: relay.port, path: "/metrics").body, "flitz_relay_queued_items") == 3)
        }
    }

    @Test func metricsCanBeSwitchedOff() async throws {
        try await RelayHarness.run(configure: { $0.metricsEnabled = false }) { relay in
            let metrics = try await httpGet(port: relay.port, path: "/metrics")
            let health = try await httpGet(port: relay.port, path: "/healthz")
            #expect(metrics.status == 404)
            #expect(health.status == 200)
        }
    }

    @Test func twoRelaysInOneProcessKeepSeparateCounters() async throws {
        try await RelayHarness.run(configure: { _ in }) { first in
            try await RelayHarness.run(configure: { _ in }) { second in
                let alice = TestIdentity("alice")
                try await first.connect { connection in _ = try await connection.register(TestIdentity("bob")) }
                try await first.connect { connection in
                    _ = try await connection.register(alice)
                    try await connection.authenticate(alice)
                    _ = try await connection.submit([outgoing(1, to: "bob")])
                }
                #expect(sample(try await httpGet(port: first.port, path: "/metrics").body, "flitz_relay_envelopes_in_total") == 1)
                #expect(sample(try await httpGet(port: second.port, path: "/metrics").body, "flitz_relay_envelopes_in_total") == 0)
            }
        }
    }
}
