import FlitzCrypto
import FlitzProtocol
import Foundation

/// What the client does with an envelope's ciphertext once it parsed (`FlitzClient`, `accept`), run on
/// bob's fixture keys and session, with the invariants the session layer promises.
public enum ClientReceive {
    /// A ratchet message for an existing session: bob's session from the vectors tries it.
    /// - A failed decryption leaves the session exactly as it was (`DoubleRatchet.decrypt`'s promise).
    /// - A message that decrypted does not decrypt a second time (replay protection).
    public static func ratchetMessage(_ bytes: Data) {
        var session = Fixtures.shared.bobSession
        let before = session.serialized()
        let plaintext: Data
        do {
            plaintext = try session.decrypt(bytes, random: Fixtures.random())
        } catch {
            fuzzCheck(session.serialized() == before, "a failed decryption (\(error)) changed the session")
            return
        }
        let after = session.serialized()
        do {
            _ = try session.decrypt(bytes, random: Fixtures.random())
            fatalError("fuzz invariant violated: a ratchet message decrypted twice")
        } catch {
            fuzzCheck(session.serialized() == after, "a refused replay (\(error)) changed the session")
        }
        content(plaintext)
    }

    /// A prekey message: the client looks up the prekeys it names (here bob's), answers with
    /// `Session.respond`, then decodes the content.
    public static func preKeyMessage(_ message: IncomingPreKeyMessage) {
        fuzzCheck((try? message.certificate.verify()) != nil, "parsing accepted a certificate that does not verify")
        let fixtures = Fixtures.shared
        // The client refuses unknown prekey ids before any cryptography (`unknownPreKey`).
        guard message.signedPreKeyID == fixtures.bobSignedPreKey.id, message.kemPreKeyID == fixtures.bobKEMPreKey.id else { return }
        var oneTimePreKey: OneTimePreKeyPair?
        if let id = message.oneTimePreKeyID {
            guard id == fixtures.bobOneTimePreKey.id else { return }
            oneTimePreKey = fixtures.bobOneTimePreKey
        }
        let plaintext: Data
        do {
            (_, plaintext) = try Session.respond(
                to: message, identity: fixtures.bob, signedPreKey: fixtures.bobSignedPreKey, oneTimePreKey: oneTimePreKey,
                kemPreKey: fixtures.bobKEMPreKey, random: Fixtures.random())
        } catch {
            return
        }
        content(plaintext)
    }

    /// Decrypted bytes are decoded as `MessageContent`; what decodes re-encodes to the same content.
    public static func content(_ plaintext: Data) {
        guard let content = try? MessageContent(decoding: plaintext) else { return }
        checkContentRoundTrip(content)
    }

    /// The invariants of `MessageContent.encoded()`: padded to the block size (for bodies this version
    /// composes; an unsupported body is kept as the bytes that arrived), decodes to the same content.
    public static func checkContentRoundTrip(_ content: MessageContent) {
        fuzzCheck(content.messageID.count == 16, "accepted a message id of \(content.messageID.count) bytes")
        let encoded = content.encoded()
        if case .unsupported(let original) = content.body {
            fuzzCheck(encoded == original, "an unsupported body was not kept as it arrived")
        } else {
            fuzzCheck(encoded.count % ProtocolConstants.contentPaddingBlock == 0, "content of \(encoded.count) bytes is not padded")
        }
        let again: MessageContent
        do { again = try MessageContent(decoding: encoded) } catch {
            fatalError("fuzz invariant violated: re-encoded content does not decode: \(error)")
        }
        fuzzCheck(again == content, "content changed in an encode-decode round trip")
        fuzzCheck(again.encoded() == encoded, "content encoding is not stable")
    }
}
