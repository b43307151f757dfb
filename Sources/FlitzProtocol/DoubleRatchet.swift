import FlitzCrypto
import Foundation

/// One skipped message key, stored until its message arrives or it is evicted.
struct SkippedMessageKey: Sendable {
    let ratchetKey: X25519PublicKey
    let counter: UInt32
    let messageKey: SecretBytes
}

/// The Double Ratchet (Signal Double Ratchet spec §3) with the parameters of `protocol/crypto.md`,
/// "Double Ratchet". A value type: `decrypt` works on a copy and commits it only on success, so a
/// failed decryption never changes the state.
///
/// Ratchet message layout: header (41 bytes) ‖ nonce (24 bytes) ‖ XChaCha20-Poly1305 ciphertext ‖ tag (16),
/// with AD = X3DH AD (128 bytes) ‖ header. Skipped message keys are bounded per chain, in number of
/// chains and in total (`RatchetLimits`; eviction order in `protocol/crypto.md`, "Limits").
public struct DoubleRatchet: Sendable {
    /// Smallest possible ratchet message: header, nonce and tag around an empty plaintext.
    public static let minimumMessageLength = RatchetHeader.encodedLength + XChaCha20Poly1305.nonceLength + XChaCha20Poly1305.tagLength

    let associatedData: Data
    private(set) var sendingRatchetKey: X25519PrivateKey
    private(set) var receivingRatchetKey: X25519PublicKey?
    private(set) var rootKey: SecretBytes
    private(set) var sendingChainKey: SecretBytes?
    private(set) var receivingChainKey: SecretBytes?
    private(set) var sendingCounter: UInt32 = 0
    private(set) var receivingCounter: UInt32 = 0
    private(set) var previousSendingCounter: UInt32 = 0
    private(set) var skippedKeys: [SkippedMessageKey] = []
    private(set) var previousReceivingKeys: [X25519PublicKey] = []

    /// The initiator ("Alice"): SK from X3DH and the responder's signed prekey as its first ratchet key.
    /// - Throws: `FlitzProtocolError.authenticationFailed` for a non-contributory ratchet key.
    public init(
        initiatorWith sharedSecret: SecretBytes, associatedData: Data, responderRatchetKey: X25519PublicKey,
        random: any RandomSource
    ) throws(FlitzProtocolError) {
        self.associatedData = associatedData
        sendingRatchetKey = X25519PrivateKey(random: random)
        receivingRatchetKey = responderRatchetKey
        let dh = try Self.dh(sendingRatchetKey, responderRatchetKey)
        (rootKey, sendingChainKey) = RatchetKDF.rootStep(rootKey: sharedSecret, dhOutput: dh)
    }

    /// The responder ("Bob"): SK from X3DH and its signed prekey pair as its first ratchet key.
    public init(responderWith sharedSecret: SecretBytes, associatedData: Data, ratchetKey: X25519PrivateKey) {
        self.associatedData = associatedData
        sendingRatchetKey = ratchetKey
        rootKey = sharedSecret
    }

    /// Whether this side can encrypt yet (a responder must first decrypt a message).
    public var canEncrypt: Bool { sendingChainKey != nil }

    /// Encrypts `plaintext` into a ratchet message with a random 24-byte nonce.
    /// - Throws: `FlitzProtocolError.noSendingChain` before a responder has received anything;
    ///   `.counterOverflow` after 2³²−1 messages in one chain.
    public mutating func encrypt(_ plaintext: Data, random: any RandomSource) throws(FlitzProtocolError) -> Data {
        guard let chainKey = sendingChainKey else { throw FlitzProtocolError(.noSendingChain) }
        guard sendingCounter < UInt32.max else { throw FlitzProtocolError(.counterOverflow) }
        let (nextChainKey, messageKey) = RatchetKDF.chainStep(chainKey: chainKey)
        let header = RatchetHeader(
            ratchetKey: sendingRatchetKey.publicKey, previousChainLength: previousSendingCounter, messageNumber: sendingCounter)
        let encodedHeader = header.encoded
        let nonce = random.bytes(XChaCha20Poly1305.nonceLength)
        let ciphertext = try! XChaCha20Poly1305.seal(
            plaintext, key: RatchetKDF.encryptionKey(messageKey: messageKey), nonce: nonce,
            authenticating: associatedData + encodedHeader)
        sendingChainKey = nextChainKey
        sendingCounter += 1
        return encodedHeader + nonce + ciphertext
    }

    /// Decrypts a ratchet message, in or out of order. On any error the state is exactly as before.
    /// - Throws: `FlitzProtocolError.malformedMessage` (truncated), `.unsupportedVersion`,
    ///   `.duplicateMessage` (key already used), `.tooManySkippedMessages` (more than `RatchetLimits.maxSkip`),
    ///   `.authenticationFailed` (tampered or not for this session).
    public mutating func decrypt(_ message: Data, random: any RandomSource) throws(FlitzProtocolError) -> Data {
        var next = self
        let plaintext = try next.decryptInPlace(Data(message), random: random)
        self = next
        return plaintext
    }

    private mutating func decryptInPlace(_ message: Data, random: any RandomSource) throws(FlitzProtocolError) -> Data {
        let header = try RatchetHeader(decoding: message)
        guard message.count >= Self.minimumMessageLength else {
            throw FlitzProtocolError(.malformedMessage, "ratchet message is \(message.count) bytes")
        }
        let encodedHeader = message.prefix(RatchetHeader.encodedLength)
        let nonce = message[RatchetHeader.encodedLength..<(RatchetHeader.encodedLength + XChaCha20Poly1305.nonceLength)]
        let ciphertext = message.suffix(from: RatchetHeader.encodedLength + XChaCha20Poly1305.nonceLength)

        if let index = skippedKeys.firstIndex(where: { $0.ratchetKey == header.ratchetKey && $0.counter == header.messageNumber }) {
            let plaintext = try open(ciphertext, messageKey: skippedKeys[index].messageKey, nonce: nonce, header: encodedHeader)
            skippedKeys.remove(at: index)
            return plaintext
        }
        if header.ratchetKey == receivingRatchetKey, header.messageNumber < receivingCounter {
            throw FlitzProtocolError(.duplicateMessage)
        }
        if previousReceivingKeys.contains(header.ratchetKey) {
            throw FlitzProtocolError(.duplicateMessage, "message key of an earlier chain is not stored")
        }
        if header.ratchetKey != receivingRatchetKey {
            try skipMessageKeys(until: header.previousChainLength)
            try ratchetStep(to: header.ratchetKey, random: random)
        }
        try skipMessageKeys(until: header.messageNumber)
        guard let chainKey = receivingChainKey else { throw FlitzProtocolError(.authenticationFailed) }
        let (nextChainKey, messageKey) = RatchetKDF.chainStep(chainKey: chainKey)
        let plaintext = try open(ciphertext, messageKey: messageKey, nonce: nonce, header: encodedHeader)
        receivingChainKey = nextChainKey
        receivingCounter = header.messageNumber &+ 1
        return plaintext
    }

    private func open(_ ciphertext: Data, messageKey: SecretBytes, nonce: Data, header: Data) throws(FlitzProtocolError) -> Data {
        do {
            return try XChaCha20Poly1305.open(
                ciphertext, key: RatchetKDF.encryptionKey(messageKey: messageKey), nonce: nonce,
                authenticating: associatedData + header)
        } catch {
            throw FlitzProtocolError(.authenticationFailed)
        }
    }

    private mutating func skipMessageKeys(until counter: UInt32) throws(FlitzProtocolError) {
        guard UInt64(counter) <= UInt64(receivingCounter) + UInt64(RatchetLimits.maxSkip) else {
            throw FlitzProtocolError(.tooManySkippedMessages, "would skip \(UInt64(counter) - UInt64(receivingCounter)) keys")
        }
        guard var chainKey = receivingChainKey, let ratchetKey = receivingRatchetKey, receivingCounter < counter else { return }
        while receivingCounter < counter {
            let (next, messageKey) = RatchetKDF.chainStep(chainKey: chainKey)
            skippedKeys.append(SkippedMessageKey(ratchetKey: ratchetKey, counter: receivingCounter, messageKey: messageKey))
            chainKey = next
            receivingCounter += 1
        }
        receivingChainKey = chainKey
        evictSkippedKeys()
    }

    /// Applies the three storage bounds, in this order (`protocol/crypto.md`, "Limits"): at most `maxSkip`
    /// keys per chain (a chain's oldest go first); keys of at most `maxChainsWithSkippedKeys` chains, ranked
    /// by their most recently stored key (all keys of the others go); at most `maxStoredSkippedKeys` in
    /// total (the oldest go). Runs only on the working copy of `decrypt`, so a forged message that fails
    /// later evicts nothing.
    private mutating func evictSkippedKeys() {
        var perChain: [X25519PublicKey: Int] = [:]
        var kept: [SkippedMessageKey] = []
        kept.reserveCapacity(skippedKeys.count)
        // Newest first, so each bound keeps the newest keys.
        for key in skippedKeys.reversed() {
            let stored = perChain[key.ratchetKey, default: 0]
            if stored == Int(RatchetLimits.maxSkip) { continue }
            if stored == 0, perChain.count == RatchetLimits.maxChainsWithSkippedKeys { continue }
            perChain[key.ratchetKey] = stored + 1
            kept.append(key)
        }
        kept.reverse()
        if kept.count > RatchetLimits.maxStoredSkippedKeys {
            kept.removeFirst(kept.count - RatchetLimits.maxStoredSkippedKeys)
        }
        skippedKeys = kept
    }

    private mutating func ratchetStep(to remoteKey: X25519PublicKey, random: any RandomSource) throws(FlitzProtocolError) {
        if let old = receivingRatchetKey {
            previousReceivingKeys.append(old)
            if previousReceivingKeys.count > RatchetLimits.maxPreviousReceivingKeys { previousReceivingKeys.removeFirst() }
        }
        previousSendingCounter = sendingCounter
        sendingCounter = 0
        receivingCounter = 0
        receivingRatchetKey = remoteKey
        (rootKey, receivingChainKey) = RatchetKDF.rootStep(rootKey: rootKey, dhOutput: try Self.dh(sendingRatchetKey, remoteKey))
        sendingRatchetKey = X25519PrivateKey(random: random)
        (rootKey, sendingChainKey) = RatchetKDF.rootStep(rootKey: rootKey, dhOutput: try Self.dh(sendingRatchetKey, remoteKey))
    }

    private static func dh(_ key: X25519PrivateKey, _ peer: X25519PublicKey) throws(FlitzProtocolError) -> SecretBytes {
        do { return try key.sharedSecret(with: peer) } catch { throw FlitzProtocolError(.authenticationFailed, "ratchet key agreement") }
    }
}

extension DoubleRatchet {
    /// The storage form (`protocol/flitz_session.proto`, `RatchetState`).
    var record: ProtoRatchetState {
        var state = ProtoRatchetState()
        state.sendingRatchetPrivateKey = sendingRatchetKey.secret.unsafeData
        state.receivingRatchetKey = receivingRatchetKey?.rawRepresentation ?? Data()
        state.rootKey = rootKey.unsafeData
        state.sendingChainKey = sendingChainKey?.unsafeData ?? Data()
        state.receivingChainKey = receivingChainKey?.unsafeData ?? Data()
        state.sendingCounter = sendingCounter
        state.receivingCounter = receivingCounter
        state.previousSendingCounter = previousSendingCounter
        state.skippedMessageKeys = skippedKeys.map {
            var key = ProtoSkippedMessageKey()
            key.ratchetKey = $0.ratchetKey.rawRepresentation
            key.counter = $0.counter
            key.messageKey = $0.messageKey.unsafeData
            return key
        }
        state.previousReceivingRatchetKeys = previousReceivingKeys.map(\.rawRepresentation)
        return state
    }

    /// Restores from storage.
    /// - Throws: `FlitzProtocolError.invalidSessionRecord` for wrong key sizes.
    init(record: ProtoRatchetState, associatedData: Data) throws(FlitzProtocolError) {
        func secret(_ data: Data) throws(FlitzProtocolError) -> SecretBytes {
            guard data.count == 32 else { throw FlitzProtocolError(.invalidSessionRecord, "key size") }
            return SecretBytes(data)
        }
        func optionalSecret(_ data: Data) throws(FlitzProtocolError) -> SecretBytes? {
            data.isEmpty ? nil : try secret(data)
        }
        do {
            self.associatedData = associatedData
            sendingRatchetKey = try X25519PrivateKey(rawRepresentation: try secret(record.sendingRatchetPrivateKey))
            receivingRatchetKey = record.receivingRatchetKey.isEmpty ? nil : try X25519PublicKey(rawRepresentation: record.receivingRatchetKey)
            rootKey = try secret(record.rootKey)
            sendingChainKey = try optionalSecret(record.sendingChainKey)
            receivingChainKey = try optionalSecret(record.receivingChainKey)
            sendingCounter = record.sendingCounter
            receivingCounter = record.receivingCounter
            previousSendingCounter = record.previousSendingCounter
            skippedKeys = try record.skippedMessageKeys.map { key throws(FlitzProtocolError) in
                guard let ratchetKey = try? X25519PublicKey(rawRepresentation: key.ratchetKey) else {
                    throw FlitzProtocolError(.invalidSessionRecord, "skipped key")
                }
                return SkippedMessageKey(ratchetKey: ratchetKey, counter: key.counter, messageKey: try secret(key.messageKey))
            }
            previousReceivingKeys = try record.previousReceivingRatchetKeys.map { try X25519PublicKey(rawRepresentation: $0) }
        } catch let error as FlitzProtocolError {
            throw error
        } catch {
            throw FlitzProtocolError(.invalidSessionRecord, "key size")
        }
    }
}
