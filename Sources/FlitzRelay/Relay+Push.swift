import FlitzCrypto
import FlitzStore
import FlitzWire
import Foundation

/// The push endpoint requests (`protocol/push.md` 4; `protocol/relay.md`, "RegisterPushEndpoint,
/// RemovePushEndpoint, FetchPushEndpoint"): each concerns only the authenticated device and is answered with its
/// `PushEndpointStatus`. Endpoints are never logged.
extension Relay {
    /// Dispatches the push frames of an authenticated `device`; nil for any other body.
    /// - Throws: `RelayError` for a refused request.
    func handlePushFrame(requestID: UInt64, body: WireFrame.OneOf_Body, device: DeviceAddress) async throws(RelayError) -> WireFrame? {
        let status: WirePushEndpointStatus
        switch body {
        case .registerPushEndpoint(let request): status = try await registerPushEndpoint(request, device: device)
        case .removePushEndpoint: status = try await removePushEndpoint(device: device)
        case .fetchPushEndpoint: status = try await fetchPushEndpoint(device: device)
        default: return nil
        }
        return WireFrame(requestID: requestID, body: .pushEndpointStatus(status))
    }

    /// RegisterPushEndpoint: the checks of `push.md` 4 in order, then the provider's availability, then stores.
    func registerPushEndpoint(_ request: WireRegisterPushEndpoint, device: DeviceAddress) async throws(RelayError) -> WirePushEndpointStatus {
        let endpoint = try Self.validatedPushEndpoint(request, allowPrivateEndpoints: configuration.push.allowPrivateEndpoints)
        guard push.availableProviders.contains(endpoint.provider) else {
            throw RelayError(.pushProviderUnavailable, "this relay has no credentials for \(endpoint.provider.rawValue) (push.md 3)")
        }
        do {
            let stored = try await store.setPushEndpoint(
                device: device,
                StoredPushEndpoint(
                    provider: endpoint.provider.rawValue, endpoint: endpoint.endpoint, p256dh: endpoint.p256dh, authSecret: endpoint.authSecret,
                    apnsBackground: endpoint.apnsBackground, registeredAtMs: clock.nowMs()))
            return Self.wireStatus(stored)
        } catch {
            throw internalError(error)
        }
    }

    /// RemovePushEndpoint: deletes the device's endpoint, live or dropped; no error when there is none.
    func removePushEndpoint(device: DeviceAddress) async throws(RelayError) -> WirePushEndpointStatus {
        do {
            try await store.removePushEndpoint(device: device)
        } catch {
            throw internalError(error)
        }
        return WirePushEndpointStatus()
    }

    /// FetchPushEndpoint: the device's endpoint status (`registered: false` with `dropped_at_ms` for a dropped one).
    func fetchPushEndpoint(device: DeviceAddress) async throws(RelayError) -> WirePushEndpointStatus {
        do {
            return try await store.pushEndpoint(device: device).map(Self.wireStatus) ?? WirePushEndpointStatus()
        } catch {
            throw internalError(error)
        }
    }

    /// The checks of `push.md` 4, in order, each `INVALID_ARGUMENT` naming the field: provider set; endpoint of the
    /// provider's form (section 3); Web Push keys valid, other providers' keys empty. APNs tokens are stored lowercase.
    /// Unless `allowPrivateEndpoints` (`push.allowPrivateEndpoints`), a Web Push URL must also be `https` to a host
    /// that is neither `localhost` nor a non-public IP literal (`PushDestinationPolicy.registrationProblem`).
    static func validatedPushEndpoint(_ request: WireRegisterPushEndpoint, allowPrivateEndpoints: Bool) throws(RelayError) -> PushEndpoint {
        let provider: PushProviderKind
        switch request.provider {
        case .webPush: provider = .webPush
        case .apns: provider = .apns
        case .fcm: provider = .fcm
        case .unspecified, .UNRECOGNIZED: throw RelayError(.invalidArgument, "provider must be WEB_PUSH, APNS or FCM")
        }
        var endpoint = request.endpoint
        switch provider {
        case .webPush:
            guard isValidWebPushEndpoint(endpoint) else {
                throw RelayError(
                    .invalidArgument,
                    allowPrivateEndpoints
                        ? "endpoint must be an absolute https URL (http only on a loopback host) of at most \(maxWebPushEndpointBytes) bytes"
                        : "endpoint must be an absolute https URL of at most \(maxWebPushEndpointBytes) bytes")
            }
            if !allowPrivateEndpoints, let problem = PushDestinationPolicy.registrationProblem(endpoint) {
                throw RelayError(
                    .invalidArgument,
                    "endpoint must be an https URL on a public host: \(problem) (this relay does not allow private push endpoints, push.allowPrivateEndpoints)")
            }
        case .apns:
            endpoint = endpoint.lowercased()
            guard (64...200).contains(endpoint.utf8.count), endpoint.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
                throw RelayError(.invalidArgument, "endpoint must be an APNs device token: 64 to 200 hex characters")
            }
        case .fcm:
            guard (1...4_096).contains(endpoint.utf8.count), endpoint.utf8.allSatisfy({ (0x20...0x7E).contains($0) }) else {
                throw RelayError(.invalidArgument, "endpoint must be an FCM registration token: 1 to 4096 bytes of printable ASCII")
            }
        }
        if provider == .webPush {
            guard WebPush.isValidPublicKey(request.p256Dh) else {
                throw RelayError(.invalidArgument, "p256dh must be a 65-byte uncompressed P-256 public key")
            }
            guard request.authSecret.count == WebPush.authSecretLength else {
                throw RelayError(.invalidArgument, "auth_secret must be \(WebPush.authSecretLength) bytes")
            }
        } else {
            guard request.p256Dh.isEmpty else { throw RelayError(.invalidArgument, "p256dh must be empty for \(provider.rawValue)") }
            guard request.authSecret.isEmpty else { throw RelayError(.invalidArgument, "auth_secret must be empty for \(provider.rawValue)") }
        }
        return PushEndpoint(
            provider: provider, endpoint: endpoint, p256dh: request.p256Dh, authSecret: request.authSecret,
            apnsBackground: provider == .apns && request.apnsBackground)
    }

    /// Longest Web Push endpoint URL (`push.md` 3.1), in UTF-8 bytes.
    static let maxWebPushEndpointBytes = 2_048

    /// `push.md` 3.1: an absolute `https` URL with a host, or `http` when the host is a loopback address
    /// (`127.0.0.0/8`, `::1`, `localhost`); at most 2 048 bytes; no user info; a port, when given, 1 to 65 535.
    static func isValidWebPushEndpoint(_ text: String) -> Bool {
        guard (1...maxWebPushEndpointBytes).contains(text.utf8.count), let components = URLComponents(string: text),
            let scheme = components.scheme?.lowercased(), var host = components.host, !host.isEmpty,
            components.user == nil, components.password == nil,
            // A port outside 1...65 535 would trap the HTTP client at the first wake-up (a relay crash).
            components.port.map({ (1...65_535).contains($0) }) ?? true
        else { return false }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        switch scheme {
        case "https": return true
        case "http": return isLoopback(host)
        default: return false
        }
    }

    /// `localhost`, `::1`, or a dotted IPv4 address in `127.0.0.0/8`.
    static func isLoopback(_ host: String) -> Bool {
        let host = host.lowercased()
        if host == "localhost" || host == "::1" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        guard octets.count == 4, octets.allSatisfy({ !$0.isEmpty && $0.count <= 3 && $0.allSatisfy(\.isASCII) && UInt8($0) != nil }) else {
            return false
        }
        return octets[0] == "127"
    }

    static func wireStatus(_ stored: StoredPushEndpoint) -> WirePushEndpointStatus {
        var status = WirePushEndpointStatus()
        status.registered = stored.isLive
        status.provider = switch PushProviderKind(rawValue: stored.provider) {
        case .webPush: .webPush
        case .apns: .apns
        case .fcm: .fcm
        case nil: .unspecified
        }
        status.registeredAtMs = stored.registeredAtMs
        status.lastWakeAtMs = stored.lastWakeAtMs
        status.wakesSent = stored.wakesSent
        status.lastFailure = stored.lastFailure
        status.droppedAtMs = stored.droppedAtMs
        return status
    }
}
