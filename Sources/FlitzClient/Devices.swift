import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import GRDB
import Synchronization

/// One device of this account, as `flitz devices` shows it.
public struct DeviceSummary: Sendable {
    /// Relay-assigned device id.
    public let deviceID: UInt32
    /// The device identity key's fingerprint, `"XXXX XXXX XXXX XXXX"` (`protocol/devices.md` section 5.3).
    public let fingerprint: String
    /// This device.
    public let isThisDevice: Bool
    /// The primary device (holds the account identity key): the lowest id in the list, since a primary can be
    /// neither removed nor replaced except by a recovery, which removes every other device (section 7).
    public let isPrimary: Bool
    /// When the relay registered it (nil when the relay did not say).
    public let registeredAt: Date?
}

extension FlitzClient {
    /// Default time `flitz devices link` and `flitz init --link` wait for the other device (600 s, the
    /// pairing lifetime of `protocol/devices.md` section 5.2).
    public static let linkTimeout: Duration = .seconds(600)
    /// Default time between two `LinkTake` polls while waiting for the other device.
    public static let linkPollInterval: Duration = .milliseconds(250)

    // MARK: own device list

    /// After `Register` or `Recover`, the primary device publishes version 1 of its list, holding only itself
    /// (`protocol/devices.md` section 7); done on the first authenticated connection, so an interrupted `init`
    /// publishes it next time. Nothing for a linked device or once a list is accepted.
    func publishFirstDeviceListIfNeeded(on connection: RelayConnection, _ account: AccountRecord) async throws {
        guard let identity = account.accountIdentity else { return }
        let accepted = try await store.dbQueue.read { db in try ClientStore.acceptedDeviceList(account.handle, account: account, db) }
        guard accepted == nil else { return }
        let list = try signedList(
            after: nil, devices: [.init(deviceID: account.deviceID, deviceIdentityKey: account.device.publicKey.rawRepresentation)], identity,
            signer: account)
        do {
            try await publish(list, removing: [], on: connection)
        } catch let error as ClientError where error.kind == .refused(.deviceListRejected) {
            // Published before and the answer was lost: take the relay's list if it is ours.
            try await refreshDeviceList(account.handle, on: connection, account: account, forSending: false)
            return
        }
        try store.transaction { db in _ = try ClientStore.consider(list.wire, handle: account.handle, servedAccountKey: list.accountIdentityKey, account: account, db) }
    }

    private func signedList(
        after previous: SignedDeviceList?, devices: [DeviceListPayload.Entry], _ identity: AccountIdentity, signer account: AccountRecord
    ) throws -> SignedDeviceList {
        // The signer (the primary) is never left out of its own list: that would remove it.
        guard devices.contains(where: {
            $0.deviceID == account.deviceID && ConstantTime.equals($0.deviceIdentityKey, account.device.publicKey.rawRepresentation)
        }) else {
            throw ClientError(.protocolFailure, "refusing to sign a device list without this (the signing) device")
        }
        do {
            return try SignedDeviceList.next(
                after: previous, devices: devices, issuedAtMs: UInt64(max(1, now().timeIntervalSince1970 * 1000)), account: identity)
        } catch {
            throw ClientError(.invalidArgument, "cannot sign the device list: \(error)")
        }
    }

    /// The entries of the list that adds a linked device (`protocol/devices.md` section 5.3, P's step 8): the
    /// accepted list (or this device alone) with `linked`. The id in the new device's done message comes
    /// through the relay, so it is not trusted: it must not be this device's id, nor a listed id under another
    /// key, and a new id must be above every listed id (the relay assigns ids in increasing order); the relay
    /// must hold `linked` (id and key) as a current device (`relayDevices`, from `FetchDeviceList`); and the
    /// result must still hold `own`, the signer.
    /// - Throws: `ClientError(.protocolFailure)` when any check fails (linking stops; nothing is signed).
    static func entriesAddingLinkedDevice(
        accepted: SignedDeviceList?, own: DeviceListPayload.Entry, linked: DeviceListPayload.Entry, relayDevices: [WireDeviceInfo]
    ) throws -> [DeviceListPayload.Entry] {
        func refuse(_ why: String) -> ClientError {
            ClientError(.protocolFailure, "the new device's id \(linked.deviceID) \(why) (a faulty or hostile relay); linking stopped")
        }
        let current = accepted?.entries ?? [own]
        guard linked.deviceID != own.deviceID else { throw refuse("is this device's own id") }
        if let listed = current.first(where: { $0.deviceID == linked.deviceID }) {
            // A repeated link of the same device (its list was published before) is fine; another key is not.
            guard ConstantTime.equals(listed.deviceIdentityKey, linked.deviceIdentityKey) else { throw refuse("is listed with another key") }
        } else if let highest = (current.map(\.deviceID) + [own.deviceID]).max(), linked.deviceID <= highest {
            throw refuse("is not above every listed id (\(highest))")
        }
        guard relayDevices.contains(where: { $0.deviceID == linked.deviceID && ConstantTime.equals($0.deviceIdentityKey, linked.deviceIdentityKey) })
        else { throw refuse("is not a current device with that key at the relay") }
        let entries = current.filter { $0.deviceID != linked.deviceID } + [linked]
        guard entries.contains(where: { $0.deviceID == own.deviceID && ConstantTime.equals($0.deviceIdentityKey, own.deviceIdentityKey) }) else {
            throw ClientError(.protocolFailure, "this device is not in its own account's device list; linking stopped")
        }
        return entries
    }

    private func publish(_ list: SignedDeviceList, removing: [UInt32], on connection: RelayConnection) async throws {
        var publish = WirePublishDeviceList()
        publish.deviceList = list.wire
        publish.removeDeviceIds = removing
        _ = try await connection.request(.publishDeviceList(publish))
    }

    private func requirePrimary(_ account: AccountRecord, _ what: String) throws -> AccountIdentity {
        guard let identity = account.accountIdentity else {
            throw ClientError(.invalidArgument, "only the primary device of \(account.handle) (the one that created or recovered it) can \(what)")
        }
        return identity
    }

    // MARK: devices

    /// This account's devices: its list, fetched and verified, with the relay's registration times.
    /// - Throws: `ClientError` (`.relayUnreachable`, or the removed-device error).
    public func devices() async throws -> [DeviceSummary] {
        let account = try requireAccount()
        let result = try await withAuthenticatedConnection(account) { connection in
            try await self.refreshDeviceList(account.handle, on: connection, account: account, forSending: false) { self.logger.warning("\($0)") }
        }
        guard let list = try await store.dbQueue.read({ db in try ClientStore.acceptedDeviceList(account.handle, account: account, db) }) else {
            return []
        }
        let primary = list.entries.map(\.deviceID).min()
        return list.entries.map { entry in
            let registered = result.devices.first(where: { $0.deviceID == entry.deviceID })?.registeredAtMs
            return DeviceSummary(
                deviceID: entry.deviceID,
                fingerprint: (try? Ed25519PublicKey(rawRepresentation: entry.deviceIdentityKey)).map { DeviceFingerprint.of(identityKey: $0) } ?? "?",
                isThisDevice: entry.deviceID == account.deviceID, isPrimary: entry.deviceID == primary,
                registeredAt: registered.map { Date(timeIntervalSince1970: Double($0) / 1000) })
        }
    }

    /// Removes device `deviceID` from this account (primary only, `protocol/devices.md` section 6): signs the
    /// next list without it and publishes it with `remove_device_ids`; the relay deletes the device, its prekeys
    /// and queue, and contacts drop it when they next see the list.
    /// - Throws: `ClientError(.invalidArgument)` on a secondary device, for this device, or an id not in the list.
    public func removeDevice(_ deviceID: UInt32) async throws {
        let account = try requireAccount()
        let identity = try requirePrimary(account, "remove devices")
        guard deviceID != account.deviceID else {
            throw ClientError(.invalidArgument, "the primary device cannot remove itself; to stop using the account, run `flitz account delete`")
        }
        try await withAuthenticatedConnection(account) { connection in
            try await self.refreshDeviceList(account.handle, on: connection, account: account, forSending: false) { self.logger.warning("\($0)") }
            let accepted = try await self.store.dbQueue.read { db in try ClientStore.acceptedDeviceList(account.handle, account: account, db) }
            guard let accepted, accepted.entries.contains(where: { $0.deviceID == deviceID }) else {
                throw ClientError(.invalidArgument, "\(account.handle) has no device \(deviceID); `flitz devices` lists them")
            }
            let list = try self.signedList(after: accepted, devices: accepted.entries.filter { $0.deviceID != deviceID }, identity, signer: account)
            try await self.publish(list, removing: [deviceID], on: connection)
            try self.considerDeviceList(list.wire, handle: account.handle, servedAccountKey: list.accountIdentityKey, account: account, forSending: false)
        }
    }

    // MARK: account deletion

    /// Deletes the account at the relay (primary only, `protocol/devices.md` section 8): the handle, every
    /// device, queue and prekey. Locally only marks the account deleted (history stays readable in the store).
    /// - Throws: `ClientError(.invalidArgument)` on a secondary device; relay errors.
    public func deleteAccount() async throws {
        let account = try requireAccount()
        let identity = try requirePrimary(account, "delete the account")
        try await RelayConnection.with(url: account.relayURL, logger: logger) { connection in
            let nonce = try await self.authenticate(connection, account)
            var delete = WireDeleteAccount()
            delete.signature = try identity.deleteAccountSignature(nonce: nonce, handle: account.handle)
            _ = try await connection.request(.deleteAccount(delete))
        }
        try store.markAccount(deleted: true)
    }

    // MARK: linking, primary side

    /// Links a new device (primary only, `protocol/devices.md` section 5.3, P's steps): draws the link secret and
    /// passes its pairing code to `onCode` (show it; the new device runs `flitz init --link CODE`), waits for the
    /// new device's offer, asks `confirm` with the new device's fingerprint (the user compares it with the one
    /// the new device shows), sends the grant (a certificate over the new device key), waits for done, then
    /// signs and publishes the next list with the new device. Returns its device id and fingerprint.
    /// - Throws: `ClientError`: `.invalidArgument` (secondary device, refused confirmation), `.relayUnreachable`
    ///   (nothing within `timeout`), `.protocolFailure` (a pairing message that does not verify: wrong code or
    ///   tampering; linking stops).
    public func linkDevice(
        timeout: Duration = linkTimeout, pollInterval: Duration = linkPollInterval, onCode: @escaping @Sendable (String) -> Void,
        confirm: @escaping @Sendable (String) async -> Bool
    ) async throws -> (deviceID: UInt32, fingerprint: String) {
        let account = try requireAccount()
        let identity = try requirePrimary(account, "link devices")
        let secret = LinkSecret(random: random)
        let keys = LinkKeys(secret: secret)
        let deadline = ContinuousClock.now.advanced(by: timeout)
        onCode(secret.code)
        return try await withAuthenticatedConnection(account) { connection in
            let offer: LinkOffer
            do {
                offer = try LinkOffer(
                    opening: try await Self.linkTake(connection, keys, slot: 1, deadline: deadline, pollInterval: pollInterval), with: keys)
            } catch let error as FlitzProtocolError {
                throw ClientError(.protocolFailure, "the new device's offer does not verify (\(error)): a wrong code or tampering; linking stopped")
            }
            let fingerprint = DeviceFingerprint.of(identityKey: offer.deviceIdentityKey)
            guard await confirm(fingerprint) else { throw ClientError(.invalidArgument, "linking cancelled; nothing was added") }
            let grant = LinkGrant(certificate: identity.certify(offer.deviceIdentityKey), handle: account.handle)
            try await Self.linkPut(connection, keys, slot: 2, grant.sealed(with: keys))
            let done: LinkDone
            do {
                done = try LinkDone(
                    opening: try await Self.linkTake(connection, keys, slot: 3, deadline: deadline, pollInterval: pollInterval), with: keys,
                    expectedDeviceIdentityKey: offer.deviceIdentityKey)
            } catch let error as FlitzProtocolError {
                throw ClientError(.protocolFailure, "the new device's done message does not verify (\(error)); linking stopped")
            }
            let served = try await self.refreshDeviceList(account.handle, on: connection, account: account, forSending: false) {
                self.logger.warning("\($0)")
            }
            let accepted = try await self.store.dbQueue.read { db in try ClientStore.acceptedDeviceList(account.handle, account: account, db) }
            let entries = try Self.entriesAddingLinkedDevice(
                accepted: accepted, own: .init(deviceID: account.deviceID, deviceIdentityKey: account.device.publicKey.rawRepresentation),
                linked: .init(deviceID: done.deviceID, deviceIdentityKey: done.deviceIdentityKey.rawRepresentation),
                relayDevices: served.devices)
            let list = try self.signedList(after: accepted, devices: entries, identity, signer: account)
            try await self.publish(list, removing: [], on: connection)
            try self.considerDeviceList(list.wire, handle: account.handle, servedAccountKey: list.accountIdentityKey, account: account, forSending: false)
            return (done.deviceID, fingerprint)
        }
    }

    // MARK: linking, new device side

    /// Makes this empty home a new device of an existing account (`protocol/devices.md` section 5.3, D's steps):
    /// parses the pairing code shown by the primary device, makes a device identity key, passes its fingerprint
    /// to `onFingerprint` (the user compares it with the primary's), sends the offer, waits for the grant and
    /// checks it (the certificate over this key, under the account key it names), registers with
    /// `RegisterDevice`, sends done, and waits until the account's published list holds this device. The new
    /// device starts with no history. Returns the handle and this device's id.
    /// - Throws: `ClientError`: `.alreadyInitialized`, `.invalidArgument` (malformed code or relay address),
    ///   `.protocolFailure` (a grant that does not verify), `.relayUnreachable` (nothing within `timeout`), `.refused`.
    public func initializeByLinking(
        code: String, relayURL: String, timeout: Duration = linkTimeout, pollInterval: Duration = linkPollInterval,
        onFingerprint: @escaping @Sendable (String) -> Void
    ) async throws -> (handle: String, deviceID: UInt32) {
        guard try store.loadAccount() == nil else { throw ClientError(.alreadyInitialized, "\(home.path) already holds an account") }
        guard relayURL.hasPrefix("ws://") || relayURL.hasPrefix("wss://") else {
            throw ClientError(.invalidArgument, "the relay address must start with ws:// or wss://")
        }
        let secret: LinkSecret
        do {
            secret = try LinkSecret(code: code)
        } catch {
            throw ClientError(.invalidArgument, "\(error)")
        }
        // Keys of an earlier, interrupted attempt are not reused: the new code is a new pairing.
        try store.discardPendingRegistration()
        let keys = LinkKeys(secret: secret)
        let deadline = ContinuousClock.now.advanced(by: timeout)
        let deviceKey = Ed25519PrivateKey(random: random)
        onFingerprint(DeviceFingerprint.of(identityKey: deviceKey.publicKey))
        let random = self.random
        // Waiting for the grant happens on unauthenticated connections, which the relay closes after
        // `relay.authenticationTimeout` (30 s by default): once the offer is stored, a closed connection is
        // replaced by a new one (same keys, same link secret) until `timeout` (`protocol/devices.md` section 5.3).
        let offered = Mutex(false)
        var sealedGrant: Data?
        while sealedGrant == nil {
            do {
                sealedGrant = try await RelayConnection.with(url: relayURL, logger: logger) { connection -> Data in
                    if !offered.withLock({ $0 }) {
                        try await Self.linkPut(connection, keys, slot: 1, LinkOffer(deviceIdentityKey: deviceKey.publicKey).sealed(with: keys))
                        offered.withLock { $0 = true }
                    }
                    return try await Self.linkTake(connection, keys, slot: 2, deadline: deadline, pollInterval: pollInterval)
                }
            } catch let error as ClientError {
                let wasOffered = offered.withLock { $0 }
                guard error.kind == .relayUnreachable, wasOffered, ContinuousClock.now.advanced(by: pollInterval) < deadline else { throw error }
                logger.debug("connection closed while waiting for the grant; reconnecting", metadata: ["error": "\(error)"])
                try await Task.sleep(for: pollInterval)
            }
        }
        let grant: LinkGrant
        let device: DeviceIdentity
        do {
            grant = try LinkGrant(opening: sealedGrant ?? Data(), with: keys, expectedDeviceIdentityKey: deviceKey.publicKey)
            device = try DeviceIdentity(privateKey: deviceKey, certificate: grant.certificate)
        } catch {
            throw ClientError(.protocolFailure, "the primary device's grant does not verify (\(error)): a wrong code or tampering; linking stopped")
        }
        // The prekeys (21 ML-KEM key pairs among them) are made and stored before connecting: on a slow or busy
        // machine making them took longer than the relay's authentication timeout of the registering connection.
        let preKeys = RegistrationPreKeys(device: device, oneTimeCount: Self.preKeyBatchSize, oneTimeKEMCount: Self.kemPreKeyBatchSize, random: random)
        try store.saveNewAccount(
            AccountRecord(
                handle: grant.handle, relayURL: relayURL, deviceID: 0, accountIdentity: nil, accountIdentityKey: grant.accountIdentityKey,
                device: device, readReceipts: true),
            preKeys: preKeys, now: now())
        // Registration on a new connection: its challenge is fresh and its authentication timeout just started.
        let (handle, deviceID) = try await RelayConnection.with(url: relayURL, logger: logger) { connection -> (String, UInt32) in
            let challenge = try await Self.challenge(connection)
            var register = WireRegisterDevice()
            register.handle = grant.handle
            register.device = Self.wireKeys(device, preKeys)
            register.challengeSignature = device.privateKey.signature(for: SignedPayload.authentication(nonce: challenge.nonce, handle: grant.handle))
            let answer: WireFrame
            do {
                answer = try await connection.request(.registerDevice(register))
            } catch let error as ClientError where error.kind != .relayUnreachable {
                try self.store.discardPendingRegistration()
                throw error
            }
            guard case .registerResult(let result) = answer.body else { throw ClientError(.protocolFailure, "unexpected answer to registration") }
            try self.store.markRegistered(deviceID: result.deviceID, relayURL: relayURL)
            try await Self.linkPut(
                connection, keys, slot: 3, LinkDone(deviceID: result.deviceID, deviceIdentityKey: deviceKey.publicKey).sealed(with: keys))
            return (grant.handle, result.deviceID)
        }
        // Step 9: linked once the account's list, signed by its key, holds this device.
        let account = try requireAccount()
        try await withAuthenticatedConnection(account) { connection in
            while true {
                try await self.refreshDeviceList(account.handle, on: connection, account: account, forSending: false, checkRemoval: false)
                let listed = try await self.store.dbQueue.read { db in
                    try ClientStore.acceptedDeviceList(account.handle, account: account, db)?
                        .contains(deviceID: deviceID, identityKey: deviceKey.publicKey.rawRepresentation) ?? false
                }
                if listed { return }
                guard ContinuousClock.now.advanced(by: pollInterval) < deadline else {
                    throw ClientError(.relayUnreachable, "the primary device did not publish the new device list in time; run `flitz devices` later to check")
                }
                try await Task.sleep(for: pollInterval)
            }
        }
        return (handle, deviceID)
    }

    static func wireKeys(_ device: DeviceIdentity, _ preKeys: RegistrationPreKeys) -> WireDeviceKeys {
        var keys = WireDeviceKeys()
        keys.deviceIdentityKey = device.publicKey.rawRepresentation
        keys.deviceCertificateSignature = device.certificate.signature
        keys.signedPrekey = preKeys.signedPreKey.wire
        keys.oneTimePrekeys = preKeys.oneTimePreKeys.map(\.wire)
        keys.lastResortKemPrekey = preKeys.lastResortKEMPreKey.wire
        keys.oneTimeKemPrekeys = preKeys.oneTimeKEMPreKeys.map(\.wire)
        return keys
    }

    // MARK: rendezvous

    static func linkPut(_ connection: RelayConnection, _ keys: LinkKeys, slot: UInt32, _ message: Data) async throws {
        var put = WireLinkPut()
        put.rendezvousID = keys.rendezvousID
        put.slot = slot
        put.pairingMessage = message
        _ = try await connection.request(.linkPut(put))
    }

    /// Polls `LinkTake` every `pollInterval` until the slot holds a message or `deadline` passes.
    static func linkTake(
        _ connection: RelayConnection, _ keys: LinkKeys, slot: UInt32, deadline: ContinuousClock.Instant, pollInterval: Duration
    ) async throws -> Data {
        var take = WireLinkTake()
        take.rendezvousID = keys.rendezvousID
        take.slot = slot
        while true {
            guard case .linkMessage(let message) = try await connection.request(.linkTake(take)).body else {
                throw ClientError(.protocolFailure, "unexpected answer to a pairing request")
            }
            if !message.pairingMessage.isEmpty { return message.pairingMessage }
            guard ContinuousClock.now.advanced(by: pollInterval) < deadline else {
                throw ClientError(.relayUnreachable, "the other device did not answer in time; start linking again")
            }
            try await Task.sleep(for: pollInterval)
        }
    }
}
