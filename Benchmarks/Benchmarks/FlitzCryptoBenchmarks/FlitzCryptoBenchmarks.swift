import Benchmark
import BenchmarkSupport
import Crypto
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
        // Nanoseconds: a 1 KiB seal takes about 1.5 µs, too close to 1 for whole microseconds. The same
        // unit for every benchmark, so that the printed medians divide directly.
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

    // 2b. Baseline: one Ed25519 signature check (libsodium crypto_sign_verify_detached) over a 32-byte
    //     message: the signed prekey signature, as `verified()` checks it.
    let handshake = Handshake()
    handshake.check()
    let signedPreKeyBytes = handshake.unverifiedBundle.signedPreKey
    let signedPreKeySignature = handshake.unverifiedBundle.signedPreKeySignature
    let bobDeviceKey = handshake.bob.publicKey
    precondition(bobDeviceKey.isValidSignature(signedPreKeySignature, for: signedPreKeyBytes))
    Benchmark("Ed25519 verify (32-byte message)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(bobDeviceKey.isValidSignature(signedPreKeySignature, for: signedPreKeyBytes))
        }
    }

    // 2c. Baselines: ML-KEM-1024 (swift-crypto, BoringSSL) through the FlitzCrypto API the protocol uses.
    //     KEMPrivateKey(random:) = 64 bytes of SystemRandom + key derivation from the seed + parsing the
    //     public key (FIPS 203 modulus check). encapsulate() parses the 1568-byte public key on every
    //     call (the type keeps raw bytes). decapsulate(_:) derives the whole private key from the 64-byte
    //     seed on every call (the type keeps only the seed), then decapsulates.
    let kemPrivate = handshake.kemPreKey.privateKey
    let kemPublic = kemPrivate.publicKey
    let kemCiphertext = handshake.kemCiphertext
    Benchmark("ML-KEM-1024 keygen, KEMPrivateKey(random:)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(KEMPrivateKey(random: SystemRandom()))
        }
    }
    Benchmark("ML-KEM-1024 encapsulate, KEMPublicKey.encapsulate()") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! kemPublic.encapsulate())
        }
    }
    Benchmark("ML-KEM-1024 decapsulate, KEMPrivateKey.decapsulate") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! kemPrivate.decapsulate(kemCiphertext))
        }
    }

    // 2d. The same two operations on swift-crypto keys made once, outside the measurement: the cost of
    //     the primitive alone, without FlitzCrypto's per-call parsing / derivation from the seed.
    let rawKEMPublic = try! MLKEM1024.PublicKey(rawRepresentation: kemPublic.rawRepresentation)
    let rawKEMPrivate = try! kemPrivate.seed.withUnsafeBytes { try MLKEM1024.PrivateKey(seedRepresentation: $0, publicKey: nil) }
    Benchmark("ML-KEM-1024 encapsulate, swift-crypto key parsed once") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! rawKEMPublic.encapsulate())
        }
    }
    Benchmark("ML-KEM-1024 decapsulate, swift-crypto key derived once") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! rawKEMPrivate.decapsulate(kemCiphertext))
        }
    }

    // 2e. Key agreement alone, from a verified bundle and a fixed EK_A (no key generation, no ratchet,
    //     no parsing). X3DH: the Ed25519 → X25519 conversion of both identity keys, four X25519 agreements
    //     (with a one-time prekey), HKDF. PQXDH: the same X3DH, plus a fresh ML-KEM-1024 encapsulation
    //     (initiator) or a decapsulation of a real ciphertext (responder), plus a second HKDF with SS.
    let alice = handshake.alice, bob = handshake.bob
    let bundle = handshake.bundle
    let ephemeralKey = handshake.ephemeralKey, baseKey = handshake.ephemeralKey.publicKey
    let signedPreKey = handshake.signedPreKey, oneTimePreKey = handshake.oneTimePreKey, kemPreKey = handshake.kemPreKey
    let aliceCertificate = alice.certificate
    Benchmark("X3DH initiate") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! X3DH.initiate(identity: alice, ephemeralKey: ephemeralKey, bundle: bundle))
        }
    }
    Benchmark("X3DH respond") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(
                try! X3DH.respond(
                    identity: bob, signedPreKey: signedPreKey, oneTimePreKey: oneTimePreKey,
                    initiatorCertificate: aliceCertificate, baseKey: baseKey))
        }
    }
    Benchmark("PQXDH initiate") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! PQXDH.initiate(identity: alice, ephemeralKey: ephemeralKey, bundle: bundle))
        }
    }
    Benchmark("PQXDH respond") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(
                try! PQXDH.respond(
                    identity: bob, signedPreKey: signedPreKey, oneTimePreKey: oneTimePreKey, kemPreKey: kemPreKey,
                    kemCiphertext: kemCiphertext, initiatorCertificate: aliceCertificate, baseKey: baseKey))
        }
    }

    // 2f. Bob's bundle checked as a client does after fetching it: key sizes, device certificate, signed
    //     prekey signature (32 bytes), KEM prekey signature (1591 bytes), KEM public key modulus check.
    let unverifiedBundle = handshake.unverifiedBundle
    Benchmark("Prekey bundle verified() (PQXDH)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! unverifiedBundle.verified())
        }
    }

    // 2g. Full session setup, each side separately (see Handshake).
    //     Initiator: verified() + Session.initiate (EK_A, PQXDH with a fresh encapsulation, ratchet start)
    //     + the first encrypt (prekey message of a 64-byte Content).
    //     Responder: IncomingSessionMessage(parsing:) (protobuf, certificate) + Session.respond (PQXDH with
    //     decapsulation, ratchet start, first decrypt with its DH ratchet step). It answers the same
    //     message on every iteration: the prekeys are not consumed by Session.respond (the caller deletes them).
    //     The "X3DH only" pair is the same setup as before PQXDH, rebuilt from public pieces (Handshake).
    let firstPQXDHMessage = handshake.initiatePQXDH().message
    let firstX3DHMessage = handshake.initiateX3DH().message
    Benchmark("Session setup initiator, PQXDH") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(handshake.initiatePQXDH())
        }
    }
    Benchmark("Session setup responder, PQXDH") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(handshake.respondPQXDH(to: firstPQXDHMessage))
        }
    }
    Benchmark("Session setup initiator, X3DH only (rebuilt)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(handshake.initiateX3DH())
        }
    }
    Benchmark("Session setup responder, X3DH only (rebuilt)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(handshake.respondX3DH(to: firstX3DHMessage))
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
