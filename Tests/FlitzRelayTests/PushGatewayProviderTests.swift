import Crypto
@testable import FlitzRelay
import FlitzStore
import FlitzWire
import Foundation
import Hummingbird
import HummingbirdHTTP2
import Synchronization
import Testing

/// The push gateway with APNs configured (`protocol/push.md` 3.2 and 9): the relay reads the `.p8` key at start,
/// trusts `push.caFile`, and wakes an APNs device through a local HTTPS HTTP/2 stand-in.
@Suite struct PushGatewayProviderTests {
    static let token = String(repeating: "0123456789ABCDEF", count: 4)

    @Test func apnsDeviceIsWokenOverHTTP2WithTheRelaysCredentials() async throws {
        try await StandIn.withTemporaryDirectory { directory in
            let keyFile = directory.appendingPathComponent("AuthKey.p8")
            try Data(P256.Signing.PrivateKey().pemRepresentation.utf8).write(to: keyFile)
            let received = Mutex<[ReceivedRequest]>([])
            try await StandIn.run(
                server: try .http2Upgrade(tlsConfiguration: StandIn.serverTLS()),
                handle: { request in
                    received.withLock { $0.append(request) }
                    return StandIn.answer(200)
                }
            ) { port in
                try await RelayHarness.run(configure: { configuration in
                    configuration.push.apnsKeyFile = keyFile.path
                    configuration.push.apnsKeyID = "KEYID12345"
                    configuration.push.apnsTeamID = "TEAM123456"
                    configuration.push.apnsTopic = "org.example.flitz"
                    configuration.push.apnsURL = "https://127.0.0.1:\(port)"
                    configuration.push.caFile = StandIn.tlsDirectory.appendingPathComponent("ca.pem").path
                }) { harness in
                    let alice = TestIdentity("alice"), bob = TestIdentity("bob")
                    try await harness.connect { connection in _ = try await connection.register(alice) }
                    try await harness.connect { connection in
                        let (id, _) = try await connection.register(bob)
                        try await connection.authenticate(bob, deviceID: id)
                        var request = WireRegisterPushEndpoint()
                        request.provider = .apns
                        request.endpoint = Self.token
                        let reply = try await connection.request(.registerPushEndpoint(request))
                        guard case .pushEndpointStatus(let status) = reply.body else { throw Failure("\(reply)") }
                        #expect(status.registered && status.provider == .apns)
                    }
                    #expect(try await harness.app.relay.store.pushEndpoint(device: DeviceAddress(handle: "bob", deviceID: 1))?.endpoint == Self.token.lowercased())
                    try await poll { !harness.app.relay.isConnected(handle: "bob", deviceID: 1) }
                    try await harness.connect { connection in
                        try await connection.authenticate(alice)
                        var envelope = outgoing(1, to: "bob")
                        envelope.urgency = .urgent
                        #expect(try await connection.submit([envelope]).allSatisfy { !$0.hasError })
                    }
                    let monitor = harness.app.relay.push.monitor
                    try await within { await monitor.wait { $0.pending == 0 } }
                    #expect(monitor.snapshot.sent == 1)
                    let requests = received.withLock { $0 }
                    try #require(requests.count == 1)
                    let request = requests[0]
                    #expect(request.isHTTP2)
                    #expect(request.path == "/3/device/\(Self.token.lowercased())")
                    #expect(request.header("apns-topic") == "org.example.flitz")
                    #expect(request.header("apns-push-type") == "alert")
                    #expect(request.header("apns-collapse-id") == "flitz-wake")
                    #expect(request.header("authorization")?.hasPrefix("bearer ") == true)
                    let body = String(decoding: request.body, as: UTF8.self)
                    #expect(body.contains(#""flitz":{"v":1,"wake":"urgent"}"#))
                    #expect(!body.contains("alice") && !body.contains("ciphertext"))
                }
            }
        }
    }

    @Test func unreadableOrBadCredentialsStopTheRelayBeforeItListens() async throws {
        try await StandIn.withTemporaryDirectory { directory in
            var configuration = RelayConfiguration(host: "127.0.0.1", port: 0, databasePath: directory.appendingPathComponent("relay.sqlite").path)
            configuration.push.apnsKeyFile = directory.appendingPathComponent("missing.p8").path
            configuration.push.apnsKeyID = "KEYID12345"
            configuration.push.apnsTeamID = "TEAM123456"
            configuration.push.apnsTopic = "org.example.flitz"
            await #expect(throws: ConfigurationError("cannot read the push.apns.keyFile file \(configuration.push.apnsKeyFile!)")) {
                _ = try await buildRelay(configuration: configuration, logger: .init(label: "test"))
            }
            configuration.push = PushConfiguration()
            let account = directory.appendingPathComponent("service-account.json")
            try Data(#"{"type":"service_account"}"#.utf8).write(to: account)
            configuration.push.fcmServiceAccount = account.path
            await #expect(throws: ConfigurationError.self) { _ = try await buildRelay(configuration: configuration, logger: .init(label: "test")) }
            configuration.push = PushConfiguration()
            configuration.push.caFile = account.path
            await #expect(throws: ConfigurationError.self) { _ = try await buildRelay(configuration: configuration, logger: .init(label: "test")) }
        }
    }
}
