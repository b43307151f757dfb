import AsyncHTTPClient
import Foundation
import NIOCore

/// What the APNs and FCM senders share (`protocol/push.md` 3.2, 3.3 and 7): checking configured URLs, reading
/// `Retry-After`, and describing a failure without the endpoint, a token, a key or the payload.
enum ProviderHTTP {
    /// Largest answer body read (bytes): APNs and FCM error bodies are well under 1 KiB.
    static let maxAnswerBytes = 64 * 1024

    /// `text` as a base URL without a trailing slash: an absolute `https` URL with a host and no query or
    /// fragment, or `http` when `allowLoopbackHTTP` and the host is a loopback address (tests and local
    /// stand-ins, as `push.md` 3.1 allows for Web Push). `key` names the setting in the error.
    static func baseURL(_ text: String, key: String, allowLoopbackHTTP: Bool) throws(ConfigurationError) -> String {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            let host = components.host, !host.isEmpty
        else { throw ConfigurationError("\(key): not an absolute URL") }
        guard components.query == nil, components.fragment == nil, components.user == nil, components.password == nil
        else { throw ConfigurationError("\(key): must not have a query, fragment or user info") }
        switch scheme {
        case "https":
            break
        case "http" where allowLoopbackHTTP && isLoopback(host: host):
            break
        case "http" where allowLoopbackHTTP:
            throw ConfigurationError("\(key): http is allowed only for a loopback host; use https")
        default:
            throw ConfigurationError("\(key): must be an https URL")
        }
        var trimmed = text
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        return trimmed
    }

    /// Whether `host` (as `URLComponents.host` gives it) is `localhost`, in `127.0.0.0/8` or `::1`.
    static func isLoopback(host: String) -> Bool {
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        if bare.lowercased() == "localhost" || bare == "::1" { return true }
        let octets = bare.split(separator: ".", omittingEmptySubsequences: false)
        guard octets.count == 4, octets.allSatisfy({ UInt8($0) != nil }) else { return false }
        return octets[0] == "127"
    }

    /// The `Retry-After` of `response` (RFC 9110 10.2.3) as a wait from `now`: delta-seconds or an HTTP-date in
    /// any of the three forms a recipient must accept; nil when absent or unreadable. One parser for every
    /// provider: `WebPushSender.parseRetryAfter`.
    static func retryAfter(_ response: HTTPClientResponse, now: Date) -> Duration? {
        response.headers.first(name: "retry-after").flatMap { WebPushSender.parseRetryAfter($0, now: now) }
    }

    /// A short description of a failed request (connection refused, TLS, timeout) naming only the error's
    /// kind: NIO and AsyncHTTPClient errors never carry the request path (where the APNs token is), but this
    /// does not rely on it.
    static func networkFailure(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            if error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
                return "request timed out"
            }
            return "request failed: HTTPClientError"
        }
        return "request failed: \(String(describing: type(of: error)))"
    }

    /// `text` when it is a short code of letters, digits and `_` (as APNs `reason` and FCM `status` /
    /// `errorCode` are), else nil: a stand-in or proxy could answer anything, and reasons are logged.
    static func code(_ text: String?) -> String? {
        guard let text, !text.isEmpty, text.count <= 64,
            text.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "_") })
        else { return nil }
        return text
    }

    /// `duration` as NIO's `TimeAmount` (nanoseconds), for `HTTPClient.execute(_:timeout:)`.
    static func timeAmount(_ duration: Duration) -> TimeAmount {
        let (seconds, attoseconds) = duration.components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
