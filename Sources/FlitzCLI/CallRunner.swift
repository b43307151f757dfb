import ArgumentParser
import FlitzClient
import Foundation

/// Drives FlitzClient's calls for the CLI commands and prints their progress (human lines, or one JSON object per
/// line with --json). The only file of FlitzCLI that touches the call API of FlitzClient.
struct CallRunner {
    let client: FlitzClient
    let json: Bool

    /// `flitz call`: returns the exit status (`CallExit`).
    func placeCall(to handle: String, audio: CallAudioArguments, duration: Duration?, ringTimeout: Duration) async throws -> Int32 {
        try unavailable()
    }

    /// `flitz answer` without a running listen: takes the offer the relay holds for this device and runs the call.
    func answerHeldCall(selector: String?, audio: CallAudioArguments, duration: Duration?, wait: Duration) async throws -> Int32 {
        try unavailable()
    }

    /// `flitz decline` without a running listen: returns the line to print.
    func declineHeldCall(selector: String?, wait: Duration) async throws -> String {
        try unavailable()
    }

    /// `flitz calls`.
    func printHistory(limit: Int) async throws {
        try unavailable()
    }

    /// Answers control requests while `listen` runs and no call API is present.
    static func serve(_ server: CallControl.Server) async {
        for await pending in server.requests {
            switch pending.request.command {
            case .answer, .decline: pending.reply(.failure("no incoming call is ringing"))
            case .hangup: pending.reply(.failure("no call in progress"))
            }
        }
    }

    private func unavailable() throws -> Never {
        printError("flitz: calls are not available in this build yet")
        throw ExitCode(CallExit.failed)
    }
}
