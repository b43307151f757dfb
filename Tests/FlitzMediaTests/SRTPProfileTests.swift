import FlitzMedia
import Testing

/// The key and salt sizes of the two profiles (protocol/calls.md 5).
@Suite struct SRTPProfileTests {
    @Test func keyAndSaltLengthsMatchTheProfiles() {
        #expect(SRTPProfile.aeadAES256GCM.keyLength == 32 && SRTPProfile.aeadAES256GCM.saltLength == 12)
        #expect(SRTPProfile.aes128CMHMACSHA1_80.keyLength == 16 && SRTPProfile.aes128CMHMACSHA1_80.saltLength == 14)
    }
}
