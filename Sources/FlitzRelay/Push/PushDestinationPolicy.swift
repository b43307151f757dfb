import Dispatch
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Where the relay may send a Web Push request (`protocol/push.md` 3.1 and 4, `push.allowPrivateEndpoints`).
/// A Web Push URL is client input: without this policy a device could make the relay POST to its own loopback
/// services or the operator's private network and read the status codes back through `FetchPushEndpoint`.
/// With `push.allowPrivateEndpoints` off (the default) only `https` to public addresses is allowed, checked
/// on the URL at registration and on every resolved address just before each request. APNs and FCM base URLs
/// are operator configuration and not subject to it.
enum PushDestinationPolicy {
    /// The host of `url` without IPv6 brackets, lowercased; nil when `url` has none.
    static func host(of url: String) -> String? {
        guard let host = URLComponents(string: url)?.host, !host.isEmpty else { return nil }
        var bare = host.lowercased()
        if bare.hasPrefix("["), bare.hasSuffix("]") { bare = String(bare.dropFirst().dropLast()) }
        return bare
    }

    /// Why the relay (with `push.allowPrivateEndpoints` off) refuses the already well-formed Web Push URL `url`
    /// by its text alone, or nil: plain `http`; the name `localhost` or a name under `.localhost` (RFC 6761);
    /// an IP literal (any form the system resolver reads as one, e.g. `127.1` or `2130706433`) in a range that is
    /// not public (`isPublic`); a host with `%` or `:` that is no IPv6 address.
    static func registrationProblem(_ url: String) -> String? {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else { return "not a URL" }
        guard scheme == "https" else { return "plain http is refused" }
        guard let host = host(of: url) else { return "no host" }
        let name = host.hasSuffix(".") ? String(host.dropLast()) : host
        if name == "localhost" || name.hasSuffix(".localhost") { return "localhost is refused" }
        if let address = IPAddress(literal: host) {
            return isPublic(address) ? nil : "a private, loopback, link-local or otherwise non-public address is refused"
        }
        if host.contains(":") || host.contains("%") { return "not a valid host" }
        return nil
    }

    /// An IPv4 or IPv6 address as bytes (4 or 16).
    struct IPAddress: Sendable, Equatable, CustomStringConvertible {
        /// 4 bytes (IPv4) or 16 (IPv6), network order.
        var bytes: [UInt8]

        /// The address of a literal: IPv6 by `inet_pton`; IPv4 by `inet_aton`, which also reads the legacy forms
        /// (`127.1`, `0x7f.0.0.1`, `2130706433`) that `getaddrinfo` and so the HTTP client would connect to.
        init?(literal text: String) {
            var v6 = in6_addr()
            if inet_pton(AF_INET6, text, &v6) == 1 {
                bytes = withUnsafeBytes(of: &v6) { Array($0) }
                return
            }
            var v4 = in_addr()
            if inet_aton(text, &v4) != 0 {
                bytes = withUnsafeBytes(of: &v4) { Array($0) }
                return
            }
            return nil
        }

        /// An address from its 4 or 16 bytes.
        init(bytes: [UInt8]) { self.bytes = bytes }

        /// Dotted quad or a plain hex IPv6 form (for tests and messages; never logged with an endpoint).
        var description: String {
            if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
            return stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }.joined(separator: ":")
        }
    }

    /// Whether `address` is publicly routable unicast. IPv4: not in `0/8`, `10/8`, `100.64/10`, `127/8`,
    /// `169.254/16`, `172.16/12`, `192.0.0/24`, `192.0.2/24`, `192.88.99/24`, `192.168/16`, `198.18/15`,
    /// `198.51.100/24`, `203.0.113/24`, `224/4` (multicast) or `240/4` (reserved, broadcast). IPv6: within
    /// `2000::/3` (global unicast) but not `2001::/32` (Teredo), `2001:db8::/32`, `2002::/16` (6to4) or
    /// `3fff::/20` (documentation); an IPv4-mapped (`::ffff:0:0/96`) or NAT64 (`64:ff9b::/96`) address as its
    /// IPv4 address; everything else (`::`, `::1`, `fc00::/7`, `fe80::/10`, `ff00::/8`, ...) is not public.
    static func isPublic(_ address: IPAddress) -> Bool {
        let b = address.bytes
        if b.count == 4 { return isPublicIPv4(b) }
        guard b.count == 16 else { return false }
        let mapped: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
        let nat64: [UInt8] = [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0]
        if Array(b[0..<12]) == mapped || Array(b[0..<12]) == nat64 { return isPublicIPv4(Array(b[12..<16])) }
        guard b[0] & 0xe0 == 0x20 else { return false }  // 2000::/3
        if b[0] == 0x20, b[1] == 0x01, b[2] == 0, b[3] == 0 { return false }  // 2001::/32 Teredo
        if b[0] == 0x20, b[1] == 0x01, b[2] == 0x0d, b[3] == 0xb8 { return false }  // 2001:db8::/32
        if b[0] == 0x20, b[1] == 0x02 { return false }  // 2002::/16 6to4
        if b[0] == 0x3f, b[1] == 0xff, b[2] & 0xf0 == 0 { return false }  // 3fff::/20
        return true
    }

    private static func isPublicIPv4(_ b: [UInt8]) -> Bool {
        switch (b[0], b[1], b[2]) {
        case (0, _, _), (10, _, _), (127, _, _), (224...255, _, _): return false
        case (100, 64...127, _), (169, 254, _), (172, 16...31, _), (192, 168, _), (198, 18...19, _): return false
        case (192, 0, 0), (192, 0, 2), (192, 88, 99), (198, 51, 100), (203, 0, 113): return false
        default: return true
        }
    }

    /// The addresses `getaddrinfo` gives for `host` (TCP), on a Dispatch worker thread so neither an event loop
    /// nor the concurrency pool blocks; bounded by the system resolver's own timeouts.
    /// - Throws: `ResolutionError` when the name does not resolve.
    static func resolve(_ host: String) async throws(ResolutionError) -> [IPAddress] {
        let result: Result<[IPAddress], ResolutionError> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: resolveBlocking(host)) }
        }
        return try result.get()
    }

    /// Resolution failed (`getaddrinfo`'s error code).
    struct ResolutionError: Error, Sendable {
        /// The `EAI_*` code.
        var code: Int32
    }

    private static func resolveBlocking(_ host: String) -> Result<[IPAddress], ResolutionError> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
            hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0 else { return .failure(ResolutionError(code: status)) }
        defer { freeaddrinfo(list) }
        var addresses: [IPAddress] = []
        var next = list
        while let entry = next {
            if let socketAddress = entry.pointee.ai_addr {
                switch entry.pointee.ai_family {
                case AF_INET:
                    socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                        var address = pointer.pointee.sin_addr
                        addresses.append(IPAddress(bytes: withUnsafeBytes(of: &address) { Array($0) }))
                    }
                case AF_INET6:
                    socketAddress.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                        var address = pointer.pointee.sin6_addr
                        addresses.append(IPAddress(bytes: withUnsafeBytes(of: &address) { Array($0) }))
                    }
                default: break
                }
            }
            next = entry.pointee.ai_next
        }
        return addresses.isEmpty ? .failure(ResolutionError(code: EAI_NONAME)) : .success(addresses)
    }

    /// What `WebPushSender.send` does before each request when private endpoints are not allowed: nil when
    /// `url` is `https` and EVERY address its host resolves to is public; else the outcome to return instead
    /// (`.failed` for a refused destination, `.retry` when the name does not resolve now). The HTTP client
    /// resolves again when it connects, so a name whose records change in between (DNS rebinding) can still
    /// slip through once; `docs/decisions.md` says why this is accepted.
    static func sendTimeRefusal(_ url: String) async -> PushAttemptOutcome? {
        guard let host = host(of: url) else { return .failed(reason: "endpoint is not an absolute http(s) URL") }
        if host.contains("%") { return .failed(reason: "push endpoint resolves to a private address") }
        let addresses: [IPAddress]
        do {
            addresses = try await resolve(host)
        } catch {
            return .retry(after: nil, reason: "cannot resolve the push service's host")
        }
        guard addresses.allSatisfy(isPublic) else { return .failed(reason: "push endpoint resolves to a private address") }
        // Only reachable for a public host stored while the flag was on: registration refuses http otherwise.
        guard URLComponents(string: url)?.scheme?.lowercased() == "https" else {
            return .failed(reason: "plain http push endpoints are refused (push.allowPrivateEndpoints is off)")
        }
        return nil
    }
}
