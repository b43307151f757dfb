// A plain loop over the "same chain" ratchet path, for profilers (perf, valgrind) that cannot follow
// the benchmark runner: `swift build -c release --product RatchetProfile` then
// `perf record -g .build/release/RatchetProfile [messages]`.
import FlitzCrypto
import FlitzProtocol
import Foundation

let count = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1])! : 2_000
let random = SeededRandom(label: "flitz-profile")
let aliceDevice = DeviceIdentity(account: AccountIdentity(random: random), random: random)
let bobAccount = AccountIdentity(random: random)
let bobDevice = DeviceIdentity(account: bobAccount, random: random)
let signedPreKey = SignedPreKeyPair(id: 1, device: bobDevice, random: random)
let bundle = try! UnverifiedPreKeyBundle(
    deviceID: 2, accountIdentityKey: bobAccount.publicKey.rawRepresentation,
    deviceIdentityKey: bobDevice.publicKey.rawRepresentation, deviceCertificateSignature: bobDevice.certificate.signature,
    signedPreKeyID: 1, signedPreKey: signedPreKey.privateKey.publicKey.rawRepresentation,
    signedPreKeySignature: signedPreKey.signature, oneTimePreKey: nil
).verified()
var alice = try! Session.initiate(identity: aliceDevice, bundle: bundle, random: random)
guard case .preKey(let first) = try! IncomingSessionMessage(parsing: try! alice.encrypt(Data("hello".utf8), random: random)) else { fatalError() }
var bob = try! Session.respond(to: first, identity: bobDevice, signedPreKey: signedPreKey, oneTimePreKey: nil, random: random).session
guard case .ratchet(let reply) = try! IncomingSessionMessage(parsing: try! bob.encrypt(Data("hi".utf8), random: random)) else { fatalError() }
_ = try! alice.decrypt(reply, random: random)
let plaintext = Data(count: 1024)
let clock = ContinuousClock()
let start = clock.now
for _ in 0..<count {
    let wire = try! alice.encrypt(plaintext, random: SystemRandom())
    guard case .ratchet(let body) = try! IncomingSessionMessage(parsing: wire) else { fatalError() }
    precondition(try! bob.decrypt(body, random: SystemRandom()).count == 1024)
}
print("\(count) messages, \((clock.now - start) / count) per message")
