import ArgumentParser
import FlitzClient
import FlitzCrypto
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where the CLI gets passphrases (docs/storage-at-rest.md): `FLITZ_PASSPHRASE` (the current one; scripts) and
/// `FLITZ_NEW_PASSPHRASE` (the new one for `passphrase change`) when set, else a prompt without echo on the
/// terminal when standard input is one, else a clear error. Passphrases are never printed or logged, live in
/// `SecretBytes` (zeroed when released), and the prompt's read buffer is zeroed at once.
enum PassphraseInput {
    /// Environment variable with the current passphrase.
    static let variable = "FLITZ_PASSPHRASE"
    /// Environment variable with the new passphrase of `flitz passphrase change`.
    static let newVariable = "FLITZ_NEW_PASSPHRASE"

    /// The current passphrase, asked only when the store has one.
    static func current() -> PassphraseSource {
        { try obtain(variable: variable, prompt: "Passphrase of the local store: ", confirm: false) }
    }

    /// A new passphrase: from `variable`, or typed twice on the terminal.
    static func new(variable: String) throws -> SecretBytes {
        try obtain(variable: variable, prompt: "New passphrase: ", confirm: true)
    }

    private static func obtain(variable: String, prompt: String, confirm: Bool) throws -> SecretBytes {
        if let value = ProcessInfo.processInfo.environment[variable] {
            guard !value.isEmpty else { throw ClientError(.passphrase, "\(variable) is empty") }
            return SecretBytes(Data(value.utf8))
        }
        guard isatty(STDIN_FILENO) == 1 else {
            throw ClientError(.passphrase, "the passphrase is needed: run on a terminal or set \(variable)")
        }
        let first = try readFromTerminal(prompt)
        guard first.count > 0 else { throw ClientError(.passphrase, "the passphrase must not be empty") }
        if confirm {
            let second = try readFromTerminal("Repeat it: ")
            guard first.constantTimeEquals(second) else { throw ClientError(.passphrase, "the two passphrases differ; nothing changed") }
        }
        return first
    }

    /// One line from /dev/tty with echo off (restored afterwards, also on error).
    private static func readFromTerminal(_ prompt: String) throws -> SecretBytes {
        let fd = open("/dev/tty", O_RDWR | O_NOCTTY)
        guard fd >= 0 else { throw ClientError(.passphrase, "cannot open the terminal to ask for the passphrase; set \(variable)") }
        defer { close(fd) }
        _ = prompt.withCString { write(fd, $0, strlen($0)) }
        var saved = termios()
        let hasTermios = tcgetattr(fd, &saved) == 0
        if hasTermios {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            quiet.c_lflag |= tcflag_t(ECHONL)
            _ = tcsetattr(fd, TCSAFLUSH, &quiet)
        }
        defer { if hasTermios { _ = tcsetattr(fd, TCSAFLUSH, &saved) } }
        var buffer = [UInt8](repeating: 0, count: 1024)
        defer { buffer.withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 0) } }
        var length = 0
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1, byte != UInt8(ascii: "\n") {
            guard length < buffer.count else { throw ClientError(.passphrase, "the passphrase is longer than 1024 bytes") }
            buffer[length] = byte
            length += 1
        }
        byte = 0
        if length > 0, buffer[length - 1] == UInt8(ascii: "\r") { length -= 1 }
        return SecretBytes(buffer[0..<length])
    }
}

/// `flitz passphrase set|change|remove`: the local store's passphrase (docs/storage-at-rest.md).
struct PassphraseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "passphrase",
        abstract: "Seal this device's keys, sessions and attachment keys under a passphrase (Argon2id), change it or remove it.",
        discussion: """
            Every command on a home with a passphrase asks for it on the terminal, or reads $FLITZ_PASSPHRASE. \
            set and change read the new one twice on the terminal, or from $FLITZ_PASSPHRASE (set) / \
            $FLITZ_NEW_PASSPHRASE (change). All secrets are re-sealed in one transaction. Run it while no other \
            flitz command uses the home. Exit 77 for a wrong or missing passphrase.
            """,
        subcommands: [Set.self, Change.self, Remove.self])

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Seal the secrets of a home that has no passphrase yet.")
        @OptionGroup var options: CommonOptions

        func run() async throws {
            let client = try options.client()
            try await FlitzCLI.run {
                guard !client.hasPassphrase else { throw ClientError(.invalidArgument, "this home has a passphrase already; use `flitz passphrase change`") }
                try client.setPassphrase(try PassphraseInput.new(variable: PassphraseInput.variable), parameters: FlitzClient.keyParameters())
            }
            printError("flitz: passphrase set; the secrets of this home are sealed under it")
        }
    }

    struct Change: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Re-seal the secrets under a new passphrase.")
        @OptionGroup var options: CommonOptions

        func run() async throws {
            let client = try options.client()
            try await FlitzCLI.run {
                guard client.hasPassphrase else { throw ClientError(.invalidArgument, "this home has no passphrase; use `flitz passphrase set`") }
                try client.setPassphrase(try PassphraseInput.new(variable: PassphraseInput.newVariable), parameters: FlitzClient.keyParameters())
            }
            printError("flitz: passphrase changed")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Store the secrets unsealed again (the file's mode 0600 is then their only protection).")
        @OptionGroup var options: CommonOptions

        func run() async throws {
            let client = try options.client()
            try await FlitzCLI.run {
                guard client.hasPassphrase else { throw ClientError(.invalidArgument, "this home has no passphrase") }
                try client.setPassphrase(nil)
            }
            printError("flitz: passphrase removed; the secrets of this home are protected by the file's permissions only")
        }
    }
}
