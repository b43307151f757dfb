import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import GRDB
import Logging
import Synchronization

/// A message received from a contact.
public struct ReceivedMessage: Sendable {
    /// 16-byte message id (lowercase hex in the CLI).
    public let messageID: Data
    /// Sender's handle (authenticated by the relay; the session authenticates the device).
    public let from: String
    /// Message text.
    public let text: String
    /// The relay's acceptance time.
    public let sentAt: Date
    /// The sender's account identity key is not the one this user trusts for `from` (it changed and has
    /// not been accepted with `flitz trust`): show the message with a warning.
    public let untrustedSender: Bool
    /// Set for a message another device of this account sent (a sent transcript): its recipient. `from` is
    /// then this account's own handle.
    public let to: String?
    /// Reply, forwarding, edit and disappearing details (`protocol/conversations.md`; Conversations.swift).
    public internal(set) var details = MessageDetails()
    /// The conversation is a message request (`protocol/conversations.md` section 9): a stranger's first messages,
    /// shown marked, with no seen receipt sent.
    public internal(set) var isRequest = false

    init(messageID: Data, from: String, text: String, sentAt: Date, untrustedSender: Bool, to: String? = nil) {
        self.messageID = messageID
        self.from = from
        self.text = text
        self.sentAt = sentAt
        self.untrustedSender = untrustedSender
        self.to = to
    }
}

/// Something that happened while connected, for `listen` and `chat`.
public enum ClientEvent: Sendable {
    /// A new message.
    case message(ReceivedMessage)
    /// One of this device's messages changed status.
    case receipt(messageID: Data, peer: String, status: MessageStatus)
    /// A non-fatal problem worth telling the user (identity change, undecryptable message).
    case warning(String)
    /// A contact started (`active`) or stopped typing (`protocol/conversations.md` section 6).
    case typing(from: String, active: Bool)
}

/// The Flitz client: one account with one device, its local store in a home directory, and the relay
/// operations of the CLI (DESIGN.md "Architecture"; `protocol/relay.md` for the frames it sends).
public final class FlitzClient: Sendable {
    /// One-time prekeys generated at registration and whenever the relay's stock falls below `lowPreKeyThreshold`.
    public static let preKeyBatchSize = 100
    /// Replenish one-time prekeys when the relay reports fewer than this many.
    public static let lowPreKeyThreshold = 20
    /// One-time KEM prekeys generated at registration and whenever the relay's stock falls below
    /// `lowKEMPreKeyThreshold` (each is 1568 bytes at the relay, so fewer than X25519 ones).
    public static let kemPreKeyBatchSize = 20
    /// Replenish one-time KEM prekeys when the relay reports fewer than this many.
    public static let lowKEMPreKeyThreshold = 5
    /// Seconds after which the signed prekey and the last-resort KEM prekey are replaced (7 days).
    public static let signedPreKeyRotationInterval: TimeInterval = 7 * 86_400
    /// Seconds a replaced signed or last-resort KEM prekey still answers prekey messages (35 days: the
    /// relay's 30-day retention ceiling plus margin for a bundle fetched just before rotation).
    public static let signedPreKeyGracePeriod: TimeInterval = 35 * 86_400
    /// Least seconds between two session resets this device starts with one peer device (1 hour).
    public static let sessionResetInterval: TimeInterval = 3_600

    /// The home directory (`--home`, `FLITZ_HOME`, or `~/.flitz`).
    public let home: URL
    let store: ClientStore
    let logger: Logger
    let random: any RandomSource
    /// The wall clock, injected so tests can move through rotation and rate-limit periods.
    let now: @Sendable () -> Date
    /// PEM file of CA certificates trusted for `wss://` besides the system's (`--ca-file`); nil for none.
    public let caFile: String?
    /// Sees every frame an authenticated connection of this client writes (tests); nil in normal use.
    let frameTap = Mutex<(@Sendable (WireFrame) -> Void)?>(nil)

    /// Opens the local store in `home`. Only `create: true` (for `init`) makes a new home directory.
    /// - Throws: `ClientError(.notInitialized)` when `home` holds no store and `create` is false;
    ///   `ClientError(.invalidArgument)` when the store cannot be opened (not a directory, corrupt file).
    ///   `ClientError(.passphrase)` when the store has a passphrase and `passphrase` is nil or gives a wrong one.
    /// - Parameter now: the wall clock (tests inject one to step through prekey rotation and reset limits).
    /// - Parameter passphrase: asked only when the store has a passphrase (docs/storage-at-rest.md).
    public init(
        home: URL, logger: Logger, create: Bool = true, random: any RandomSource = SystemRandom(),
        now: @escaping @Sendable () -> Date = { Date() }, caFile: String? = nil, passphrase: PassphraseSource? = nil
    ) throws {
        self.now = now
        self.caFile = caFile
        self.home = home
        let storeFile = home.appendingPathComponent(ClientStore.fileName).path
        guard create || FileManager.default.fileExists(atPath: storeFile) else {
            throw ClientError(.notInitialized, "no account in \(home.path); run `flitz init --relay ws://HOST:PORT --handle NAME` first")
        }
        do {
            self.store = try ClientStore(home: home, passphrase: passphrase)
        } catch let error as ClientError {
            throw error
        } catch {
            throw ClientError(.invalidArgument, "cannot open the local store \(storeFile): \(error)")
        }
        self.logger = logger
        self.random = random
    }

    /// The wall clock the CLI gives the client: the system time plus, in debug builds only,
    /// `FLITZ_TEST_CLOCK_OFFSET` seconds (a decimal number, may be negative) from `environment`, so end-to-end
    /// tests can move through mute ends and rotation periods (DESIGN.md, "Time"). Release builds ignore it.
    public static func systemClock(environment: [String: String] = ProcessInfo.processInfo.environment) -> @Sendable () -> Date {
        #if DEBUG
        let offset = environment["FLITZ_TEST_CLOCK_OFFSET"].flatMap(Double.init) ?? 0
        #else
        let offset = 0.0
        #endif
        return { Date().addingTimeInterval(offset) }
    }

    func requireAccount() throws -> AccountRecord {
        guard let account = try store.loadAccount() else {
            if let pending = try store.pendingRegistration() {
                throw ClientError(
                    .notInitialized,
                    "the registration of \(pending.account.handle) in \(home.path) did not finish; run `flitz init --relay ... --handle \(pending.account.handle)` again")
            }
            throw ClientError(.notInitialized, "no account in \(home.path); run `flitz init --relay ws://HOST:PORT --handle NAME` first")
        }
        if account.deleted {
            throw ClientError(.refused(.authenticationFailed), "the account \(account.handle) was deleted (`flitz account delete`); this home cannot be used any more")
        }
        if account.removed { throw removedError(account) }
        return account
    }

    // MARK: init

    /// Creates the keys, registers the handle (or recovers it with `recoveryCode`), publishes prekeys,
    /// and returns the new recovery code, to be shown once.
    /// - Throws: `ClientError` (`.alreadyInitialized`, `.invalidArgument`, `.relayUnreachable`, `.refused`).
    public func initialize(relayURL: String, handle: String, recoveryCode: String? = nil) async throws -> String {
        guard try store.loadAccount() == nil else {
            throw ClientError(.alreadyInitialized, "\(home.path) already holds an account")
        }
        guard Handle.isValid(handle) else {
            throw ClientError(.invalidArgument, "invalid handle \"\(handle)\": use 3-32 characters of a-z, 0-9, _ and .")
        }
        guard relayURL.hasPrefix("ws://") || relayURL.hasPrefix("wss://") else {
            throw ClientError(.invalidArgument, "the relay address must start with ws:// or wss://")
        }
        // Keys are stored before registering: if the answer is lost, `init` again retries with the same
        // keys and the relay recognises the retry (`protocol/relay.md`, "Register").
        let device: DeviceIdentity, account: AccountIdentity, preKeys: RegistrationPreKeys
        if let pending = try store.pendingRegistration() {
            guard pending.account.handle == handle else {
                throw ClientError(
                    .invalidArgument,
                    "an interrupted registration of \(pending.account.handle) is pending in \(home.path); run init with --handle \(pending.account.handle) to finish it")
            }
            guard let pendingAccount = pending.account.accountIdentity else {
                throw ClientError(.invalidArgument, "an interrupted linking is pending in \(home.path); run `flitz init --link CODE` again")
            }
            (account, device) = (pendingAccount, pending.account.device)
            preKeys = pending.preKeys
        } else {
            account = AccountIdentity(random: random)
            device = DeviceIdentity(account: account, random: random)
            preKeys = RegistrationPreKeys(device: device, oneTimeCount: Self.preKeyBatchSize, oneTimeKEMCount: Self.kemPreKeyBatchSize, random: random)
            try store.saveNewAccount(
                AccountRecord(
                    handle: handle, relayURL: relayURL, deviceID: 0, accountIdentity: account, accountIdentityKey: account.publicKey, device: device,
                    readReceipts: true),
                preKeys: preKeys, now: now())
        }

        let deviceKeys = Self.wireKeys(device, preKeys)

        let result: WireRegisterResult
        do {
            result = try await RelayConnection.with(url: relayURL, caFile: caFile, logger: logger) { connection in
                let challenge = try await Self.challenge(connection)
                let signature = device.privateKey.signature(for: SignedPayload.authentication(nonce: challenge.nonce, handle: handle))
                let body: WireFrame.OneOf_Body
                if let recoveryCode {
                    var recover = WireRecover()
                    recover.handle = handle
                    recover.recoveryCode = recoveryCode
                    recover.accountIdentityKey = account.publicKey.rawRepresentation
                    recover.device = deviceKeys
                    recover.challengeSignature = signature
                    body = .recover(recover)
                } else {
                    var register = WireRegister()
                    register.handle = handle
                    register.accountIdentityKey = account.publicKey.rawRepresentation
                    register.device = deviceKeys
                    register.challengeSignature = signature
                    body = .register(register)
                }
                guard case .registerResult(let result) = try await connection.request(body).body else {
                    throw ClientError(.protocolFailure, "unexpected answer to registration")
                }
                return result
            }
        } catch let error as ClientError where error.kind != .relayUnreachable {
            // Refused (handle taken, wrong code): nothing is registered; let the user pick again.
            try store.discardPendingRegistration()
            throw error
        }
        try store.markRegistered(deviceID: result.deviceID, relayURL: relayURL)
        // Publish device list version 1 now (`protocol/devices.md` section 7); if that fails, the next
        // authenticated connection does it, so `init` has still succeeded.
        do {
            let account = try requireAccount()
            try await withAuthenticatedConnection(account) { _ in }
        } catch {
            logger.warning("the device list will be published on the next connection", metadata: ["error": "\(error)"])
        }
        return result.recoveryCode
    }

    static func challenge(_ connection: RelayConnection) async throws -> WireChallenge {
        guard let frame = await connection.nextUnsolicited(timeout: .seconds(15)), case .challenge(let challenge) = frame.body,
            challenge.nonce.count == WireConstants.challengeNonceLength
        else { throw ClientError(.relayUnreachable, "the relay did not send a valid challenge") }
        // An empty list is an older relay, which speaks version 1 (`protocol/relay.md`, "Versioning").
        guard challenge.supportedVersions.isEmpty || challenge.supportedVersions.contains(WireConstants.protocolVersion) else {
            throw ClientError(
                .protocolFailure,
                "the relay speaks frame versions \(challenge.supportedVersions.map(String.init).joined(separator: ", ")); "
                    + "this flitz speaks \(WireConstants.protocolVersion): update flitz")
        }
        return challenge
    }

    /// Authenticates `connection` as this device, rotates the signed and last-resort KEM prekeys when
    /// due, and tops up one-time prekeys of either kind when the relay runs low. Follows the account's
    /// seen-receipts setting, and on a primary device that has not published a device list yet (after
    /// `Register` or `Recover`), publishes version 1 holding itself (`protocol/devices.md` section 7).
    /// Returns the connection's challenge nonce (signed again by `DeleteAccount`). `callSignals`: this connection
    /// runs a `CallController` and wants call signals (`Authenticate.call_signals`, protocol/calls.md 3.2); others
    /// leave it unset, so the relay holds signals for the device and rings it instead of handing them to a
    /// connection that would never read them.
    @discardableResult
    func authenticate(_ connection: RelayConnection, _ account: AccountRecord, callSignals: Bool = false) async throws -> Data {
        let challenge = try await Self.challenge(connection)
        var authenticate = WireAuthenticate()
        authenticate.handle = account.handle
        authenticate.deviceID = account.deviceID
        authenticate.callSignals = callSignals
        authenticate.signature = account.device.privateKey.signature(
            for: SignedPayload.authentication(nonce: challenge.nonce, handle: account.handle))
        let answer: WireFrame
        do {
            answer = try await connection.request(.authenticate(authenticate))
        } catch let error as ClientError where error.kind == .refused(.authenticationFailed) {
            throw ClientError(
                error.kind,
                "the relay no longer knows this device as \(account.handle) (the handle was recovered on another device, or removed); "
                    + "this home cannot be used any more")
        }
        guard case .authenticateResult(let result) = answer.body else {
            throw ClientError(.protocolFailure, "unexpected answer to authentication")
        }
        connection.relayClockOffsetMilliseconds = result.relayTimeMs - Int64(Date().timeIntervalSince1970 * 1000)
        // The setting is the account's: another device may have turned seen receipts off (or on again).
        if result.seenReceiptsOff == account.readReceipts { try store.setReadReceipts(!result.seenReceiptsOff) }
        try await publishFirstDeviceListIfNeeded(on: connection, account)
        var publish = WirePublishPreKeys()
        let rotated = try store.rotatePreKeysIfDue(
            device: account.device, random: random, now: now(), rotationInterval: Self.signedPreKeyRotationInterval,
            grace: Self.signedPreKeyGracePeriod)
        if let signed = rotated.signed { publish.signedPrekey = signed.wire }
        if let lastResort = rotated.lastResort { publish.lastResortKemPrekey = lastResort.wire }
        if result.oneTimePrekeysRemaining < Self.lowPreKeyThreshold {
            publish.oneTimePrekeys = try store.generateOneTimePreKeys(count: Self.preKeyBatchSize).map(\.wire)
        }
        if result.oneTimeKemPrekeysRemaining < Self.lowKEMPreKeyThreshold {
            publish.oneTimeKemPrekeys = try store
                .generateOneTimeKEMPreKeys(count: Self.kemPreKeyBatchSize, device: account.device, random: random, now: now())
                .map(\.wire)
        }
        if publish.hasSignedPrekey || publish.hasLastResortKemPrekey || !publish.oneTimePrekeys.isEmpty || !publish.oneTimeKemPrekeys.isEmpty {
            _ = try await connection.request(.publishPrekeys(publish))
            logger.debug(
                "published prekeys",
                metadata: [
                    "signed": "\(publish.hasSignedPrekey)", "lastResortKEM": "\(publish.hasLastResortKemPrekey)",
                    "oneTime": "\(publish.oneTimePrekeys.count)", "oneTimeKEM": "\(publish.oneTimeKemPrekeys.count)",
                ])
        }
        return challenge.nonce
    }

    /// Runs `body` on an authenticated connection; `callSignals` only when `body` runs a `CallController` on it
    /// (see `authenticate`).
    func withAuthenticatedConnection<T: Sendable>(
        _ account: AccountRecord, callSignals: Bool = false, _ body: @escaping @Sendable (RelayConnection) async throws -> T
    ) async throws -> T {
        // Disappearing messages go on every run that reaches the relay (`protocol/conversations.md` section 8).
        try sweepExpired()
        return try await RelayConnection.with(url: account.relayURL, caFile: caFile, logger: logger, tap: frameTap.withLock { $0 }) { connection in
            try await self.authenticate(connection, account, callSignals: callSignals)
            return try await body(connection)
        }
    }

    // MARK: settings

    /// Turns seen receipts on or off for the whole account: locally first (so this device stops at once), then
    /// at the relay (`UpdateAccountSettings`), which then drops every seen report of every device of the
    /// account; the other devices follow the setting when they next authenticate.
    /// - Throws: `ClientError(.notInitialized)`, `.relayUnreachable` (the local setting is changed already),
    ///   database errors.
    public func setReadReceipts(_ on: Bool) async throws {
        let account = try requireAccount()
        try store.setReadReceipts(on)
        var settings = WireUpdateAccountSettings()
        settings.seenReceiptsOff = !on
        let update = settings
        var updated = account
        updated.readReceipts = on
        try await withAuthenticatedConnection(updated) { connection in
            _ = try await connection.request(.updateAccountSettings(update))
        }
        try store.setReadReceipts(on)  // authentication followed the relay's old value
    }

    /// Whether seen receipts are sent.
    public func readReceipts() throws -> Bool { try requireAccount().readReceipts }

    /// The relay address this home connects to (`ws://` or `wss://` URL, as given to `init`).
    /// - Throws: `ClientError(.notInitialized)` without an account.
    public func relayURL() throws -> String { try requireAccount().relayURL }

    /// Makes this home connect to `relayURL` from now on: another node of the same relay cluster, or the relay's
    /// new address (protocol/cluster.md 1: any node accepts any device). Only the address changes; the account, its
    /// keys and its device id stay, so the new address must reach the same relay database (a different relay does
    /// not know this device and refuses its authentication). Nothing is sent.
    /// - Throws: `ClientError(.invalidArgument)` unless `relayURL` starts with `ws://` or `wss://` and parses as a URL
    ///   with a host; `ClientError(.notInitialized)` without an account.
    public func setRelayURL(_ relayURL: String) throws {
        _ = try requireAccount()
        guard relayURL.hasPrefix("ws://") || relayURL.hasPrefix("wss://") else {
            throw ClientError(.invalidArgument, "the relay address must start with ws:// or wss://")
        }
        guard let url = URL(string: relayURL), let host = url.host, !host.isEmpty else {
            throw ClientError(.invalidArgument, "\"\(relayURL)\" is not a relay address (ws://HOST:PORT or wss://HOST:PORT)")
        }
        try store.setRelayURL(relayURL)
    }

    /// This device's handle.
    public func handle() throws -> String { try requireAccount().handle }

    /// The client's clock (the injected one; in the CLI, `systemClock`), for times relative to now such as a mute's end.
    public func currentTime() -> Date { now() }
}

extension SignedPreKeyPair {
    var wire: WireSignedPreKey {
        var key = WireSignedPreKey()
        key.id = id
        key.publicKey = privateKey.publicKey.rawRepresentation
        key.signature = signature
        return key
    }
}

extension KEMPreKeyPair {
    var wire: WireKEMPreKey {
        var key = WireKEMPreKey()
        key.id = id
        key.publicKey = privateKey.publicKey.rawRepresentation
        key.signature = signature
        key.lastResort = kind == .lastResort
        return key
    }
}

extension OneTimePreKeyPair {
    var wire: WireOneTimePreKey {
        var key = WireOneTimePreKey()
        key.id = id
        key.publicKey = privateKey.publicKey.rawRepresentation
        return key
    }
}
