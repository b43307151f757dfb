import Crypto
import Foundation
import NIOCore

/// An IP address and UDP port as STUN and TURN carry them (4 or 16 address bytes, network order).
struct TransportAddress: Sendable, Hashable, CustomStringConvertible {
    /// 4 bytes (IPv4) or 16 bytes (IPv6), network order.
    let ip: [UInt8]
    let port: UInt16

    init(ip: [UInt8], port: UInt16) {
        precondition(ip.count == 4 || ip.count == 16, "an IP address is 4 or 16 bytes")
        self.ip = ip
        self.port = port
    }

    /// nil for a string that is not an IPv4 or IPv6 literal.
    init?(literal: String, port: UInt16) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, literal, &v4) == 1 {
            self.init(ip: withUnsafeBytes(of: &v4) { Array($0) }, port: port)
        } else if inet_pton(AF_INET6, literal, &v6) == 1 {
            self.init(ip: withUnsafeBytes(of: &v6) { Array($0) }, port: port)
        } else {
            return nil
        }
    }

    /// nil for a Unix-domain address.
    init?(_ address: SocketAddress) {
        switch address {
        case .v4(let a):
            var sin = a.address.sin_addr
            self.init(ip: withUnsafeBytes(of: &sin) { Array($0) }, port: UInt16(bigEndian: a.address.sin_port))
        case .v6(let a):
            var sin6 = a.address.sin6_addr
            self.init(ip: withUnsafeBytes(of: &sin6) { Array($0) }, port: UInt16(bigEndian: a.address.sin6_port))
        case .unixDomainSocket:
            return nil
        }
    }

    var isIPv4: Bool { ip.count == 4 }

    /// The textual literal ("192.0.2.1", "2001:db8::1").
    var literal: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        ip.withUnsafeBytes { raw in
            _ = inet_ntop(isIPv4 ? AF_INET : AF_INET6, raw.baseAddress, &buffer, socklen_t(buffer.count))
        }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    var socketAddress: SocketAddress {
        // A literal this type produced always parses.
        try! SocketAddress(ipAddress: literal, port: Int(port))
    }

    var description: String { isIPv4 ? "\(literal):\(port)" : "[\(literal)]:\(port)" }
}

/// A STUN message (RFC 8489 5 and 14) with the TURN methods and attributes of RFC 8656. Values in, bytes out; no
/// I/O. Attributes keep their order and raw values; typed accessors decode the ones Flitz uses.
struct STUNMessage: Sendable, Equatable {
    /// RFC 8489 5: the fixed magic cookie.
    static let magicCookie: UInt32 = 0x2112_A442
    static let headerLength = 20
    /// RFC 8489 14.5: HMAC-SHA-1, 20 bytes.
    static let integrityLength = 20

    enum Method: UInt16, Sendable {
        case binding = 0x001, allocate = 0x003, refresh = 0x004, send = 0x006, data = 0x007
        case createPermission = 0x008, channelBind = 0x009
    }

    enum Class: UInt8, Sendable { case request = 0, indication = 1, success = 2, error = 3 }

    /// Attribute types (RFC 8489 18.3, RFC 8656 18).
    enum AttributeType {
        static let mappedAddress: UInt16 = 0x0001
        static let username: UInt16 = 0x0006
        static let messageIntegrity: UInt16 = 0x0008
        static let errorCode: UInt16 = 0x0009
        static let channelNumber: UInt16 = 0x000C
        static let lifetime: UInt16 = 0x000D
        static let xorPeerAddress: UInt16 = 0x0012
        static let data: UInt16 = 0x0013
        static let realm: UInt16 = 0x0014
        static let nonce: UInt16 = 0x0015
        static let xorRelayedAddress: UInt16 = 0x0016
        static let requestedTransport: UInt16 = 0x0019
        static let xorMappedAddress: UInt16 = 0x0020
        static let software: UInt16 = 0x8022
        static let fingerprint: UInt16 = 0x8028
    }

    struct Attribute: Sendable, Equatable {
        let type: UInt16
        let value: [UInt8]
    }

    var method: Method
    var messageClass: Class
    /// 12 bytes.
    var transactionID: [UInt8]
    var attributes: [Attribute]

    init(method: Method, messageClass: Class, transactionID: [UInt8], attributes: [Attribute] = []) {
        precondition(transactionID.count == 12, "a STUN transaction id is 12 bytes")
        self.method = method
        self.messageClass = messageClass
        self.transactionID = transactionID
        self.attributes = attributes
    }

    /// A request with a fresh random transaction id.
    static func request(_ method: Method, _ attributes: [Attribute] = []) -> STUNMessage {
        STUNMessage(method: method, messageClass: .request, transactionID: (0..<12).map { _ in UInt8.random(in: 0...255) },
                    attributes: attributes)
    }

    // MARK: Encoding

    /// RFC 8489 5: the 14-bit type interleaves the 12-bit method and the 2-bit class.
    static func messageType(_ method: Method, _ messageClass: Class) -> UInt16 {
        let m = method.rawValue, c = UInt16(messageClass.rawValue)
        return (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
    }

    /// The wire bytes. With `integrityKey`, a MESSAGE-INTEGRITY attribute (RFC 8489 14.5) is appended last.
    func encoded(integrityKey: [UInt8]? = nil) -> [UInt8] {
        var body: [UInt8] = []
        for attribute in attributes { Self.append(attribute, to: &body) }
        var bytes = header(bodyLength: body.count + (integrityKey == nil ? 0 : 4 + Self.integrityLength)) + body
        if let integrityKey {
            let mac = HMAC<Insecure.SHA1>.authenticationCode(for: bytes, using: SymmetricKey(data: integrityKey))
            Self.append(Attribute(type: AttributeType.messageIntegrity, value: Array(mac)), to: &bytes)
        }
        return bytes
    }

    private func header(bodyLength: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendNetworkOrder(Self.messageType(method, messageClass))
        bytes.appendNetworkOrder(UInt16(bodyLength))
        bytes.appendNetworkOrder(Self.magicCookie)
        return bytes + transactionID
    }

    private static func append(_ attribute: Attribute, to bytes: inout [UInt8]) {
        bytes.appendNetworkOrder(attribute.type)
        bytes.appendNetworkOrder(UInt16(attribute.value.count))
        bytes += attribute.value
        bytes += [UInt8](repeating: 0, count: (4 - attribute.value.count % 4) % 4)
    }

    // MARK: Parsing

    /// True when `bytes` looks like a STUN message (RFC 8489 5: top two bits zero, magic cookie); media and
    /// ChannelData never do (RFC 7983).
    static func isSTUN(_ bytes: [UInt8]) -> Bool {
        bytes.count >= headerLength && bytes[0] & 0xC0 == 0
            && bytes[4] == 0x21 && bytes[5] == 0x12 && bytes[6] == 0xA4 && bytes[7] == 0x42
    }

    /// - Throws: `MediaError.stun` when `bytes` is not a well-formed STUN message of a known method.
    init(parsing bytes: [UInt8]) throws(MediaError) {
        guard Self.isSTUN(bytes) else { throw MediaError(.stun, "not a STUN message") }
        let type = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        let length = Int(UInt16(bytes[2]) << 8 | UInt16(bytes[3]))
        guard length % 4 == 0, Self.headerLength + length == bytes.count else {
            throw MediaError(.stun, "STUN message length does not match the datagram")
        }
        let methodBits = (type & 0x000F) | ((type & 0x00E0) >> 1) | ((type & 0x3E00) >> 2)
        let classBits = UInt8(((type & 0x0010) >> 4) | ((type & 0x0100) >> 7))
        guard let method = Method(rawValue: methodBits), let messageClass = Class(rawValue: classBits) else {
            throw MediaError(.stun, "unknown STUN method \(methodBits)")
        }
        var attributes: [Attribute] = []
        var offset = Self.headerLength
        while offset < bytes.count {
            guard offset + 4 <= bytes.count else { throw MediaError(.stun, "truncated STUN attribute") }
            let attributeType = UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
            let attributeLength = Int(UInt16(bytes[offset + 2]) << 8 | UInt16(bytes[offset + 3]))
            let start = offset + 4
            guard start + attributeLength <= bytes.count else { throw MediaError(.stun, "truncated STUN attribute") }
            attributes.append(Attribute(type: attributeType, value: Array(bytes[start..<start + attributeLength])))
            offset = start + attributeLength + (4 - attributeLength % 4) % 4
        }
        self.init(method: method, messageClass: messageClass, transactionID: Array(bytes[8..<20]), attributes: attributes)
    }

    /// RFC 8489 14.5: checks the MESSAGE-INTEGRITY of the received `bytes` this message was parsed from: HMAC-SHA-1
    /// over the message up to the attribute, with the header length covering it. False when it is absent or wrong.
    static func verifyIntegrity(of bytes: [UInt8], key: [UInt8]) -> Bool {
        var offset = headerLength
        while offset + 4 <= bytes.count {
            let attributeType = UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
            let attributeLength = Int(UInt16(bytes[offset + 2]) << 8 | UInt16(bytes[offset + 3]))
            if attributeType == AttributeType.messageIntegrity {
                guard attributeLength == integrityLength, offset + 4 + integrityLength <= bytes.count else { return false }
                var covered = Array(bytes[0..<offset])
                let length = UInt16(offset - headerLength + 4 + integrityLength)
                covered[2] = UInt8(length >> 8)
                covered[3] = UInt8(length & 0xFF)
                return HMAC<Insecure.SHA1>.isValidAuthenticationCode(
                    Array(bytes[offset + 4..<offset + 4 + integrityLength]), authenticating: covered,
                    using: SymmetricKey(data: key))
            }
            offset += 4 + attributeLength + (4 - attributeLength % 4) % 4
        }
        return false
    }

    // MARK: Attributes

    func attribute(_ type: UInt16) -> [UInt8]? { attributes.first { $0.type == type }?.value }

    /// RFC 8489 14.2 (XOR-MAPPED-ADDRESS) and RFC 8656 18.3/18.5 (XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS).
    func xorAddress(_ type: UInt16) -> TransportAddress? {
        guard let value = attribute(type), value.count >= 8 else { return nil }
        let port = (UInt16(value[2]) << 8 | UInt16(value[3])) ^ UInt16(Self.magicCookie >> 16)
        let mask = Self.cookieBytes + transactionID
        switch value[1] {
        case 0x01 where value.count == 8: return TransportAddress(ip: (0..<4).map { value[4 + $0] ^ mask[$0] }, port: port)
        case 0x02 where value.count == 20: return TransportAddress(ip: (0..<16).map { value[4 + $0] ^ mask[$0] }, port: port)
        default: return nil
        }
    }

    static func xorAddressAttribute(_ type: UInt16, _ address: TransportAddress, transactionID: [UInt8]) -> Attribute {
        var value: [UInt8] = [0, address.isIPv4 ? 0x01 : 0x02]
        value.appendNetworkOrder(address.port ^ UInt16(magicCookie >> 16))
        let mask = cookieBytes + transactionID
        value += address.ip.enumerated().map { $0.element ^ mask[$0.offset] }
        return Attribute(type: type, value: value)
    }

    /// RFC 8489 14.8: (code, reason); nil without an ERROR-CODE.
    var errorCode: (code: Int, reason: String)? {
        guard let value = attribute(AttributeType.errorCode), value.count >= 4 else { return nil }
        return (Int(value[2] & 0x07) * 100 + Int(value[3]), String(decoding: value[4...], as: UTF8.self))
    }

    func string(_ type: UInt16) -> String? { attribute(type).map { String(decoding: $0, as: UTF8.self) } }

    /// RFC 8656 18.2: seconds.
    var lifetime: UInt32? {
        guard let value = attribute(AttributeType.lifetime), value.count == 4 else { return nil }
        return value.reduce(0) { $0 << 8 | UInt32($1) }
    }

    static func stringAttribute(_ type: UInt16, _ value: String) -> Attribute { Attribute(type: type, value: Array(value.utf8)) }

    static func uint32Attribute(_ type: UInt16, _ value: UInt32) -> Attribute {
        var bytes: [UInt8] = []
        bytes.appendNetworkOrder(value)
        return Attribute(type: type, value: bytes)
    }

    /// RFC 8656 18.7: REQUESTED-TRANSPORT UDP (protocol 17).
    static let requestedTransportUDP = Attribute(type: AttributeType.requestedTransport, value: [17, 0, 0, 0])

    /// RFC 8656 18.1: CHANNEL-NUMBER, 0x4000 through 0x4FFF, then two reserved bytes.
    static func channelNumberAttribute(_ channel: UInt16) -> Attribute {
        Attribute(type: AttributeType.channelNumber, value: [UInt8(channel >> 8), UInt8(channel & 0xFF), 0, 0])
    }

    private static let cookieBytes: [UInt8] = [0x21, 0x12, 0xA4, 0x42]

    /// RFC 8489 9.2.2: the long-term credential key, MD5(username ":" realm ":" password).
    static func longTermKey(username: String, realm: String, password: String) -> [UInt8] {
        Array(Insecure.MD5.hash(data: Array("\(username):\(realm):\(password)".utf8)))
    }
}

/// RFC 8656 12.4: a ChannelData message: channel number (0x4000 through 0x4FFF), length, application data. Over UDP
/// the padding to 4 bytes is optional; it is not sent and is ignored when received.
enum ChannelData {
    static let channelRange: ClosedRange<UInt16> = 0x4000...0x4FFF

    static func isChannelData(_ bytes: [UInt8]) -> Bool { bytes.count >= 4 && bytes[0] >= 0x40 && bytes[0] <= 0x4F }

    static func encode(channel: UInt16, data: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendNetworkOrder(channel)
        bytes.appendNetworkOrder(UInt16(data.count))
        return bytes + data
    }

    /// nil when the length field exceeds the datagram.
    static func decode(_ bytes: [UInt8]) -> (channel: UInt16, data: [UInt8])? {
        guard isChannelData(bytes) else { return nil }
        let channel = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        let length = Int(UInt16(bytes[2]) << 8 | UInt16(bytes[3]))
        guard 4 + length <= bytes.count else { return nil }
        return (channel, Array(bytes[4..<4 + length]))
    }
}

extension Array where Element == UInt8 {
    mutating func appendNetworkOrder(_ value: UInt16) { append(contentsOf: [UInt8(value >> 8), UInt8(value & 0xFF)]) }
    mutating func appendNetworkOrder(_ value: UInt32) {
        append(contentsOf: [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)])
    }
}
