import FlitzCrypto
import FlitzProtocol
import Foundation
import SwiftProtobuf

/// The repository's `vectors/` directory, found by walking up from this source file (the fuzzers run
/// on the machine that built them, like the tests).
public let vectorsDirectory: URL = {
    var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    while !FileManager.default.fileExists(atPath: url.appendingPathComponent("vectors/ratchet.json").path) {
        let parent = url.deletingLastPathComponent()
        guard parent.path != url.path else { fatalError("no vectors/ratchet.json above \(#filePath)") }
        url = parent
    }
    return url.appendingPathComponent("vectors")
}()

/// Reads `vectors/<name>` as a JSON object.
public func loadVectorFile(_ name: String) -> [String: Any] {
    let url = vectorsDirectory.appendingPathComponent(name)
    guard let data = try? Data(contentsOf: url),
        let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    else { fatalError("cannot read \(url.path) as a JSON object") }
    return object
}

/// Typed access into vector JSON; a missing or mistyped field is a broken fixture, so it traps with the path.
public struct VectorJSON: @unchecked Sendable {
    /// The wrapped JSON value (dictionary, array, string or number).
    public let value: Any
    private let path: String

    /// Wraps a parsed JSON value.
    public init(_ value: Any, path: String = "$") {
        self.value = value
        self.path = path
    }

    /// The member `key` of an object.
    public subscript(_ key: String) -> VectorJSON {
        guard let object = value as? [String: Any], let member = object[key] else { fatalError("vector field \(path).\(key) is missing") }
        return VectorJSON(member, path: "\(path).\(key)")
    }

    /// Whether an object has the member `key` with a non-null value.
    public func has(_ key: String) -> Bool {
        guard let object = value as? [String: Any], let member = object[key] else { return false }
        return !(member is NSNull)
    }

    /// The elements of an array.
    public var array: [VectorJSON] {
        guard let array = value as? [Any] else { fatalError("vector field \(path) is not an array") }
        return array.enumerated().map { VectorJSON($1, path: "\(path)[\($0)]") }
    }

    /// A string value.
    public var string: String {
        guard let string = value as? String else { fatalError("vector field \(path) is not a string") }
        return string
    }

    /// A hex string value as bytes.
    public var bytes: Data {
        guard let data = Data(hexString: string) else { fatalError("vector field \(path) is not hex") }
        return data
    }

    /// An unsigned 32-bit number.
    public var uint32: UInt32 {
        guard let number = value as? NSNumber, let result = UInt32(exactly: number.int64Value) else {
            fatalError("vector field \(path) is not a UInt32")
        }
        return result
    }

    /// A boolean value.
    public var bool: Bool {
        guard let number = value as? NSNumber else { fatalError("vector field \(path) is not a boolean") }
        return number.boolValue
    }

    /// A signed 64-bit number.
    public var int64: Int64 {
        guard let number = value as? NSNumber else { fatalError("vector field \(path) is not a number") }
        return number.int64Value
    }
}

/// Keys and one session state from `vectors/ratchet.json`, so that seeds taken from the vectors decrypt in
/// the fuzzers and mutations of them reach the code behind each check.
public struct Fixtures: Sendable {
    /// alice, the initiator, as a device identity.
    public let alice: DeviceIdentity
    /// bob's account identity (it certifies bob's device).
    public let bobAccount: AccountIdentity
    /// bob, the responder, as a device identity.
    public let bob: DeviceIdentity
    /// bob's signed prekey (id 1).
    public let bobSignedPreKey: SignedPreKeyPair
    /// bob's one-time prekey (id 100).
    public let bobOneTimePreKey: OneTimePreKeyPair
    /// bob's one-time ML-KEM-1024 prekey (id 200).
    public let bobKEMPreKey: KEMPreKeyPair
    /// bob's session at his first receive event that left a skipped message key (alice's a2 before a1), so
    /// that alice's other messages from the vector decrypt in it, one of them with the stored key.
    public let bobSession: Session

    /// Loaded once per process.
    public static let shared = Fixtures(VectorJSON(loadVectorFile("ratchet.json")))

    init(_ vector: VectorJSON) {
        // The conversation group holds the parties and, per step, the whole SessionRecord (vectors/README.md).
        guard let group = vector["testGroups"].array.first(where: { $0["type"].string == "conversation" }) else {
            fatalError("ratchet.json has no conversation group")
        }
        func account(_ party: VectorJSON) -> AccountIdentity {
            guard let account = try? AccountIdentity(seed: SecretBytes(party["accountIdentitySeed"].bytes)) else {
                fatalError("bad account seed in ratchet.json")
            }
            return account
        }
        func device(_ party: VectorJSON) -> DeviceIdentity {
            guard let key = try? Ed25519PrivateKey(seed: SecretBytes(party["deviceIdentitySeed"].bytes)),
                let device = try? DeviceIdentity(privateKey: key, certificate: account(party).certify(key.publicKey))
            else { fatalError("bad device seed in ratchet.json") }
            return device
        }
        alice = device(group["alice"])
        bobAccount = account(group["bob"])
        bob = device(group["bob"])
        let signed = group["bob"]["signedPreKey"], oneTime = group["bob"]["oneTimePreKey"], kem = group["bob"]["kemPreKey"]
        guard let signedKey = try? X25519PrivateKey(rawRepresentation: SecretBytes(signed["privateKey"].bytes)),
            let oneTimeKey = try? X25519PrivateKey(rawRepresentation: SecretBytes(oneTime["privateKey"].bytes)),
            let kemKey = try? KEMPrivateKey(seed: SecretBytes(kem["seed"].bytes))
        else { fatalError("bad prekeys in ratchet.json") }
        bobSignedPreKey = SignedPreKeyPair(id: signed["id"].uint32, privateKey: signedKey, signature: signed["signature"].bytes)
        bobOneTimePreKey = OneTimePreKeyPair(id: oneTime["id"].uint32, privateKey: oneTimeKey)
        bobKEMPreKey = KEMPreKeyPair(id: kem["id"].uint32, kind: .oneTime, privateKey: kemKey, signature: kem["signature"].bytes)

        // bob's first decrypt step that left a skipped key: its stored record, restored (every size checked).
        guard let step = group["tests"].array.first(where: {
            $0["party"].string == "bob" && $0["action"].string == "decrypt" && !$0["stateAfter"]["ratchet"]["skippedMessageKeys"].array.isEmpty
        }), let session = try? Session(serialized: step["stateAfter"]["sessionRecord"].bytes)
        else { fatalError("ratchet.json has no bob step with a skipped key, or its record does not restore") }
        bobSession = session
    }

    /// A fresh deterministic random source, so that one input always takes the same path (a DH ratchet
    /// step draws a new key pair).
    public static func random() -> any RandomSource { SeededRandom(label: "flitz-fuzz") }
}
