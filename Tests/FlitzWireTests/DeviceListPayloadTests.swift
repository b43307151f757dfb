import FlitzWire
import Foundation
import Testing

/// `DeviceListPayload` against devices.md section 4.1's example and the validity rules of section 4.2.
struct DeviceListPayloadTests {
    static func hex(_ string: String) -> Data {
        let digits = Array(string.filter { !$0.isWhitespace }.utf8)
        return Data(stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)! })
    }

    static let exampleKey = hex("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
    static let example = hex("""
        466c69747a4465766963654c6973742d7631 00
        03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8
        0000000000000001 0000018bcfe56800 0001
        00000001 2222222222222222222222222222222222222222222222222222222222222222
        """)

    @Test func encodesTheSpecExampleByteForByte() throws {
        let payload = DeviceListPayload(
            accountIdentityKey: Self.exampleKey, version: 1, issuedAtMs: 1_700_000_000_000,
            entries: [.init(deviceID: 1, deviceIdentityKey: Data(repeating: 0x22, count: 32))])
        #expect(payload.encoded() == Self.example)
        #expect(payload.encoded().count == 105)
        #expect(try DeviceListPayload(decoding: Self.example) == payload)
    }

    @Test func refusesEveryInvalidShape() {
        func list(_ entries: [(UInt32, UInt8)], version: UInt64 = 1, issuedAt: UInt64 = 1) -> Data {
            DeviceListPayload(
                accountIdentityKey: Self.exampleKey, version: version, issuedAtMs: issuedAt,
                entries: entries.map { .init(deviceID: $0.0, deviceIdentityKey: Data(repeating: $0.1, count: 32)) }
            ).encoded()
        }
        #expect(throws: DeviceListPayload.DecodingError.malformed) { try DeviceListPayload(decoding: Self.example.dropLast()) }
        #expect(throws: DeviceListPayload.DecodingError.malformed) { try DeviceListPayload(decoding: Self.example + Data([0])) }
        var relabelled = Self.example
        relabelled[0] ^= 1
        #expect(throws: DeviceListPayload.DecodingError.malformed) { try DeviceListPayload(decoding: relabelled) }
        #expect(throws: DeviceListPayload.DecodingError.deviceCount) { try DeviceListPayload(decoding: list([])) }
        #expect(throws: DeviceListPayload.DecodingError.deviceCount) {
            try DeviceListPayload(decoding: list((1...17).map { (UInt32($0), UInt8($0)) }))
        }
        #expect(throws: DeviceListPayload.DecodingError.zeroField) { try DeviceListPayload(decoding: list([(1, 1)], version: 0)) }
        #expect(throws: DeviceListPayload.DecodingError.zeroField) { try DeviceListPayload(decoding: list([(1, 1)], issuedAt: 0)) }
        #expect(throws: DeviceListPayload.DecodingError.unsortedOrDuplicate) { try DeviceListPayload(decoding: list([(2, 1), (1, 2)])) }
        #expect(throws: DeviceListPayload.DecodingError.unsortedOrDuplicate) { try DeviceListPayload(decoding: list([(1, 1), (1, 2)])) }
        #expect(throws: DeviceListPayload.DecodingError.unsortedOrDuplicate) { try DeviceListPayload(decoding: list([(1, 7), (2, 7)])) }
        #expect((try? DeviceListPayload(decoding: list((1...16).map { (UInt32($0), UInt8($0)) })))?.entries.count == 16)
    }
}
