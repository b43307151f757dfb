import FlitzProtocol
import FlitzWire
import Foundation

/// Encoded sizes, in bytes, of what a session setup puts on the wire, with PQXDH and as before it
/// (X3DH only), all from real encodings of `Handshake`'s keys and messages.
public struct HandshakeSizes: Sendable {
    /// One size with PQXDH and without (X3DH only).
    public struct Pair: Sendable {
        public let pqxdh: Int
        public let x3dh: Int
        public var difference: Int { pqxdh - x3dh }
    }

    /// `DeviceBundle` of one device (with a one-time X25519 prekey; with or without its `KEMPreKey`).
    public let deviceBundle: Pair
    /// The relay's answer to `FetchPreKeyBundle`: a whole `Frame` (request id 1) with a `PreKeyBundle`
    /// for a handle of `handle.utf8.count` bytes with one device.
    public let bundleFrame: Pair
    /// The first message: `SessionMessage` bytes of the prekey message (the envelope ciphertext).
    public let firstMessage: Pair
    /// The `Submit` frame (request id 1) carrying the first message as one envelope to the same handle.
    public let submitFrame: Pair
    /// One encoded `KEMPreKey` (as published in `PublishPreKeys`, at most 50 per frame).
    public let kemPreKey: Int
    /// The first message's plaintext (an encoded, padded `Content`).
    public let plaintext: Int
    /// The handle used in the frames.
    public let handle: String

    public init(_ handshake: Handshake, handle: String = "bob") {
        self.handle = handle
        let bundle = handshake.unverifiedBundle
        var kem = WireKEMPreKey()
        kem.id = bundle.kemPreKey!.id
        kem.publicKey = bundle.kemPreKey!.publicKey
        kem.signature = bundle.kemPreKey!.signature
        kem.lastResort = bundle.kemPreKey!.lastResort
        kemPreKey = try! kem.serializedData().count

        var device = WireDeviceBundle()
        device.deviceID = bundle.deviceID
        device.deviceIdentityKey = bundle.deviceIdentityKey
        device.deviceCertificateSignature = bundle.deviceCertificateSignature
        device.signedPrekey.id = bundle.signedPreKeyID
        device.signedPrekey.publicKey = bundle.signedPreKey
        device.signedPrekey.signature = bundle.signedPreKeySignature
        device.oneTimePrekey.id = bundle.oneTimePreKey!.id
        device.oneTimePrekey.publicKey = bundle.oneTimePreKey!.publicKey
        let classicDevice = device  // before PQXDH: no kem_prekey (field 6)
        device.kemPrekey = kem
        deviceBundle = Pair(pqxdh: try! device.serializedData().count, x3dh: try! classicDevice.serializedData().count)

        func encodedBundle(_ device: WireDeviceBundle) -> Int {
            var wire = WirePreKeyBundle()
            wire.handle = handle
            wire.accountIdentityKey = bundle.accountIdentityKey
            wire.devices = [device]
            return FrameCodec.encode(WireFrame(requestID: 1, body: .prekeyBundle(wire))).count
        }
        bundleFrame = Pair(pqxdh: encodedBundle(device), x3dh: encodedBundle(classicDevice))

        let pq = handshake.initiatePQXDH().message
        let classic = handshake.initiateX3DH().message
        firstMessage = Pair(pqxdh: pq.count, x3dh: classic.count)
        plaintext = handshake.firstPlaintext.count

        func encodedSubmit(_ ciphertext: Data) -> Int {
            var envelope = WireOutgoingEnvelope()
            envelope.envelopeID = Data(repeating: 0xAB, count: WireConstants.idLength)
            envelope.recipientHandle = handle
            envelope.recipientDeviceID = bundle.deviceID
            envelope.ciphertext = ciphertext
            var submit = WireSubmit()
            submit.envelopes = [envelope]
            return FrameCodec.encode(WireFrame(requestID: 1, body: .submit(submit))).count
        }
        submitFrame = Pair(pqxdh: encodedSubmit(pq), x3dh: encodedSubmit(classic))
    }

    /// The sizes as a Markdown table.
    public var markdown: String {
        func row(_ name: String, _ pair: Pair) -> String {
            let ratio = String(format: "%.1f", Double(pair.pqxdh) / Double(pair.x3dh))
            return "| \(name) | \(pair.x3dh) | \(pair.pqxdh) | +\(pair.difference) | \(ratio)× |"
        }
        return """
            | encoding | X3DH (bytes) | PQXDH (bytes) | difference | PQXDH ÷ X3DH |
            | --- | ---: | ---: | ---: | ---: |
            \(row("`DeviceBundle` (one device, with one-time X25519 prekey)", deviceBundle))
            \(row("`Frame` with `PreKeyBundle` (handle \"\(handle)\", one device)", bundleFrame))
            \(row("first message: `SessionMessage` with `PreKeyMessage` (\(plaintext)-byte `Content`)", firstMessage))
            \(row("`Frame` with `Submit` of that message (one envelope)", submitFrame))

            One `KEMPreKey` as published: \(kemPreKey) bytes.
            """
    }
}
