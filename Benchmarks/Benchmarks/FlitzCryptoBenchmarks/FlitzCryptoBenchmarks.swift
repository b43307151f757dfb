import Benchmark
import BenchmarkSupport
import FlitzCrypto
import FlitzProtocol
import Foundation

// Every benchmark measures exactly one operation per iteration (scalingFactor .one), so
// the wall clock percentiles are per operation and throughput is operations per second.
//
// The runner calls a benchmark's closure once per iteration, and the whole closure is measured.
// So all keys, sessions and state are made once, here in `benchmarks`, and only captured by the
// closures; the closures contain nothing but the measured operation. (Making the keys inside the
// closure measured key generation, an Ed25519 identity setup and X3DH on every iteration.)

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput],
        // Nanoseconds: a 1 KiB seal takes about 1.5 µs, too close to 1 for whole microseconds.
        timeUnits: .nanoseconds,
        warmupIterations: 200,
        maxDuration: .seconds(5),
        maxIterations: 100_000
    )

    let plaintext = Data((0..<1024).map { UInt8(truncatingIfNeeded: $0) })

    // 1. Baseline: one raw X25519 scalar multiplication through the FlitzCrypto API
    //    (includes allocating the SecretBytes for the 32-byte result).
    let x25519Setup = SeededRandom(label: "flitz-bench x25519")
    let a = X25519PrivateKey(random: x25519Setup)
    let b = X25519PrivateKey(random: x25519Setup)
    Benchmark("X25519 shared secret") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! a.sharedSecret(with: b.publicKey))
        }
    }

    // 2. Baseline: one raw XChaCha20-Poly1305 seal of 1024 bytes. The 169-byte AD is the length the
    //    ratchet authenticates (128-byte X3DH AD + 41-byte header). A fixed nonce is fine for timing only.
    let aeadSetup = SeededRandom(label: "flitz-bench aead")
    let key = SecretBytes(aeadSetup.bytes(XChaCha20Poly1305.keyLength))
    let nonce = aeadSetup.bytes(XChaCha20Poly1305.nonceLength)
    let ad = aeadSetup.bytes(169)
    Benchmark("XChaCha20-Poly1305 seal 1 KiB") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! XChaCha20Poly1305.seal(plaintext, key: key, nonce: nonce, authenticating: ad))
        }
    }

    // 3. One message per iteration, always alice → bob. Alice's sending chain and bob's receiving
    //    chain just advance (one KDF chain step each); no DH ratchet step happens on either side.
    //    Measured: Session.encrypt (chain step, seal, SessionMessage protobuf encoding) +
    //    IncomingSessionMessage(parsing:) + Session.decrypt (chain step, open).
    var sameChain = SessionPair.established()
    sameChain.checkSameChain(plaintext)
    var sameChainAlice = sameChain.alice, sameChainBob = sameChain.bob
    Benchmark("Ratchet encrypt+decrypt 1 KiB, same chain") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(SessionPair.deliver(plaintext, from: &sameChainAlice, to: &sameChainBob))
        }
    }

    // 4. One message per iteration, direction alternating (ping-pong): alice → bob, then bob → alice,
    //    and so on. Every message carries a new ratchet key, so every decrypt performs a DH ratchet step
    //    (two X25519 agreements, one X25519 key generation, two root KDF steps) before the chain step.
    //    Each iteration is therefore exactly one encrypt + one decrypt-with-DH-step: the per-iteration
    //    time is already per message, no division needed. The state carries over between iterations
    //    (and from warmup), so the alternation never breaks.
    var pingPong = SessionPair.established()
    pingPong.checkDHStepEveryMessage(plaintext)
    var pingPongAlice = pingPong.alice, pingPongBob = pingPong.bob
    var aliceSends = true
    Benchmark("Ratchet encrypt+decrypt 1 KiB, with DH step") { benchmark in
        for _ in benchmark.scaledIterations {
            if aliceSends {
                blackHole(SessionPair.deliver(plaintext, from: &pingPongAlice, to: &pingPongBob))
            } else {
                blackHole(SessionPair.deliver(plaintext, from: &pingPongBob, to: &pingPongAlice))
            }
            aliceSends.toggle()
        }
    }
}
