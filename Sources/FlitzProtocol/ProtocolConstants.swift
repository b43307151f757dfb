import Foundation

/// Every constant of the session layer, version 1 (`protocol/crypto.md`, "Constants").
public enum ProtocolConstants {
    /// Version byte of the ratchet header and of `SessionMessage`.
    public static let version: UInt8 = 1
    /// HKDF info for the X3DH shared secret SK.
    public static let x3dhInfo = Data("Flitz-X3DH-v1".utf8)
    /// HKDF info for the PQXDH shared secret SK.
    public static let pqxdhInfo = Data("Flitz-PQXDH-v1".utf8)
    /// HKDF info for KDF_RK.
    public static let rootKDFInfo = Data("Flitz-Ratchet-v1".utf8)
    /// HKDF info deriving the XChaCha20-Poly1305 key from a message key.
    public static let messageKeyInfo = Data("Flitz-MessageKey-v1".utf8)
    /// X3DH input prefix F: 32 bytes of 0xFF (Signal X3DH §2.2 for X25519).
    public static let x3dhPrefix = Data(repeating: 0xFF, count: 32)
    /// X3DH and KDF_RK salt for SK: 32 zero bytes.
    public static let zeroSalt = Data(count: 32)
    /// KDF_CK input byte that yields the message key.
    public static let messageKeyConstant: UInt8 = 0x01
    /// KDF_CK input byte that yields the next chain key.
    public static let chainKeyConstant: UInt8 = 0x02
    /// Encoded `Content` is zero-padded to a multiple of this many bytes.
    public static let contentPaddingBlock = 64
}

/// Bounds on stored state, so a hostile peer cannot make a receiver do unbounded work or storage
/// (`protocol/crypto.md`, "Limits").
public enum RatchetLimits {
    /// MAX_SKIP: most message keys one incoming message may make the receiver skip in one receiving chain
    /// (`tooManySkippedMessages` beyond), and most skipped keys stored per chain (that chain's oldest are
    /// dropped beyond).
    public static let maxSkip: UInt32 = 1_000
    /// MAX_CHAINS: most receiving chains (ratchet public keys) with stored skipped keys; beyond it every key
    /// of the chain whose newest stored key is oldest is dropped.
    public static let maxChainsWithSkippedKeys = 5
    /// MAX_STORED: most skipped message keys stored per session; the oldest are dropped beyond it.
    public static let maxStoredSkippedKeys = 2_000
    /// MAX_PREVIOUS: how many previous receiving ratchet public keys are remembered to recognise duplicates.
    public static let maxPreviousReceivingKeys = 5
}
