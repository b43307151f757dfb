import FlitzCrypto
import FlitzProtocol
import Foundation
import Testing

@Suite struct DoubleRatchetTests {
    @Test func inOrder() throws {
        var pair = try SessionPair("ratchet/in-order")
        let messages = try (1...5).map { try pair.fromAlice("m\($0)") }
        for (index, message) in messages.enumerated() {
            #expect(try pair.bobDecrypts(message) == "m\(index + 1)")
        }
        #expect(pair.bob.ratchetState.skippedMessageKeys.isEmpty)
        #expect(pair.bob.ratchetState.receivingCounter == 6)
    }

    @Test func outOfOrderWithinAChain() throws {
        var pair = try SessionPair("ratchet/out-of-order")
        let messages = try (0..<5).map { try pair.fromAlice("m\($0)") }
        #expect(try pair.bobDecrypts(messages[4]) == "m4")
        #expect(pair.bob.ratchetState.skippedMessageKeys.map(\.counter) == [1, 2, 3, 4])
        #expect(try pair.bobDecrypts(messages[0]) == "m0")
        #expect(try pair.bobDecrypts(messages[3]) == "m3")
        #expect(try pair.bobDecrypts(messages[1]) == "m1")
        #expect(try pair.bobDecrypts(messages[2]) == "m2")
        #expect(pair.bob.ratchetState.skippedMessageKeys.isEmpty)
    }

    @Test func outOfOrderAcrossRatchetSteps() throws {
        var pair = try SessionPair("ratchet/across-steps")
        let oldChain = try (0..<3).map { try pair.fromAlice("old\($0)") }
        #expect(try pair.aliceDecrypts(pair.fromBob("reply")) == "reply")
        let newChain = try (0..<2).map { try pair.fromAlice("new\($0)") }
        #expect(try RatchetHeader(decoding: newChain[0]).ratchetKey != RatchetHeader(decoding: oldChain[0]).ratchetKey)
        #expect(try RatchetHeader(decoding: newChain[1]).previousChainLength == 4)  // "first" + old0...old2
        // New chain first: bob stores the old chain's remaining keys (PN) and skips new0.
        #expect(try pair.bobDecrypts(newChain[1]) == "new1")
        #expect(pair.bob.ratchetState.skippedMessageKeys.count == 4)
        #expect(try pair.bobDecrypts(oldChain[2]) == "old2")
        #expect(try pair.bobDecrypts(newChain[0]) == "new0")
        #expect(try pair.bobDecrypts(oldChain[0]) == "old0")
        #expect(try pair.bobDecrypts(oldChain[1]) == "old1")
        #expect(pair.bob.ratchetState.skippedMessageKeys.isEmpty)
    }

    @Test func pingPongChangesRatchetKeyEveryTurn() throws {
        var pair = try SessionPair("ratchet/ping-pong")
        var seenKeys: Set<Data> = []
        for round in 0..<20 {
            let fromBob = try pair.fromBob("b\(round)")
            #expect(seenKeys.insert(try RatchetHeader(decoding: fromBob).ratchetKey.rawRepresentation).inserted)
            #expect(try pair.aliceDecrypts(fromBob) == "b\(round)")
            let fromAlice = try pair.fromAlice("a\(round)")
            #expect(seenKeys.insert(try RatchetHeader(decoding: fromAlice).ratchetKey.rawRepresentation).inserted)
            #expect(try RatchetHeader(decoding: fromAlice).messageNumber == 0)
            #expect(try pair.bobDecrypts(fromAlice) == "a\(round)")
        }
        #expect(!pair.alice.isAwaitingReply)
        #expect(pair.bob.ratchetState.previousReceivingRatchetKeys.count == RatchetLimits.maxPreviousReceivingKeys)
    }

    @Test func longOneWayBurst() throws {
        var pair = try SessionPair("ratchet/burst")
        let messages = try (0..<500).map { try pair.fromAlice("burst \($0)") }
        #expect(try RatchetHeader(decoding: messages[499]).messageNumber == 500)
        // Deliver the second half in reverse, then the first half in order.
        for index in (250..<500).reversed() {
            #expect(try pair.bobDecrypts(messages[index]) == "burst \(index)")
        }
        #expect(pair.bob.ratchetState.skippedMessageKeys.count == 250)
        for index in 0..<250 {
            #expect(try pair.bobDecrypts(messages[index]) == "burst \(index)")
        }
        #expect(pair.bob.ratchetState.skippedMessageKeys.isEmpty)
    }

    /// Byte offsets in a ratchet message: header ratchet key, header PN, header N, nonce, ciphertext, tag.
    @Test(arguments: [1, 36, 40, 41, 64, 65, -1])
    func tamperedMessageFailsAndLeavesStateUnchanged(_ offset: Int) throws {
        var pair = try SessionPair("ratchet/tamper")
        _ = try pair.fromAlice("skipped")
        let genuine = try pair.fromAlice("genuine")
        var tampered = genuine
        tampered[offset >= 0 ? offset : tampered.count - 1] ^= 0x01
        let before = pair.bob.serialized()
        expectProtocolError(.authenticationFailed) { try pair.bobDecrypts(tampered) }
        #expect(pair.bob.serialized() == before)
        #expect(try pair.bobDecrypts(genuine) == "genuine")
    }

    @Test func messageFromAnotherSessionFails() throws {
        var pair = try SessionPair("ratchet/other-a")
        var other = try SessionPair("ratchet/other-b")
        let foreign = try other.fromAlice("not yours")
        let before = pair.bob.serialized()
        expectProtocolError(.authenticationFailed) { try pair.bobDecrypts(foreign) }
        #expect(pair.bob.serialized() == before)
    }

    @Test func replayedMessageIsDuplicateAndLeavesStateUnchanged() throws {
        var pair = try SessionPair("ratchet/replay")
        let message = try pair.fromAlice("once")
        #expect(try pair.bobDecrypts(message) == "once")
        let before = pair.bob.serialized()
        expectProtocolError(.duplicateMessage) { try pair.bobDecrypts(message) }
        #expect(pair.bob.serialized() == before)
    }

    @Test func replayedOutOfOrderMessageIsDuplicate() throws {
        var pair = try SessionPair("ratchet/replay-skipped")
        let first = try pair.fromAlice("one")
        let second = try pair.fromAlice("two")
        #expect(try pair.bobDecrypts(second) == "two")
        #expect(try pair.bobDecrypts(first) == "one")
        let before = pair.bob.serialized()
        expectProtocolError(.duplicateMessage) { try pair.bobDecrypts(first) }
        expectProtocolError(.duplicateMessage) { try pair.bobDecrypts(second) }
        #expect(pair.bob.serialized() == before)
    }

    @Test func replayFromAnEarlierChainIsDuplicate() throws {
        var pair = try SessionPair("ratchet/replay-old-chain")
        let old = try pair.fromAlice("old")
        #expect(try pair.bobDecrypts(old) == "old")
        #expect(try pair.aliceDecrypts(pair.fromBob("reply")) == "reply")
        #expect(try pair.bobDecrypts(pair.fromAlice("new")) == "new")
        let before = pair.bob.serialized()
        expectProtocolError(.duplicateMessage) { try pair.bobDecrypts(old) }
        #expect(pair.bob.serialized() == before)
    }

    @Test(arguments: [0, 1, 40, 41, 80])
    func truncatedMessageIsMalformed(_ length: Int) throws {
        var pair = try SessionPair("ratchet/truncated")
        let message = try pair.fromAlice("")
        #expect(message.count == 81)
        #expect(DoubleRatchet.minimumMessageLength == 81)
        let before = pair.bob.serialized()
        expectProtocolError(.malformedMessage) { try pair.bobDecrypts(message.prefix(length)) }
        #expect(pair.bob.serialized() == before)
        #expect(try pair.bobDecrypts(message) == "")
    }

    @Test(arguments: [UInt8(0), 2, 0xff])
    func wrongVersionByteIsUnsupported(_ version: UInt8) throws {
        var pair = try SessionPair("ratchet/version")
        var message = try pair.fromAlice("v")
        #expect(message[0] == 1)
        message[0] = version
        let before = pair.bob.serialized()
        expectProtocolError(.unsupportedVersion) { try pair.bobDecrypts(message) }
        #expect(pair.bob.serialized() == before)
    }

    @Test func maxSkipIsEnforcedAtTheBoundary() throws {
        var pair = try SessionPair("ratchet/max-skip")
        // Bob has received message 0 ("first"); messages[i] has number i + 1.
        let messages = try (0..<1002).map { try pair.fromAlice("m\($0)") }
        let before = pair.bob.serialized()
        // Number 1002 would skip 1001 keys.
        expectProtocolError(.tooManySkippedMessages) { try pair.bobDecrypts(messages[1001]) }
        #expect(pair.bob.serialized() == before)
        // Number 1001 skips exactly RatchetLimits.maxSkip (1000) keys.
        #expect(try pair.bobDecrypts(messages[1000]) == "m1000")
        #expect(pair.bob.ratchetState.skippedMessageKeys.count == 1000)
        #expect(try pair.bobDecrypts(messages[1001]) == "m1001")
        #expect(try pair.bobDecrypts(messages[0]) == "m0")
    }

    @Test func maxSkipAppliesToThePreviousChainLength() throws {
        var pair = try SessionPair("ratchet/max-skip-pn")
        #expect(try pair.aliceDecrypts(pair.fromBob("reply")) == "reply")
        // Alice's second chain: bob receives only its first message, then ratchets and replies.
        let chain = try (0..<1002).map { try pair.fromAlice("c\($0)") }
        #expect(try pair.bobDecrypts(chain[0]) == "c0")
        #expect(try pair.aliceDecrypts(pair.fromBob("again")) == "again")
        let next = try pair.fromAlice("next")
        #expect(try RatchetHeader(decoding: next).previousChainLength == 1002)
        #expect(try RatchetHeader(decoding: next).messageNumber == 0)
        // Finishing the old chain would store keys 1...1001: 1001 > MAX_SKIP.
        let before = pair.bob.serialized()
        expectProtocolError(.tooManySkippedMessages) { try pair.bobDecrypts(next) }
        #expect(pair.bob.serialized() == before)
        // Once one more old-chain message arrives, the rest fits.
        #expect(try pair.bobDecrypts(chain[1]) == "c1")
        #expect(try pair.bobDecrypts(next) == "next")
        #expect(pair.bob.ratchetState.skippedMessageKeys.count == 1000)
    }

    @Test func skippedKeysPerChainAreBoundedByMaxSkip() throws {
        var pair = try SessionPair("ratchet/per-chain-bound")
        // messages[i] has number i + 1. Number 1001 skips 1...1000, number 2002 skips 1002...2001.
        let messages = try (0..<2002).map { try pair.fromAlice("m\($0)") }
        #expect(try pair.bobDecrypts(messages[1000]) == "m1000")
        #expect(pair.bob.ratchetState.skippedMessageKeys.count == 1000)
        #expect(try pair.bobDecrypts(messages[2001]) == "m2001")
        // 2000 keys of one chain: its 1000 oldest (numbers 1...1000) are dropped.
        let skipped = pair.bob.ratchetState.skippedMessageKeys
        #expect(skipped.count == Int(RatchetLimits.maxSkip))
        #expect(skipped.first?.counter == 1002)
        #expect(skipped.last?.counter == 2001)
        let before = pair.bob.serialized()
        expectProtocolError(.duplicateMessage) { try pair.bobDecrypts(messages[0]) }
        expectProtocolError(.duplicateMessage) { try pair.bobDecrypts(messages[999]) }
        #expect(pair.bob.serialized() == before)
        #expect(try pair.bobDecrypts(messages[1001]) == "m1001")
        #expect(try pair.bobDecrypts(messages[2000]) == "m2000")
    }

    @Test func chainsWithSkippedKeysAreBounded() throws {
        var pair = try SessionPair("ratchet/chain-count-bound")
        // Six of alice's chains each leave one skipped key (their message 0) at bob.
        var withheld: [Data] = []
        for chain in 0..<6 {
            withheld.append(try pair.fromAlice("withheld \(chain)"))
            #expect(try pair.bobDecrypts(pair.fromAlice("delivered \(chain)")) == "delivered \(chain)")
            #expect(try pair.aliceDecrypts(pair.fromBob("reply \(chain)")) == "reply \(chain)")
            let chains = Set(pair.bob.ratchetState.skippedMessageKeys.map(\.ratchetKey))
            #expect(chains.count == min(chain + 1, RatchetLimits.maxChainsWithSkippedKeys))
        }
        // The sixth chain's key pushed out every key of the oldest chain.
        let skipped = pair.bob.ratchetState.skippedMessageKeys
        let oldestChain = try RatchetHeader(decoding: withheld[0]).ratchetKey.rawRepresentation
        #expect(skipped.count == RatchetLimits.maxChainsWithSkippedKeys)
        #expect(!skipped.contains { $0.ratchetKey == oldestChain })
        let before = pair.bob.serialized()
        expectProtocolError(.duplicateMessage) { try pair.bobDecrypts(withheld[0]) }
        #expect(pair.bob.serialized() == before)
        for chain in 1..<6 { #expect(try pair.bobDecrypts(withheld[chain]) == "withheld \(chain)") }
        #expect(pair.bob.ratchetState.skippedMessageKeys.isEmpty)
    }

    @Test func skippedKeyStoreIsBoundedInTotal() throws {
        var pair = try SessionPair("ratchet/store-bound")
        // Chain A (alice's first): bob receives number 1000 only, skipping 1...999.
        let chainA = try (0..<1000).map { try pair.fromAlice("a\($0)") }
        #expect(try pair.bobDecrypts(chainA[999]) == "a999")
        #expect(try pair.aliceDecrypts(pair.fromBob("reply 1")) == "reply 1")
        // Chain B: bob receives number 1000 only, skipping 0...999: 1999 keys in all.
        let chainB = try (0..<1001).map { try pair.fromAlice("b\($0)") }
        #expect(try pair.bobDecrypts(chainB[1000]) == "b1000")
        #expect(pair.bob.ratchetState.skippedMessageKeys.count == 1999)
        #expect(try pair.aliceDecrypts(pair.fromBob("reply 2")) == "reply 2")
        // Chain C: number 2 skips 0 and 1: 2001 keys, so the oldest (chain A's number 1) is dropped.
        let chainC = try (0..<3).map { try pair.fromAlice("c\($0)") }
        #expect(try pair.bobDecrypts(chainC[2]) == "c2")
        let skipped = pair.bob.ratchetState.skippedMessageKeys
        #expect(skipped.count == RatchetLimits.maxStoredSkippedKeys)
        #expect(skipped.first?.counter == 2)
        let before = pair.bob.serialized()
        expectProtocolError(.duplicateMessage) { try pair.bobDecrypts(chainA[0]) }
        #expect(pair.bob.serialized() == before)
        #expect(try pair.bobDecrypts(chainA[1]) == "a1")
        #expect(try pair.bobDecrypts(chainB[0]) == "b0")
        #expect(try pair.bobDecrypts(chainC[0]) == "c0")
    }

    @Test func outOfOrderAcrossSeveralRatchetSteps() throws {
        var pair = try SessionPair("ratchet/several-steps")
        // In each of four chains alice sends four messages; bob receives only message 1 (skipping 0), and
        // learns of 2 and 3 through PN when the next chain starts (or, for the last chain, not at all).
        var withheld: [(text: String, message: Data)] = []
        for chain in 0..<4 {
            let messages = try (0..<4).map { try pair.fromAlice("c\(chain)m\($0)") }
            // PN: alice's first chain has none before it; her second follows "first" and four more.
            #expect(try RatchetHeader(decoding: messages[0]).previousChainLength == [0, 5, 4, 4][chain])
            #expect(try pair.bobDecrypts(messages[1]) == "c\(chain)m1")
            withheld += [0, 2, 3].map { ("c\(chain)m\($0)", messages[$0]) }
            #expect(try pair.aliceDecrypts(pair.fromBob("reply \(chain)")) == "reply \(chain)")
        }
        // Chains 0-2: message 0 by N, messages 2 and 3 by PN; chain 3: message 0 only so far.
        #expect(pair.bob.ratchetState.skippedMessageKeys.count == 10)
        // The next chain's first message makes bob store chain 3's messages 2 and 3 via PN.
        #expect(try pair.bobDecrypts(pair.fromAlice("last")) == "last")
        #expect(pair.bob.ratchetState.skippedMessageKeys.count == 12)
        // Deliver the withheld twelve in a scrambled but fixed order (index 5i mod 12).
        for index in (0..<12).map({ ($0 * 5) % 12 }) {
            #expect(try pair.bobDecrypts(withheld[index].message) == withheld[index].text)
        }
        #expect(pair.bob.ratchetState.skippedMessageKeys.isEmpty)
        for entry in withheld { expectProtocolError(.duplicateMessage) { try pair.bobDecrypts(entry.message) } }
    }

    @Test func aCorruptedCopyOfASkippedMessageDoesNotBurnItsKey() throws {
        var pair = try SessionPair("ratchet/corrupted-skipped")
        let old = try (0..<2).map { try pair.fromAlice("old\($0)") }
        #expect(try pair.bobDecrypts(old[1]) == "old1")
        #expect(try pair.aliceDecrypts(pair.fromBob("reply")) == "reply")
        let new = try (0..<2).map { try pair.fromAlice("new\($0)") }
        #expect(try pair.bobDecrypts(new[1]) == "new1")
        // Skipped: old0 (the previous chain) and new0 (the current one).
        #expect(pair.bob.ratchetState.skippedMessageKeys.map(\.counter) == [1, 0])
        for genuine in [old[0], new[0]] {
            // Nonce, ciphertext and tag: the header still names the stored key, whose open then fails.
            for offset in [41, 64, 65, genuine.count - 1] {
                var corrupted = genuine
                corrupted[offset] ^= 0x80
                let before = pair.bob.serialized()
                expectProtocolError(.authenticationFailed) { try pair.bobDecrypts(corrupted) }
                #expect(pair.bob.serialized() == before, "offset \(offset)")
            }
        }
        #expect(try pair.bobDecrypts(old[0]) == "old0")
        #expect(try pair.bobDecrypts(new[0]) == "new0")
        #expect(pair.bob.ratchetState.skippedMessageKeys.isEmpty)
    }

    /// A forged header with a ratchet key bob never saw: the DH step and the skipping it implies run on a
    /// copy. With PN and N at the limit, the copy would store 2000 new keys and evict every genuine one.
    @Test(arguments: [
        (UInt32.max, UInt32(0), FlitzProtocolError.Code.tooManySkippedMessages),
        (RatchetLimits.maxSkip + 3, RatchetLimits.maxSkip, .authenticationFailed),
        (RatchetLimits.maxSkip + 3, RatchetLimits.maxSkip + 1, .tooManySkippedMessages),
    ])
    func aForgedRatchetKeyEvictsNothing(previousChainLength: UInt32, messageNumber: UInt32, expected: FlitzProtocolError.Code) throws {
        var pair = try SessionPair("ratchet/forged-ratchet-key")
        let old = try (0..<2).map { try pair.fromAlice("old\($0)") }
        #expect(try pair.bobDecrypts(old[1]) == "old1")
        #expect(try pair.aliceDecrypts(pair.fromBob("reply")) == "reply")
        let new = try (0..<3).map { try pair.fromAlice("new\($0)") }
        #expect(try pair.bobDecrypts(new[2]) == "new2")
        #expect(pair.bob.ratchetState.receivingCounter == 3)
        let fresh = X25519PrivateKey(random: SeededRandom(label: "ratchet/forged-ratchet-key/mallory")).publicKey
        let forged = reheadered(new[2], ratchetKey: fresh.rawRepresentation, previousChainLength: previousChainLength, messageNumber: messageNumber)
        let before = pair.bob.serialized()
        expectProtocolError(expected) { try pair.bobDecrypts(forged) }
        #expect(pair.bob.serialized() == before)
        #expect(try pair.bobDecrypts(old[0]) == "old0")
        #expect(try pair.bobDecrypts(new[0]) == "new0")
        #expect(try pair.bobDecrypts(new[1]) == "new1")
        #expect(try pair.bobDecrypts(pair.fromAlice("after")) == "after")
    }

    /// Every kind of failure, against a state holding skipped keys in two chains: the serialized session
    /// stays byte-identical and every genuine message still decrypts afterwards.
    @Test(arguments: FailureCase.allCases)
    func everyFailureLeavesTheSessionByteIdentical(_ failure: FailureCase) throws {
        var pair = try SessionPair("ratchet/failures")
        let chainA = try (0..<3).map { try pair.fromAlice("a\($0)") }
        #expect(try pair.bobDecrypts(chainA[2]) == "a2")
        #expect(try pair.aliceDecrypts(pair.fromBob("reply")) == "reply")
        let chainB = try (0..<5).map { try pair.fromAlice("b\($0)") }
        #expect(try pair.bobDecrypts(chainB[3]) == "b3")
        // Stored: chain A's numbers 1 and 2 (a0, a1) and chain B's numbers 0-2 (b0-b2).
        #expect(pair.bob.ratchetState.skippedMessageKeys.count == 5)
        let next = chainB[4]
        let bad: Data
        var expected = FlitzProtocolError.Code.authenticationFailed
        switch failure {
        case .tamperedCiphertext: bad = flipped(next, at: 65)
        case .tamperedTag: bad = flipped(next, at: next.count - 1)
        case .tamperedNonce: bad = flipped(next, at: 50)
        case .tamperedHeader: bad = flipped(next, at: 36)  // PN: only the AD notices
        case .tamperedSkippedCurrentChain: bad = flipped(chainB[1], at: chainB[1].count - 1)
        case .tamperedSkippedPreviousChain: bad = flipped(chainA[0], at: chainA[0].count - 1)
        case .forgedRatchetKey:
            let fresh = X25519PrivateKey(random: SeededRandom(label: "ratchet/failures/mallory")).publicKey
            bad = reheadered(next, ratchetKey: fresh.rawRepresentation, previousChainLength: 1004, messageNumber: 1000)
        case .farFutureCounter:
            bad = reheadered(next, messageNumber: UInt32.max)
            expected = .tooManySkippedMessages
        case .duplicate:
            bad = chainB[3]
            expected = .duplicateMessage
        case .replayFromEarlierChain:
            bad = chainA[2]
            expected = .duplicateMessage
        case .wrongVersion:
            bad = reheadered(next, version: 2)
            expected = .unsupportedVersion
        case .truncated:
            bad = next.prefix(DoubleRatchet.minimumMessageLength - 1)
            expected = .malformedMessage
        case .truncatedHeader:
            bad = next.prefix(RatchetHeader.encodedLength - 1)
            expected = .malformedMessage
        case .otherSession:
            var other = try SessionPair("ratchet/failures/other")
            bad = try other.fromAlice("b4")
        }
        let before = pair.bob.serialized()
        expectProtocolError(expected) { try pair.bobDecrypts(bad) }
        #expect(pair.bob.serialized() == before)
        for (index, message) in [chainA[0], chainA[1]].enumerated() { #expect(try pair.bobDecrypts(message) == "a\(index)") }
        for index in [0, 1, 2, 4] { #expect(try pair.bobDecrypts(chainB[index]) == "b\(index)") }
        #expect(pair.bob.ratchetState.skippedMessageKeys.isEmpty)
    }

    enum FailureCase: CaseIterable, Sendable {
        case tamperedCiphertext, tamperedTag, tamperedNonce, tamperedHeader, tamperedSkippedCurrentChain, tamperedSkippedPreviousChain
        case forgedRatchetKey, farFutureCounter, duplicate, replayFromEarlierChain, wrongVersion, truncated, truncatedHeader, otherSession
    }

    @Test func responderCannotEncryptBeforeReceiving() throws {
        let random = SeededRandom(label: "ratchet/responder")
        var ratchet = DoubleRatchet(
            responderWith: SecretBytes(random.bytes(32)), associatedData: random.bytes(64), ratchetKey: X25519PrivateKey(random: random))
        #expect(!ratchet.canEncrypt)
        #expect(throws: FlitzProtocolError(.noSendingChain)) { try ratchet.encrypt(Data("too early".utf8), random: random) }
    }

    @Test func ratchetsAgreeWhenUsedDirectly() throws {
        let random = SeededRandom(label: "ratchet/direct")
        let sk = SecretBytes(random.bytes(32))
        let ad = random.bytes(64)
        let bobKey = X25519PrivateKey(random: random)
        var alice = try DoubleRatchet(initiatorWith: sk, associatedData: ad, responderRatchetKey: bobKey.publicKey, random: random)
        var bob = DoubleRatchet(responderWith: sk, associatedData: ad, ratchetKey: bobKey)
        #expect(alice.canEncrypt)
        let message = try alice.encrypt(Data("hi".utf8), random: random)
        #expect(message.count == 41 + 24 + 2 + 16)
        #expect(try bob.decrypt(message, random: random) == Data("hi".utf8))
        #expect(bob.canEncrypt)
        #expect(try alice.decrypt(bob.encrypt(Data("ho".utf8), random: random), random: random) == Data("ho".utf8))
        // A different AD fails.
        var stranger = DoubleRatchet(responderWith: sk, associatedData: Data(count: 64), ratchetKey: bobKey)
        #expect(throws: FlitzProtocolError(.authenticationFailed)) { try stranger.decrypt(message, random: random) }
    }

    @Test func lowOrderRatchetKeyIsRejected() throws {
        var pair = try SessionPair("ratchet/low-order")
        var message = try pair.fromAlice("x")
        message.replaceSubrange(1..<33, with: Data(count: 32))
        let before = pair.bob.serialized()
        expectProtocolError(.authenticationFailed) { try pair.bobDecrypts(message) }
        #expect(pair.bob.serialized() == before)
    }

    @Test func headerLayout() throws {
        let key = try X25519PublicKey(rawRepresentation: Data((0..<32).map { UInt8($0) }))
        let header = RatchetHeader(ratchetKey: key, previousChainLength: 0x0102_0304, messageNumber: 0xa0b0_c0d0)
        #expect(header.encoded.hexString == "01" + key.rawRepresentation.hexString + "01020304" + "a0b0c0d0")
        #expect(try RatchetHeader(decoding: header.encoded) == header)
        expectProtocolError(.malformedMessage) { try RatchetHeader(decoding: header.encoded.prefix(40)) }
        expectProtocolError(.malformedMessage) { try RatchetHeader(decoding: Data()) }
    }
}

/// `message` with one bit of byte `offset` flipped.
private func flipped(_ message: Data, at offset: Int) -> Data {
    var copy = message
    copy[copy.startIndex + offset] ^= 0x01
    return copy
}

/// `message` with header fields replaced (the rest, including the tag, unchanged).
private func reheadered(
    _ message: Data, version: UInt8? = nil, ratchetKey: Data? = nil, previousChainLength: UInt32? = nil, messageNumber: UInt32? = nil
) -> Data {
    var copy = Data(message)
    if let version { copy[0] = version }
    if let ratchetKey { copy.replaceSubrange(1..<33, with: ratchetKey) }
    if let previousChainLength { copy.replaceSubrange(33..<37, with: withUnsafeBytes(of: previousChainLength.bigEndian) { Data($0) }) }
    if let messageNumber { copy.replaceSubrange(37..<41, with: withUnsafeBytes(of: messageNumber.bigEndian) { Data($0) }) }
    return copy
}
