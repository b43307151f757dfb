// The four benchmarks of FlitzCryptoBenchmarks as plain ContinuousClock loops, without the
// ordo-one/benchmark runner: each is run for `rounds` rounds of `n` operations, and the median
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
    print(String(format: "%-45@ median %9.2f µs/op   min %9.2f µs/op   (%d rounds × %d)", name as NSString, median, perOp[0], rounds, n))
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
