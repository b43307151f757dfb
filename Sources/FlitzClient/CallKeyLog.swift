import FlitzMedia
import Foundation

/// Debug builds only: when `FLITZ_TEST_CALL_KEYLOG` names a file, each call's SRTP master keys and salts are
/// appended to it (one line per direction: `send KEY SALT` / `receive KEY SALT`, lowercase hex), like TLS's
/// SSLKEYLOGFILE. The end-to-end tests read it to search the relay's files for the keys (protocol/calls.md 1);
/// release builds compile none of this.
enum CallKeyLog {
    static func append(_ keys: CallSRTPKeys) {
        #if DEBUG
        guard let path = ProcessInfo.processInfo.environment["FLITZ_TEST_CALL_KEYLOG"], !path.isEmpty else { return }
        func hex(_ key: SRTPMasterKey) -> String {
            (key.key.unsafeData.map { String(format: "%02x", $0) } + [" "] + key.salt.unsafeData.map { String(format: "%02x", $0) }).joined()
        }
        let lines = "send \(hex(keys.send))\nreceive \(hex(keys.receive))\n"
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) }
        guard let handle = FileHandle(forWritingAtPath: path) else { return }
        defer { try? handle.close() }
        _ = try? handle.seekToEnd()
        try? handle.write(contentsOf: Data(lines.utf8))
        #endif
    }
}
