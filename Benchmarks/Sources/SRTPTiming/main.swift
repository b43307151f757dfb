// SRTP protect + unprotect per 20 ms packet through FlitzMedia (Benchmarks/run-calls.sh): RTP numbering, libsrtp2
// protect with the send session, unprotect with the receive session, RTP parsing and the receive statistics, i.e.
// SRTPSender.packet + SRTPReceiver.receive, the per-packet work of a call. Prints nanoseconds per packet.
// Usage: SRTPTiming PROFILE PACKETS   (PROFILE 1 = AEAD_AES_256_GCM, 2 = AES_CM_128_HMAC_SHA1_80)
import FlitzCrypto
import FlitzMedia
import Foundation

let arguments = CommandLine.arguments
guard arguments.count == 3, let number = Int(arguments[1]), let packets = Int(arguments[2]), packets > 0,
    let profile: SRTPProfile = number == 1 ? .aeadAES256GCM : number == 2 ? .aes128CMHMACSHA1_80 : nil
else {
    FileHandle.standardError.write(Data("usage: SRTPTiming PROFILE PACKETS\n".utf8))
    exit(2)
}
let material = Data((0..<64).map { UInt8(truncatingIfNeeded: $0 * 37 + 11) })
let key = SRTPMasterKey(
    key: SecretBytes(material.prefix(profile.keyLength)),
    salt: SecretBytes(material[profile.keyLength..<(profile.keyLength + profile.saltLength)]))
var sender = try SRTPSender(
    profile: profile, key: key, sequencer: RTPSequencer(ssrc: 0x1234_5678, initialSequenceNumber: 0, initialTimestamp: 0))
var receiver = try SRTPReceiver(profile: profile, key: key)
let clock = ContinuousClock()
let start = clock.now
for index in 0..<packets {
    let protected = try sender.packet(payload: MuLaw.silencePayload)
    guard case .success(let packet) = receiver.receive(protected, arrival: .milliseconds(20 * index)),
        packet.payload.count == 160
    else {
        FileHandle.standardError.write(Data("packet \(index) did not round-trip\n".utf8))
        exit(1)
    }
}
let elapsed = clock.now - start
let nanoseconds = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
print(String(format: "%.1f", nanoseconds / Double(packets)))
