import FlitzCrypto
import FlitzProtocol
import Foundation

/// A second, independent Double Ratchet written from `protocol/crypto.md` §4 on raw primitives and the
/// storage form `ProtoRatchetState`. The verifier replays each valid ratchet step with it and with
/// FlitzProtocol, so a vector is checked against the spec and not only against the code that made it.
struct ReferenceRatchet {
    var state: ProtoRatchetState
    let associatedData: Data

    static let rootInfo = Data("Flitz-Ratchet-v1".utf8)
    static let messageKeyInfo = Data("Flitz-MessageKey-v1".utf8)

    /// What one decryption derived, for comparing with the vector's intermediate values.
    struct DecryptTrace {
        var usedSkippedKey = false
        var dhRatchetStep: JSONValue = .null
        var newSkipped: [JSONValue] = []
        var chainKey: Data?
        var messageKey = Data()
        var encryptionKey = Data()
        var plaintext = Data()
    }

    /// What one encryption derived.
    struct EncryptTrace {
        var header = Data()
        var chainKey = Data()
        var messageKey = Data()
        var encryptionKey = Data()
        var ciphertext = Data()
        var message = Data()
    }

    static func encryptionKey(_ messageKey: Data) throws -> Data {
        try hkdf(salt: Data(count: 32), ikm: messageKey, info: messageKeyInfo, length: 32)
    }

    static func u32be(_ value: UInt32) -> Data { Data([UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]) }

    static func readU32be(_ bytes: Data) -> UInt32 { bytes.reduce(0) { $0 << 8 | UInt32($1) } }

    mutating func encrypt(_ plaintext: Data, nonce: Data) throws -> EncryptTrace {
        var trace = EncryptTrace()
        try require(!state.sendingChainKey.isEmpty, "reference: no sending chain")
        trace.chainKey = state.sendingChainKey
        trace.messageKey = hmac(state.sendingChainKey, 0x01)
        let publicKey = try X25519PrivateKey(rawRepresentation: SecretBytes(state.sendingRatchetPrivateKey)).publicKey.rawRepresentation
        trace.header = Data([1]) + publicKey + Self.u32be(state.previousSendingCounter) + Self.u32be(state.sendingCounter)
        trace.encryptionKey = try Self.encryptionKey(trace.messageKey)
        trace.ciphertext = try XChaCha20Poly1305.seal(
            plaintext, key: SecretBytes(trace.encryptionKey), nonce: nonce, authenticating: associatedData + trace.header)
        trace.message = trace.header + nonce + trace.ciphertext
        state.sendingChainKey = hmac(state.sendingChainKey, 0x02)
        state.sendingCounter += 1
        return trace
    }

    /// Decrypts a valid message; the vectors' failures are checked through FlitzProtocol only.
    mutating func decrypt(_ message: Data, random: [Data]) throws -> DecryptTrace {
        let message = Data(message)
        try require(message.count >= 81 && message[0] == 1, "reference: not a version-1 ratchet message")
        let header = Data(message.prefix(41))
        let ratchetKey = Data(message[1..<33])
        let previousChainLength = Self.readU32be(Data(message[33..<37]))
        let number = Self.readU32be(Data(message[37..<41]))
        let nonce = Data(message[41..<65])
        let ciphertext = Data(message[65...])
        var trace = DecryptTrace()

        if let index = state.skippedMessageKeys.firstIndex(where: { $0.ratchetKey == ratchetKey && $0.counter == number }) {
            trace.usedSkippedKey = true
            trace.messageKey = state.skippedMessageKeys[index].messageKey
            trace.encryptionKey = try Self.encryptionKey(trace.messageKey)
            trace.plaintext = try XChaCha20Poly1305.open(
                ciphertext, key: SecretBytes(trace.encryptionKey), nonce: nonce, authenticating: associatedData + header)
            state.skippedMessageKeys.remove(at: index)
            return trace
        }
        try require(!(ratchetKey == state.receivingRatchetKey && number < state.receivingCounter), "reference: duplicate")
        try require(!state.previousReceivingRatchetKeys.contains(ratchetKey), "reference: duplicate from an earlier chain")
        if ratchetKey != state.receivingRatchetKey {
            trace.newSkipped += try skip(until: previousChainLength)
            if !state.receivingRatchetKey.isEmpty {
                state.previousReceivingRatchetKeys.append(state.receivingRatchetKey)
                if state.previousReceivingRatchetKeys.count > 5 { state.previousReceivingRatchetKeys.removeFirst() }
            }
            state.previousSendingCounter = state.sendingCounter
            state.sendingCounter = 0
            state.receivingCounter = 0
            state.receivingRatchetKey = ratchetKey
            let receiveDH = try x25519(state.sendingRatchetPrivateKey, ratchetKey)
            let first = try hkdf(salt: state.rootKey, ikm: receiveDH, info: Self.rootInfo, length: 64)
            try require(random.count == 1 && random[0].count == 32, "reference: a DH ratchet step draws one 32-byte private key")
            let newPrivate = random[0]
            let sendDH = try x25519(newPrivate, ratchetKey)
            let second = try hkdf(salt: Data(first.prefix(32)), ikm: sendDH, info: Self.rootInfo, length: 64)
            state.receivingChainKey = Data(first.suffix(32))
            state.sendingRatchetPrivateKey = newPrivate
            state.rootKey = Data(second.prefix(32))
            state.sendingChainKey = Data(second.suffix(32))
            trace.dhRatchetStep = .object([
                "receiveDhOutput": .hex(receiveDH),
                "rootKeyAfterReceive": .hex(Data(first.prefix(32))),
                "receivingChainKey": .hex(Data(first.suffix(32))),
                "newRatchetPrivateKey": .hex(newPrivate),
                "newRatchetKey": .hex(try X25519PrivateKey(rawRepresentation: SecretBytes(newPrivate)).publicKey.rawRepresentation),
                "sendDhOutput": .hex(sendDH),
                "rootKey": .hex(state.rootKey),
                "sendingChainKey": .hex(state.sendingChainKey),
            ])
        }
        trace.newSkipped += try skip(until: number)
        try require(!state.receivingChainKey.isEmpty, "reference: no receiving chain")
        trace.chainKey = state.receivingChainKey
        trace.messageKey = hmac(state.receivingChainKey, 0x01)
        trace.encryptionKey = try Self.encryptionKey(trace.messageKey)
        trace.plaintext = try XChaCha20Poly1305.open(
            ciphertext, key: SecretBytes(trace.encryptionKey), nonce: nonce, authenticating: associatedData + header)
        state.receivingChainKey = hmac(state.receivingChainKey, 0x02)
        state.receivingCounter = number + 1
        return trace
    }

    private mutating func skip(until counter: UInt32) throws -> [JSONValue] {
        try require(UInt64(counter) <= UInt64(state.receivingCounter) + 1000, "reference: more than MAX_SKIP skipped")
        guard !state.receivingChainKey.isEmpty else { return [] }
        var added: [JSONValue] = []
        while state.receivingCounter < counter {
            var key = ProtoSkippedMessageKey()
            key.ratchetKey = state.receivingRatchetKey
            key.counter = state.receivingCounter
            key.messageKey = hmac(state.receivingChainKey, 0x01)
            state.skippedMessageKeys.append(key)
            added.append(.object(["ratchetKey": .hex(key.ratchetKey), "counter": .uint(key.counter), "messageKey": .hex(key.messageKey)]))
            state.receivingChainKey = hmac(state.receivingChainKey, 0x02)
            state.receivingCounter += 1
        }
        if state.skippedMessageKeys.count > 2000 { state.skippedMessageKeys.removeFirst(state.skippedMessageKeys.count - 2000) }
        return added
    }
}
