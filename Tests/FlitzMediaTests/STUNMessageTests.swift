@testable import FlitzMedia
import Foundation
import Testing

private func hex(_ string: String) -> [UInt8] {
    let digits = Array(string.filter { !$0.isWhitespace })
    return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
}

/// STUN and TURN message encoding (RFC 8489, RFC 8656) against the sample messages of RFC 5769 and round trips.
@Suite struct STUNMessageTests {
    /// RFC 5769 2.1: a Binding request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME "evtj:h6vY",
    /// MESSAGE-INTEGRITY (short-term key = the password) and FINGERPRINT.
    static let sampleRequest = hex("""
        000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74\
        002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5\
        b2d3f249c1b571a280280004e57a3bcf
        """)
    static let samplePassword = Array("VOkJxbRl1RmTxUk/WvJxBt".utf8)

    /// RFC 5769 2.2: a Binding success response with XOR-MAPPED-ADDRESS 192.0.2.1:32853.
    static let sampleIPv4Response = hex("""
        0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220\
        00200008 0001a147e112a643 000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7 80280004c07d4c96
        """)

    /// RFC 5769 2.4: a request with the long-term credential: username "マトリックス", realm "example.org",
    /// password "TheMatrIX" (after SASLprep), key MD5(username ":" realm ":" password).
    static let sampleLongTermRequest = hex("""
        000100602112a44278ad3433c6ad72c029da412e00060012e3839ee38388e383aae38383e382afe382b900000015001c\
        662f2f3439396b39353464364f4c33346f4c394653547679363473410014000b6578616d706c652e6f726700\
        00080014f67024656dd64a3e02b8e0712e85c9a28ca89666
        """)

    @Test func parsesTheRFC5769SampleRequestAndVerifiesItsIntegrity() throws {
        let message = try STUNMessage(parsing: Self.sampleRequest)
        #expect(message.method == .binding && message.messageClass == .request)
        #expect(message.string(STUNMessage.AttributeType.username) == "evtj:h6vY")
        #expect(message.string(STUNMessage.AttributeType.software) == "STUN test client")
        #expect(STUNMessage.verifyIntegrity(of: Self.sampleRequest, key: Self.samplePassword))
        #expect(!STUNMessage.verifyIntegrity(of: Self.sampleRequest, key: Array("wrong".utf8)))
    }

    @Test func aChangedByteFailsTheIntegrityCheck() {
        var tampered = Self.sampleRequest
        tampered[30] ^= 0x01
        #expect(!STUNMessage.verifyIntegrity(of: tampered, key: Self.samplePassword))
    }

    @Test func readsTheXORMappedAddressOfTheRFC5769SampleResponse() throws {
        let message = try STUNMessage(parsing: Self.sampleIPv4Response)
        #expect(message.method == .binding && message.messageClass == .success)
        let mapped = try #require(message.xorAddress(STUNMessage.AttributeType.xorMappedAddress))
        #expect(mapped.literal == "192.0.2.1" && mapped.port == 32853)
        #expect(STUNMessage.verifyIntegrity(of: Self.sampleIPv4Response, key: Self.samplePassword))
    }

    @Test func theLongTermKeyIsMD5OfUsernameRealmAndPassword() throws {
        let message = try STUNMessage(parsing: Self.sampleLongTermRequest)
        let username = try #require(message.string(STUNMessage.AttributeType.username))
        #expect(username == "マトリックス")
        #expect(message.string(STUNMessage.AttributeType.realm) == "example.org")
        let key = STUNMessage.longTermKey(username: username, realm: "example.org", password: "TheMatrIX")
        #expect(STUNMessage.verifyIntegrity(of: Self.sampleLongTermRequest, key: key))
        #expect(!STUNMessage.verifyIntegrity(of: Self.sampleLongTermRequest,
                                             key: STUNMessage.longTermKey(username: username, realm: "example.org", password: "thematrix")))
    }

    @Test func encodesTheMessageTypeBitsOfRFC8489() {
        #expect(STUNMessage.messageType(.binding, .request) == 0x0001)
        #expect(STUNMessage.messageType(.binding, .success) == 0x0101)
        #expect(STUNMessage.messageType(.allocate, .error) == 0x0113)
        #expect(STUNMessage.messageType(.data, .indication) == 0x0017)
        #expect(STUNMessage.messageType(.channelBind, .request) == 0x0009)
    }

    @Test func aSignedTURNRequestRoundTrips() throws {
        let peer = try #require(TransportAddress(literal: "198.51.100.7", port: 49152))
        let key = STUNMessage.longTermKey(username: "1700000000:abc", realm: "flitz.test", password: "pw")
        var request = STUNMessage.request(.channelBind)
        request.attributes = [
            STUNMessage.channelNumberAttribute(0x4001),
            STUNMessage.xorAddressAttribute(STUNMessage.AttributeType.xorPeerAddress, peer, transactionID: request.transactionID),
            STUNMessage.stringAttribute(STUNMessage.AttributeType.username, "1700000000:abc"),
            STUNMessage.uint32Attribute(STUNMessage.AttributeType.lifetime, 600),
        ]
        let bytes = request.encoded(integrityKey: key)
        #expect(bytes.count % 4 == 0)
        let parsed = try STUNMessage(parsing: bytes)
        #expect(parsed.method == .channelBind && parsed.transactionID == request.transactionID)
        #expect(parsed.xorAddress(STUNMessage.AttributeType.xorPeerAddress) == peer)
        #expect(parsed.lifetime == 600)
        #expect(STUNMessage.verifyIntegrity(of: bytes, key: key))
        #expect(!STUNMessage.verifyIntegrity(of: request.encoded(), key: key), "no MESSAGE-INTEGRITY, no pass")
    }

    @Test func refusesWhatIsNotSTUN() {
        #expect(throws: MediaError.self) { try STUNMessage(parsing: Array("GET / HTTP/1.1\r\n\r\n".utf8)) }
        #expect(throws: MediaError.self) { try STUNMessage(parsing: Array(Self.sampleRequest.dropLast(4))) }
        #expect(!STUNMessage.isSTUN(ChannelData.encode(channel: 0x4000, data: [UInt8](repeating: 1, count: 20))))
        #expect(!STUNMessage.isSTUN([0x80] + [UInt8](repeating: 0, count: 30)), "RTP is not STUN")
    }

    @Test func channelDataRoundTripsAndRefusesAShortDatagram() throws {
        let data: [UInt8] = Array("a media packet".utf8)
        let bytes = ChannelData.encode(channel: 0x4FFF, data: data)
        let decoded = try #require(ChannelData.decode(bytes))
        #expect(decoded.channel == 0x4FFF && decoded.data == data)
        #expect(ChannelData.decode(Array(bytes.dropLast())) == nil)
        #expect(ChannelData.decode(Self.sampleRequest) == nil)
    }

    @Test func candidatePrioritiesFollowRFC8445TypePreferences() {
        let host = MediaTransport.priority(.host, localPreference: 65535)
        let loopback = MediaTransport.priority(.host, localPreference: 0)
        let reflexive = MediaTransport.priority(.serverReflexive, localPreference: 65535)
        let relayed = MediaTransport.priority(.relayed, localPreference: 65535)
        #expect(host == 126 << 24 | 65535 << 8 | 255)
        #expect(host > loopback && loopback > reflexive && reflexive > relayed)
        #expect(relayed == 65535 << 8 | 255)
    }
}
