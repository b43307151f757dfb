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

    @Test func skippedKeyStoreIsBounded() throws {
        var pair = try SessionPair("ratchet/store-bound")
        // messages[i] has number i + 1. Receive numbers 1000, 2000 and 3000: 999 skipped keys each.
        let messages = try (0..<3000).map { try pair.fromAlice("m\($0)") }
        #expect(try pair.bobDecrypts(messages[999]) == "m999")
        #expect(try pair.bobDecrypts(messages[1999]) == "m1999")
        #expect(pair.bob.ratchetState.skippedMessageKeys.count == 1998)
        #expect(try pair.bobDecrypts(messages[2999]) == "m2999")
        let skipped = pair.bob.ratchetState.skippedMessageKeys
        #expect(skipped.count == RatchetLimits.maxStoredSkippedKeys)
        // The 997 oldest (numbers 1...997) were evicted; 998 is the oldest kept.
        #expect(skipped.first?.counter == 998)
        #expect(skipped.last?.counter == 2999)
        let before = pair.bob.serialized()
        expectProtocolError(.duplicateMessage) { try pair.bobDecrypts(messages[0]) }
        expectProtocolError(.duplicateMessage) { try pair.bobDecrypts(messages[996]) }
        #expect(pair.bob.serialized() == before)
        #expect(try pair.bobDecrypts(messages[997]) == "m997")
        #expect(try pair.bobDecrypts(messages[2998]) == "m2998")
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
