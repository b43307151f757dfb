import Foundation

/// Named crash points for crash-consistency tests (`protocol/crypto.md`, "Persistence order"). In debug
/// builds, a process whose environment variable `FLITZ_FAILPOINT` names a point dies there with `_exit(86)`:
/// no cleanup, no flushing, no open transaction committed, like a kill. Release builds ignore the variable.
///
/// Points: `receive.afterDecrypt` (inside the storing transaction, before commit), `receive.afterCommit`
/// (an envelope stored, before acknowledging), `receive.afterAcknowledge` (relay confirmed the
/// acknowledgement, before showing), `send.afterEncrypt` (inside the transaction that stores session and
/// outgoing envelope, before commit), `send.afterCommit` (stored, before submitting), `send.afterSubmit`
/// (relay stored it, before the local status update); `media.afterCreate` (an upload created and recorded, nothing
/// sent), `media.afterPatch` (after each committed upload part), `media.duringDownload` (a download past its first
/// MiB, before the rest).
enum Failpoint {
    /// Environment variable naming the one point to die at.
    static let environmentVariable = "FLITZ_FAILPOINT"
    /// Exit status of a process stopped by a failpoint.
    static let exitStatus: Int32 = 86

    /// The armed point, read once.
    private static let armed: String? = {
        #if DEBUG
            return ProcessInfo.processInfo.environment[environmentVariable]
        #else
            return nil
        #endif
    }()

    /// Ends the process at once with status 86 when `name` is the armed point; otherwise does nothing.
    static func hit(_ name: String) {
        if let armed, armed == name { _exit(exitStatus) }
    }
}
