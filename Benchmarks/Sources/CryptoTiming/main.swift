// Benchmarks of FlitzCryptoBenchmarks (the baselines, the ratchet, the key agreements and the session
// setups) as plain ContinuousClock loops, without the ordo-one/benchmark runner: each is run for `rounds` rounds of `n` operations, and the median
// (and minimum) over rounds of (round time / n) is printed in µs per operation.
// `swift build -c release --product CryptoTiming && .build/release/CryptoTiming [rounds]`.
// Also a target for profilers: `perf record -g .build/release/CryptoTiming`.
import BenchmarkSupport
import FlitzCrypto
import FlitzProtocol
import Foundation

@inline(never) func consume<T>(_ value: T) { withExtendedLifetime(value) {} }

let rounds = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1])! : 21
let clock = ContinuousClock()

func measure(_ name: String, n: Int, _ body: () -> Void) -> Double {
    for _ in 0..<(n / 10 + 1) { body() }  // warmup
    var perOp: [Double] = []
    for _ in 0..<rounds {
        let start = clock.now
        for _ in 0..<n { body() }
        let d = clock.now - start
        perOp.append((Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12) / Double(n))
    }
    perOp.sort()
    let median = perOp[perOp.count / 2]
    print(String(format: "%-52@ median %9.2f µs/op   min %9.2f µs/op   (%d rounds × %d)", name as NSString, median, perOp[0], rounds, n))
    return median
}

let plaintext = Data((0..<1024).map { UInt8(truncatingIfNeeded: $0) })
let setup = SeededRandom(label: "flitz-timing")
let a = X25519PrivateKey(random: setup), b = X25519PrivateKey(random: setup)
let x = measure("X25519 shared secret", n: 2_000) { consume(try! a.sharedSecret(with: b.publicKey)) }
let key = SecretBytes(setup.bytes(32)), nonce = setup.bytes(24), ad = setup.bytes(169)
let s = measure("XChaCha20-Poly1305 seal 1 KiB", n: 20_000) {
    consume(try! XChaCha20Poly1305.seal(plaintext, key: key, nonce: nonce, authenticating: ad))
}
// Separate variables for the two sides: two inout accesses to one global tuple would overlap.
let first = SessionPair.established()
var (alice1, bob1) = (first.alice, first.bob)
_ = SessionPair.deliver(plaintext, from: &alice1, to: &bob1)  // Bob's one DH step; the rest stay in one chain
let c = measure("Ratchet encrypt+decrypt 1 KiB, same chain", n: 2_000) { consume(SessionPair.deliver(plaintext, from: &alice1, to: &bob1)) }
let second = SessionPair.established()
var (alice2, bob2) = (second.alice, second.bob)
var aliceSends = true
let d = measure("Ratchet encrypt+decrypt 1 KiB, with DH step", n: 1_000) {
    if aliceSends {
        consume(SessionPair.deliver(plaintext, from: &alice2, to: &bob2))
    } else {
        consume(SessionPair.deliver(plaintext, from: &bob2, to: &alice2))
    }
    aliceSends.toggle()
}
print(String(format: "ratios: same chain = %.1f× seal, %.2f× X25519; DH step = %.1f× seal, %.2f× X25519; DH step / same chain = %.2f×", c / s, c / x, d / s, d / x, d / c))

// Key agreement and session setup, from the same Handshake as the benchmarks.
let handshake = Handshake()
handshake.check()
let vk = handshake.bob.publicKey, spkBytes = handshake.unverifiedBundle.signedPreKey, spkSig = handshake.unverifiedBundle.signedPreKeySignature
_ = measure("Ed25519 verify (32-byte message)", n: 2_000) { consume(vk.isValidSignature(spkSig, for: spkBytes)) }
// Not in the benchmarks: the two identity key conversions each X3DH side makes, to explain X3DH's cost
// beyond its four X25519 agreements.
let aliceIdentity = handshake.alice.privateKey
_ = measure("Ed25519 → X25519 private key (+ its public key)", n: 2_000) { consume(aliceIdentity.x25519PrivateKey()) }
_ = measure("Ed25519 → X25519 public key", n: 2_000) { consume(try! vk.x25519PublicKey()) }
let kemPrivate = handshake.kemPreKey.privateKey
_ = measure("ML-KEM-1024 keygen, KEMPrivateKey(random:)", n: 1_000) { consume(KEMPrivateKey(random: SystemRandom())) }
_ = measure("ML-KEM-1024 encapsulate, KEMPublicKey.encapsulate()", n: 1_000) { consume(try! kemPrivate.publicKey.encapsulate()) }
_ = measure("ML-KEM-1024 decapsulate, KEMPrivateKey.decapsulate", n: 1_000) { consume(try! kemPrivate.decapsulate(handshake.kemCiphertext)) }
let xi = measure("X3DH initiate", n: 500) {
    consume(try! X3DH.initiate(identity: handshake.alice, ephemeralKey: handshake.ephemeralKey, bundle: handshake.bundle))
}
let xr = measure("X3DH respond", n: 500) {
    consume(try! X3DH.respond(
        identity: handshake.bob, signedPreKey: handshake.signedPreKey, oneTimePreKey: handshake.oneTimePreKey,
        initiatorCertificate: handshake.alice.certificate, baseKey: handshake.ephemeralKey.publicKey))
}
let pi = measure("PQXDH initiate", n: 500) {
    consume(try! PQXDH.initiate(identity: handshake.alice, ephemeralKey: handshake.ephemeralKey, bundle: handshake.bundle))
}
let pr = measure("PQXDH respond", n: 500) {
    consume(try! PQXDH.respond(
        identity: handshake.bob, signedPreKey: handshake.signedPreKey, oneTimePreKey: handshake.oneTimePreKey,
        kemPreKey: handshake.kemPreKey, kemCiphertext: handshake.kemCiphertext,
        initiatorCertificate: handshake.alice.certificate, baseKey: handshake.ephemeralKey.publicKey))
}
let pqMessage = handshake.initiatePQXDH().message, x3dhMessage = handshake.initiateX3DH().message
let spi = measure("Session setup initiator, PQXDH", n: 300) { consume(handshake.initiatePQXDH()) }
let spr = measure("Session setup responder, PQXDH", n: 300) { consume(handshake.respondPQXDH(to: pqMessage)) }
let sxi = measure("Session setup initiator, X3DH only (rebuilt)", n: 300) { consume(handshake.initiateX3DH()) }
let sxr = measure("Session setup responder, X3DH only (rebuilt)", n: 300) { consume(handshake.respondX3DH(to: x3dhMessage)) }
print(String(format: "ratios PQXDH / X3DH: agreement initiator %.2f×, responder %.2f×; session setup initiator %.2f×, responder %.2f×",
    pi / xi, pr / xr, spi / sxi, spr / sxr))
