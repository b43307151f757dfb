import Foundation

/// The relay's storage contract (`protocol/relay.md`, "Storage and durability").
///
/// Every implementation (SQLite by default, PostgreSQL later) must pass the same conformance suite.
/// Times are milliseconds since the Unix epoch (`Int64`), as on the wire. Every mutating method is one
/// durable transaction: when it returns, its effect survives a crash; when it throws, nothing changed.
/// Methods throw `StoreError` for refusals the caller must report and `StoreError.Code.backend` for
/// failures of the underlying database. Push endpoints and relay secrets are in `PushEndpointStore`; blob metadata
/// (`attachments.md` 4) in `BlobMetadataStore`.
public protocol RelayStore: PushEndpointStore, ConversationStore, BlobMetadataStore {
    /// Creates `handle` with its first device and returns the device id (1 for a new handle).
    /// - Throws: `StoreError.handleTaken` when the handle exists.
    func register(
        handle: String, accountIdentityKey: Data, recoveryCodeHash: Data, device: NewDevice, atMs: Int64
    ) async throws -> UInt32

    /// The account of `handle`, or nil.
    func account(handle: String) async throws -> AccountRecord?

    /// One device, or nil when it is not a current device.
    func device(_ address: DeviceAddress) async throws -> DeviceRecord?

    /// Replaces the identity of `handle` after the loss of every device (`relay.md`, "Recover").
    ///
    /// In one transaction: checks that the stored recovery code hash still equals
    /// `expectedRecoveryCodeHash` (the caller has already compared it in constant time; this guards a
    /// race), replaces the account identity key and recovery code hash, deletes every device with its
    /// prekeys and queue, marks their undelivered envelopes expired and queues an `expired` receipt to each
    /// such envelope's sender device, then registers `device` under a fresh device id.
    /// - Throws: `StoreError.recoveryFailed` for an unknown handle or a changed hash.
    func recover(
        handle: String, expectedRecoveryCodeHash: Data, accountIdentityKey: Data, newRecoveryCodeHash: Data,
        device: NewDevice, atMs: Int64, receiptExpiresAtMs: Int64
    ) async throws -> RecoveryResult

    /// Stores prekeys of `device` in one transaction: replaces the signed prekey and the last-resort KEM
    /// prekey when given, adds one-time X25519 and KEM prekeys. Every id must be greater than every id the
    /// device published before of the same kind (signed; one-time; KEM, whose one-time and last-resort
    /// ids share one space), so ids are never reused (`crypto.md`, "Prekey lifecycle"). Returns the stock.
    /// - Throws: `StoreError.unknownDevice`; `.preKeyIDReused`; `.preKeyStockFull` when a stock would
    ///   exceed its limit. Nothing is stored when it throws.
    func publishPreKeys(device: DeviceAddress, _ publication: PreKeyPublication, limits: PreKeyStockLimits) async throws -> PreKeyStock

    /// One-time prekeys (X25519 and KEM) in stock for `device`.
    func preKeyStock(device: DeviceAddress) async throws -> PreKeyStock

    /// The prekey bundle of every current device of `handle`, each with at most one one-time prekey and
    /// one KEM prekey (a one-time one, else the last-resort one). One-time ones are deleted in the same
    /// write transaction so that each is handed out at most once, even under concurrent fetches; the
    /// last-resort one is never deleted by a fetch. Nil for an unknown handle.
    func takePreKeyBundle(handle: String) async throws -> PreKeyBundleRecord?

    /// Stores a batch of envelopes from `sender` in one transaction (`relay.md`, "Submit").
    ///
    /// Returns one outcome per submission, in order. An envelope id already stored by the same sender
    /// device for the same recipient device is accepted again with its original times and not queued
    /// twice; the same id in any other combination is refused with `envelopeIDConflict`. Unknown
    /// recipient handles are refused with `unknownRecipient` (in a non-zero group: every new envelope of the
    /// group, so the sender's own copies are not stored either), devices that are not current with
    /// `staleDevice`. The route of each envelope is kept until `routeExpiresAtMs`.
    /// A recipient device that already has `queueLimit` undelivered envelopes queued gets no more
    /// (`queueFull`), so one sender cannot fill the relay's storage.
    /// - Throws: `StoreError(.unknownDevice)` when `sender` is no longer a device (nothing is stored).
    func submit(sender: DeviceAddress, envelopes: [EnvelopeSubmission], atMs: Int64, queueLimit: Int) async throws -> [SubmissionOutcome]

    /// A repeated `Register` or `Recover` whose answer was lost (`relay.md`, "Register"): when `handle`'s
    /// account identity key is `accountIdentityKey` and the device with `deviceIdentityKey` (32-byte Ed25519
    /// keys) is the one that `register` or `recover` created, still the handle's only device and no stored
    /// device list names another device, stores `recoveryCodeHash` (32 bytes) as the new recovery code hash
    /// and returns that device's id; otherwise returns nil and changes nothing. A linked device
    /// (`registerDevice`) never qualifies: it must not obtain the recovery code.
    func reissueRegistration(
        handle: String, accountIdentityKey: Data, deviceIdentityKey: Data, recoveryCodeHash: Data
    ) async throws -> UInt32?

    /// Queue items of `device` with a sequence greater than `afterSequence`, in queue order, at most
    /// `limit`. Never returns an envelope or receipt whose expiry is at or before `nowMs`, swept or not.
    func pendingItems(for device: DeviceAddress, afterSequence: Int64, nowMs: Int64, limit: Int) async throws -> [QueuedItem]

    /// The recipient `device` acknowledges envelopes and receipts (`relay.md`, "Acknowledge"), in one
    /// transaction.
    ///
    /// First every envelope id is checked: one that was never queued for `device` (no route with this
    /// recipient device) refuses the whole call with `.unknownEnvelope` (its `envelopeID` set) and nothing
    /// is applied. Then each envelope still queued is deleted (its ciphertext with it) and its route marked
    /// delivered; ids already delivered or expired are accepted without effect (idempotent). Receipts follow
    /// the rules of "Receipts across devices": one `delivered` receipt per (group, recipient handle), at the
    /// first acknowledgement by a device of that handle, to the submitting device and to every other device
    /// of the sender's handle with a copy in the group; none for an acknowledgement by a device of the
    /// sender's own handle. Receipts queued for `device` are deleted; unknown receipt ids are ignored.
    /// Returns the devices that received a receipt.
    func acknowledge(
        device: DeviceAddress, envelopeIDs: [Data], receiptIDs: [Data], atMs: Int64, receiptExpiresAtMs: Int64
    ) async throws -> Set<DeviceAddress>

    /// `device` reports envelopes addressed to it as seen (delivered or not). Nothing happens when the
    /// device's account has seen receipts off. Otherwise `seen` receipts are queued once per (group, reader
    /// handle), to the same devices as `delivered` (see `acknowledge`); a reader of the sender's own handle
    /// produces none; other ids are ignored. Returns the devices that received a receipt.
    func reportSeen(device: DeviceAddress, envelopeIDs: [Data], atMs: Int64, receiptExpiresAtMs: Int64) async throws -> Set<DeviceAddress>

    /// Expiry sweep (`relay.md`, "Expiry"): deletes every envelope whose expiry is at or before `nowMs`
    /// and queues an `expired` receipt (expiring at `receiptExpiresAtMs`) for each one never delivered;
    /// deletes receipts and routes past their expiry, account tombstones past retention and pairing
    /// messages past their lifetime.
    func sweep(nowMs: Int64, receiptExpiresAtMs: Int64) async throws -> SweepResult

    // MARK: Multi-device accounts (`devices.md`; `relay.md`, "Devices of an account")

    /// Registers a new device of the existing `handle` (`devices.md` 5.3 step 6) in one transaction.
    ///
    /// `accountIdentityKey` is the key the caller checked the device certificate under; the store refuses
    /// if it is no longer the handle's key (a recovery raced). A current device with the same device identity
    /// key makes this a retry: its id is returned and nothing changes. Otherwise the device gets the next
    /// device id (never reused).
    /// - Throws: `.unknownRecipient` (no such handle, or deleted); `.accountKeyChanged`; `.deviceRemoved` for a
    ///   device identity key that a device list removed from this account (under its current account key);
    ///   `.tooManyDevices` when the handle already has `maxDevices` current devices; `.preKeyIDReused`.
    func registerDevice(handle: String, accountIdentityKey: Data, device: NewDevice, atMs: Int64, maxDevices: Int) async throws -> UInt32

    /// Every current device of `handle`, by ascending id (empty for an unknown handle).
    func devices(handle: String) async throws -> [DeviceRecord]

    /// The newest device list published for `handle`, or nil.
    func deviceList(handle: String) async throws -> StoredDeviceList?

    /// Stores `list` as the newest device list of `handle` and removes `removeDeviceIDs`, in one transaction
    /// (`devices.md` 4.3 and 6). The caller has verified the signature and the payload's form (checks 1 to 5)
    /// under `accountIdentityKey`; the store checks that this is still the handle's key, that the version is
    /// greater than the stored list's, that every `entries` pair is a current device with that key, that
    /// `publisher` is listed, and that every id to remove is a current device absent from the list. Each
    /// removed device loses its prekeys and queue; envelopes still queued to it are marked expired with an
    /// `expired` receipt (at `atMs`, expiring at `receiptExpiresAtMs`) to their sender devices.
    /// - Throws: `.deviceListRejected` (detail says why) and stores nothing.
    func publishDeviceList(
        handle: String, accountIdentityKey: Data, list: StoredDeviceList, entries: [DeviceListEntry], publisher: DeviceAddress,
        removeDeviceIDs: [UInt32], atMs: Int64, receiptExpiresAtMs: Int64
    ) async throws -> DeviceRemovalResult

    /// `takePreKeyBundle` restricted to the listed devices when a device list is stored, and to
    /// `deviceIDs` when given (ids that are not served are left out). Each device served costs one one-time
    /// prekey of each kind. The record carries the stored device list.
    func takePreKeyBundle(handle: String, deviceIDs: [UInt32]?) async throws -> PreKeyBundleRecord?

    /// Deletes the account `handle` (`devices.md` section 8) in one transaction, if `accountIdentityKey` is
    /// still its key: envelopes queued to its devices become expired with `expired` receipts to senders on
    /// other handles; devices, prekeys, queues, device list, settings, block list, the envelopes it scheduled and
    /// the recovery code hash are deleted; a
    /// tombstone keeps the handle taken until `tombstoneUntilMs`.
    /// - Throws: `.unknownRecipient` for an unknown handle; `.accountKeyChanged`.
    func deleteAccount(handle: String, accountIdentityKey: Data, atMs: Int64, tombstoneUntilMs: Int64, receiptExpiresAtMs: Int64) async throws
        -> DeviceRemovalResult

    /// Sets the account-wide seen-receipts setting of `handle` (`UpdateAccountSettings`).
    /// - Throws: `.unknownRecipient`.
    func setSeenReceiptsOff(handle: String, _ off: Bool) async throws

    /// Stores one pairing message (`devices.md` 5.2) under `rendezvousID` (16 bytes) and `slot` (1 to 3), kept
    /// until `expiresAtMs`. A slot is written once: a slot already written (taken or not) and not past its
    /// expiry at `nowMs` refuses with `.linkSlotUsed`.
    func putLinkMessage(rendezvousID: Data, slot: UInt32, message: Data, nowMs: Int64, expiresAtMs: Int64) async throws

    /// Reads and deletes the message in a pairing slot; nil when nothing is there (never written, already
    /// taken, or expired at `nowMs`).
    func takeLinkMessage(rendezvousID: Data, slot: UInt32, nowMs: Int64) async throws -> Data?

    /// `submit` with the coverage check of `relay.md` "Submit" (when `checkCoverage`) in the same
    /// transaction: per group, the addressed devices of each known handle must equal its current devices
    /// (the listed ones when a list is stored), and the sender handle's current devices other than `sender`
    /// must be addressed whenever there are any. A group whose envelopes are all already stored for the same
    /// sender and recipients is not checked. On a mismatch nothing is stored and `.mismatched` lists, per
    /// handle, the missing and stale device ids.
    /// - Throws: `.unknownDevice` when `sender` is no longer a device.
    func submit(sender: DeviceAddress, envelopes: [EnvelopeSubmission], atMs: Int64, queueLimit: Int, checkCoverage: Bool) async throws
        -> SubmitBatchOutcome
}

/// A device of a handle: the routing address of a WebSocket connection and a queue.
public struct DeviceAddress: Hashable, Sendable, CustomStringConvertible {
    /// The handle (`relay.md`, "Handles").
    public var handle: String
    /// Relay-assigned device id, unique and never reused within the handle.
    public var deviceID: UInt32

    /// Creates an address.
    public init(handle: String, deviceID: UInt32) {
        self.handle = handle
        self.deviceID = deviceID
    }

    /// `handle/deviceID`, for logs at debug level.
    public var description: String { "\(handle)/\(deviceID)" }
}

/// A signed prekey: a 32-byte X25519 public key and the 64-byte signature of the device identity key over it.
public struct SignedPreKeyRecord: Hashable, Sendable {
    /// Client-chosen id.
    public var id: UInt32
    /// 32-byte X25519 public key.
    public var publicKey: Data
    /// 64-byte Ed25519 signature over `publicKey`.
    public var signature: Data

    /// Creates a record.
    public init(id: UInt32, publicKey: Data, signature: Data) {
        self.id = id
        self.publicKey = publicKey
        self.signature = signature
    }
}

/// A one-time prekey: a 32-byte X25519 public key, handed out at most once.
public struct OneTimePreKeyRecord: Hashable, Sendable {
    /// Client-chosen id, unique per device.
    public var id: UInt32
    /// 32-byte X25519 public key.
    public var publicKey: Data

    /// Creates a record.
    public init(id: UInt32, publicKey: Data) {
        self.id = id
        self.publicKey = publicKey
    }
}

/// A signed ML-KEM-1024 prekey: a 1568-byte encapsulation key and the device identity key's 64-byte
/// signature over its payload (`crypto.md`, "Keys"); the relay checks the signature, never uses the key.
public struct KEMPreKeyRecord: Hashable, Sendable {
    /// Client-chosen id, in the device's KEM id space.
    public var id: UInt32
    /// 1568-byte ML-KEM-1024 encapsulation key.
    public var publicKey: Data
    /// 64-byte Ed25519 signature.
    public var signature: Data
    /// Whether it is the device's last-resort KEM prekey (else one-time).
    public var lastResort: Bool

    /// Creates a record.
    public init(id: UInt32, publicKey: Data, signature: Data, lastResort: Bool) {
        self.id = id
        self.publicKey = publicKey
        self.signature = signature
        self.lastResort = lastResort
    }
}

/// What one `publishPreKeys` adds or replaces.
public struct PreKeyPublication: Hashable, Sendable {
    /// Replaces the current signed prekey when set.
    public var signedPreKey: SignedPreKeyRecord?
    /// One-time X25519 prekeys to add.
    public var oneTimePreKeys: [OneTimePreKeyRecord]
    /// Replaces the current last-resort KEM prekey when set (`lastResort` must be true).
    public var lastResortKEMPreKey: KEMPreKeyRecord?
    /// One-time KEM prekeys to add (`lastResort` false).
    public var oneTimeKEMPreKeys: [KEMPreKeyRecord]

    /// Creates a publication.
    public init(
        signedPreKey: SignedPreKeyRecord? = nil, oneTimePreKeys: [OneTimePreKeyRecord] = [],
        lastResortKEMPreKey: KEMPreKeyRecord? = nil, oneTimeKEMPreKeys: [KEMPreKeyRecord] = []
    ) {
        self.signedPreKey = signedPreKey
        self.oneTimePreKeys = oneTimePreKeys
        self.lastResortKEMPreKey = lastResortKEMPreKey
        self.oneTimeKEMPreKeys = oneTimeKEMPreKeys
    }
}

/// Most one-time prekeys a device may have in stock, per kind.
public struct PreKeyStockLimits: Hashable, Sendable {
    /// One-time X25519 prekeys.
    public var oneTime: Int
    /// One-time KEM prekeys.
    public var oneTimeKEM: Int

    /// No limit.
    public static let unlimited = PreKeyStockLimits(oneTime: .max, oneTimeKEM: .max)

    /// Creates limits.
    public init(oneTime: Int, oneTimeKEM: Int) {
        self.oneTime = oneTime
        self.oneTimeKEM = oneTimeKEM
    }
}

/// One-time prekeys in stock for a device.
public struct PreKeyStock: Hashable, Sendable {
    /// One-time X25519 prekeys.
    public var oneTime: Int
    /// One-time KEM prekeys.
    public var oneTimeKEM: Int

    /// Creates a count.
    public init(oneTime: Int, oneTimeKEM: Int) {
        self.oneTime = oneTime
        self.oneTimeKEM = oneTimeKEM
    }
}

/// The keys of a device being registered (already verified by the relay).
public struct NewDevice: Hashable, Sendable {
    /// 32-byte Ed25519 device identity key.
    public var deviceIdentityKey: Data
    /// 64-byte signature by the account identity key over the device certificate payload.
    public var deviceCertificateSignature: Data
    /// The device's signed prekey.
    public var signedPreKey: SignedPreKeyRecord
    /// Initial stock of one-time prekeys.
    public var oneTimePreKeys: [OneTimePreKeyRecord]
    /// The last-resort KEM prekey (the relay requires one; the store accepts none for its own tests).
    public var lastResortKEMPreKey: KEMPreKeyRecord?
    /// Initial stock of one-time KEM prekeys.
    public var oneTimeKEMPreKeys: [KEMPreKeyRecord]

    /// Creates a record.
    public init(
        deviceIdentityKey: Data, deviceCertificateSignature: Data, signedPreKey: SignedPreKeyRecord, oneTimePreKeys: [OneTimePreKeyRecord],
        lastResortKEMPreKey: KEMPreKeyRecord? = nil, oneTimeKEMPreKeys: [KEMPreKeyRecord] = []
    ) {
        self.deviceIdentityKey = deviceIdentityKey
        self.deviceCertificateSignature = deviceCertificateSignature
        self.signedPreKey = signedPreKey
        self.oneTimePreKeys = oneTimePreKeys
        self.lastResortKEMPreKey = lastResortKEMPreKey
        self.oneTimeKEMPreKeys = oneTimeKEMPreKeys
    }
}

/// An account as stored.
public struct AccountRecord: Hashable, Sendable {
    /// The handle.
    public var handle: String
    /// 32-byte Ed25519 account identity key.
    public var accountIdentityKey: Data
    /// 32-byte SHA-256 of the recovery code; the code itself is never stored.
    public var recoveryCodeHash: Data
    /// The id the next registered device gets.
    public var nextDeviceID: UInt32
    /// Creation time, milliseconds since the Unix epoch.
    public var createdAtMs: Int64
    /// Whether the account turned seen receipts off (`UpdateAccountSettings`).
    public var seenReceiptsOff: Bool

    /// Creates a record.
    public init(
        handle: String, accountIdentityKey: Data, recoveryCodeHash: Data, nextDeviceID: UInt32, createdAtMs: Int64, seenReceiptsOff: Bool = false
    ) {
        self.handle = handle
        self.accountIdentityKey = accountIdentityKey
        self.recoveryCodeHash = recoveryCodeHash
        self.nextDeviceID = nextDeviceID
        self.createdAtMs = createdAtMs
        self.seenReceiptsOff = seenReceiptsOff
    }
}

/// A current device as stored.
public struct DeviceRecord: Hashable, Sendable {
    /// Handle and device id.
    public var address: DeviceAddress
    /// 32-byte Ed25519 device identity key.
    public var deviceIdentityKey: Data
    /// 64-byte device certificate signature by the account identity key.
    public var deviceCertificateSignature: Data
    /// The current signed prekey.
    public var signedPreKey: SignedPreKeyRecord
    /// Registration time, milliseconds since the Unix epoch.
    public var createdAtMs: Int64

    /// Creates a record.
    public init(
        address: DeviceAddress, deviceIdentityKey: Data, deviceCertificateSignature: Data, signedPreKey: SignedPreKeyRecord, createdAtMs: Int64 = 0
    ) {
        self.address = address
        self.deviceIdentityKey = deviceIdentityKey
        self.deviceCertificateSignature = deviceCertificateSignature
        self.signedPreKey = signedPreKey
        self.createdAtMs = createdAtMs
    }
}

/// What `takePreKeyBundle` hands out.
public struct PreKeyBundleRecord: Hashable, Sendable {
    /// One entry of a bundle.
    public struct Device: Hashable, Sendable {
        /// The device.
        public var device: DeviceRecord
        /// A one-time prekey, now deleted from the stock; nil when the stock was empty.
        public var oneTimePreKey: OneTimePreKeyRecord?
        /// A one-time KEM prekey (now deleted from the stock), else the last-resort one; nil only for a
        /// device registered without one.
        public var kemPreKey: KEMPreKeyRecord?

        /// Creates an entry.
        public init(device: DeviceRecord, oneTimePreKey: OneTimePreKeyRecord?, kemPreKey: KEMPreKeyRecord? = nil) {
            self.device = device
            self.oneTimePreKey = oneTimePreKey
            self.kemPreKey = kemPreKey
        }
    }

    /// The handle.
    public var handle: String
    /// 32-byte account identity key.
    public var accountIdentityKey: Data
    /// The devices served, by ascending device id.
    public var devices: [Device]
    /// The handle's newest published device list, if any.
    public var deviceList: StoredDeviceList?

    /// Creates a record.
    public init(handle: String, accountIdentityKey: Data, devices: [Device], deviceList: StoredDeviceList? = nil) {
        self.handle = handle
        self.accountIdentityKey = accountIdentityKey
        self.devices = devices
        self.deviceList = deviceList
    }
}

/// One envelope to store (already validated for sizes by the relay).
public struct EnvelopeSubmission: Hashable, Sendable {
    /// 16-byte sender-chosen envelope id.
    public var envelopeID: Data
    /// The recipient device.
    public var recipient: DeviceAddress
    /// Opaque ciphertext, 1 to 65536 bytes.
    public var ciphertext: Data
    /// When the envelope expires, milliseconds since the Unix epoch.
    public var expiresAtMs: Int64
    /// Until when the route (ids, no ciphertext) is kept, milliseconds since the Unix epoch.
    public var routeExpiresAtMs: Int64
    /// `OutgoingEnvelope.group`: envelopes of one submit with the same non-zero group carry one message
    /// (receipts across devices, `relay.md`); 0 makes a group of one.
    public var group: UInt32
    /// Empty, or the 32-byte unsend token hash kept with the route (`conversations.md` 5).
    public var unsendTokenHash: Data
    /// 0, or the release time of a scheduled envelope (`conversations.md` 8): when after the submit's `atMs`, the
    /// envelope is held (not queued) until then; `expiresAtMs` and `routeExpiresAtMs` then count from it.
    public var notBeforeMs: Int64
    /// With `notBeforeMs`: the 32-byte cancel token hash.
    public var cancelTokenHash: Data
    /// With `notBeforeMs`: the lifetime after release, milliseconds (already capped by retention).
    public var ttlMs: Int64
    /// `OutgoingEnvelope.urgency`'s wire number, kept for a scheduled envelope's wake-up at release.
    public var urgency: Int

    /// Creates a submission.
    public init(
        envelopeID: Data, recipient: DeviceAddress, ciphertext: Data, expiresAtMs: Int64, routeExpiresAtMs: Int64, group: UInt32 = 0,
        unsendTokenHash: Data = Data(), notBeforeMs: Int64 = 0, cancelTokenHash: Data = Data(), ttlMs: Int64 = 0, urgency: Int = 0
    ) {
        self.envelopeID = envelopeID
        self.recipient = recipient
        self.ciphertext = ciphertext
        self.expiresAtMs = expiresAtMs
        self.routeExpiresAtMs = routeExpiresAtMs
        self.group = group
        self.unsendTokenHash = unsendTokenHash
        self.notBeforeMs = notBeforeMs
        self.cancelTokenHash = cancelTokenHash
        self.ttlMs = ttlMs
        self.urgency = urgency
    }
}

/// The outcome of one `EnvelopeSubmission`.
public enum SubmissionOutcome: Hashable, Sendable {
    /// Durable. `newlyQueued` is false for an idempotent resubmission.
    case accepted(acceptedAtMs: Int64, expiresAtMs: Int64, newlyQueued: Bool)
    /// Durable and held until its release (`conversations.md` 8): `acceptedAtMs` is the submit's time, `expiresAtMs`
    /// the expiry it will have if released on time. `newlyScheduled` is false for an idempotent resubmission.
    case scheduled(acceptedAtMs: Int64, expiresAtMs: Int64, newlyScheduled: Bool)
    /// Refused; nothing was stored for it.
    case rejected(StoreError.Code)
}

/// Kinds of receipts, numbered as on the wire (`ReceiptKind`).
public enum ReceiptKind: Int, Hashable, Sendable {
    /// The recipient device acknowledged the envelope.
    case delivered = 1
    /// The recipient reported the message as seen.
    case seen = 2
    /// The envelope expired, or its recipient device was removed, before delivery.
    case expired = 3
}

/// An envelope waiting in its recipient's queue.
public struct StoredEnvelope: Hashable, Sendable {
    /// 16-byte envelope id.
    public var envelopeID: Data
    /// The sender device.
    public var sender: DeviceAddress
    /// The recipient device id (the queue's device).
    public var recipientDeviceID: UInt32
    /// Acceptance time, milliseconds since the Unix epoch.
    public var acceptedAtMs: Int64
    /// Expiry, milliseconds since the Unix epoch.
    public var expiresAtMs: Int64
    /// Opaque ciphertext.
    public var ciphertext: Data

    /// Creates a record.
    public init(envelopeID: Data, sender: DeviceAddress, recipientDeviceID: UInt32, acceptedAtMs: Int64, expiresAtMs: Int64, ciphertext: Data) {
        self.envelopeID = envelopeID
        self.sender = sender
        self.recipientDeviceID = recipientDeviceID
        self.acceptedAtMs = acceptedAtMs
        self.expiresAtMs = expiresAtMs
        self.ciphertext = ciphertext
    }
}

/// A receipt waiting in its (envelope sender's) queue.
public struct StoredReceipt: Hashable, Sendable {
    /// 16-byte relay-assigned receipt id.
    public var receiptID: Data
    /// The envelope it is about.
    public var envelopeID: Data
    /// What happened.
    public var kind: ReceiptKind
    /// When it happened, milliseconds since the Unix epoch.
    public var atMs: Int64
    /// The envelope's recipient device.
    public var recipient: DeviceAddress

    /// Creates a record.
    public init(receiptID: Data, envelopeID: Data, kind: ReceiptKind, atMs: Int64, recipient: DeviceAddress) {
        self.receiptID = receiptID
        self.envelopeID = envelopeID
        self.kind = kind
        self.atMs = atMs
        self.recipient = recipient
    }
}

/// One item of a device's queue with its sequence (strictly increasing, never reused).
public struct QueuedItem: Hashable, Sendable {
    /// What is queued.
    public enum Content: Hashable, Sendable {
        /// An envelope for this device.
        case envelope(StoredEnvelope)
        /// A receipt for an envelope this device sent.
        case receipt(StoredReceipt)
    }

    /// Queue position; greater means queued later.
    public var sequence: Int64
    /// The item.
    public var content: Content

    /// Creates an item.
    public init(sequence: Int64, content: Content) {
        self.sequence = sequence
        self.content = content
    }
}

/// What `recover` did.
public struct RecoveryResult: Hashable, Sendable {
    /// The new device's id.
    public var deviceID: UInt32
    /// The device ids that were removed (their live connections must be closed).
    public var removedDeviceIDs: [UInt32]
    /// Sender devices that got an `expired` receipt.
    public var notifiedSenders: Set<DeviceAddress>

    /// Creates a result.
    public init(deviceID: UInt32, removedDeviceIDs: [UInt32], notifiedSenders: Set<DeviceAddress>) {
        self.deviceID = deviceID
        self.removedDeviceIDs = removedDeviceIDs
        self.notifiedSenders = notifiedSenders
    }
}

/// What `sweep` did.
public struct SweepResult: Hashable, Sendable {
    /// Envelopes whose ciphertext was deleted because they expired undelivered.
    public var expiredEnvelopes: Int
    /// Sender devices that got an `expired` receipt.
    public var notifiedSenders: Set<DeviceAddress>
    /// Receipts deleted past their expiry.
    public var purgedReceipts: Int
    /// Routes deleted past their retention.
    public var purgedRoutes: Int
    /// Account tombstones deleted past retention (their handles may be registered again).
    public var purgedTombstones: Int
    /// Pairing messages deleted past their lifetime.
    public var purgedLinkMessages: Int

    /// Creates a result.
    public init(
        expiredEnvelopes: Int, notifiedSenders: Set<DeviceAddress>, purgedReceipts: Int, purgedRoutes: Int, purgedTombstones: Int = 0,
        purgedLinkMessages: Int = 0
    ) {
        self.expiredEnvelopes = expiredEnvelopes
        self.notifiedSenders = notifiedSenders
        self.purgedReceipts = purgedReceipts
        self.purgedRoutes = purgedRoutes
        self.purgedTombstones = purgedTombstones
        self.purgedLinkMessages = purgedLinkMessages
    }
}

/// The one error type of FlitzStore and its implementations. `description` never contains keys,
/// ciphertext or recovery codes.
public struct StoreError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Integer-backed so that codes stay stable across versions.
    public struct Code: RawRepresentable, Hashable, Sendable {
        /// The stable integer value.
        public let rawValue: Int
        /// A code from its integer value.
        public init(rawValue: Int) { self.rawValue = rawValue }

        /// The handle is already registered.
        public static let handleTaken = Code(rawValue: 1)
        /// No such handle.
        public static let unknownRecipient = Code(rawValue: 2)
        /// The device is not a current device of its handle.
        public static let staleDevice = Code(rawValue: 3)
        /// No such device (for operations of a device on itself).
        public static let unknownDevice = Code(rawValue: 4)
        /// Unknown handle or recovery code hash changed.
        public static let recoveryFailed = Code(rawValue: 5)
        /// The envelope id is used by a different submission.
        public static let envelopeIDConflict = Code(rawValue: 6)
        /// The database failed.
        public static let backend = Code(rawValue: 7)
        /// The stored data is not what this build expects.
        public static let corrupt = Code(rawValue: 8)
        /// The recipient device already has the most envelopes the relay queues for one device.
        public static let queueFull = Code(rawValue: 9)
        /// A device's one-time prekey stock would exceed its limit.
        public static let preKeyStockFull = Code(rawValue: 10)
        /// A published prekey id is not greater than every id of its kind the device published before.
        public static let preKeyIDReused = Code(rawValue: 11)
        /// The handle already has the most devices an account may have.
        public static let tooManyDevices = Code(rawValue: 12)
        /// The handle's account identity key is not the one the caller checked signatures under.
        public static let accountKeyChanged = Code(rawValue: 13)
        /// A published device list was refused (`detail` says why).
        public static let deviceListRejected = Code(rawValue: 14)
        /// A pairing slot was already written.
        public static let linkSlotUsed = Code(rawValue: 15)
        /// An acknowledged envelope id was never queued for the acknowledging device.
        public static let unknownEnvelope = Code(rawValue: 16)
        /// The device identity key was removed from the account by a device list and may not register again.
        public static let deviceRemoved = Code(rawValue: 17)
        /// A block list would exceed its most handles.
        public static let blockListFull = Code(rawValue: 18)
        /// An unsend token hash already carried by `ConversationStoreLimits.maxEnvelopesPerUnsendToken` envelopes.
        public static let unsendTokenFull = Code(rawValue: 19)
    }

    /// What went wrong.
    public var code: Code
    /// A non-secret explanation.
    public var detail: String
    /// The envelope the error is about (`.unknownEnvelope`), if any.
    public var envelopeID: Data?

    /// Creates an error.
    public init(_ code: Code, _ detail: String = "") {
        self.code = code
        self.detail = detail
    }

    /// The code's name and the detail; never secret.
    public var description: String {
        let name: String = switch code {
        case .handleTaken: "handle taken"
        case .unknownRecipient: "unknown recipient"
        case .staleDevice: "stale device"
        case .unknownDevice: "unknown device"
        case .recoveryFailed: "recovery failed"
        case .envelopeIDConflict: "envelope id conflict"
        case .backend: "storage backend failure"
        case .corrupt: "corrupt stored data"
        case .queueFull: "queue full"
        case .preKeyStockFull: "prekey stock full"
        case .preKeyIDReused: "prekey id reused"
        case .tooManyDevices: "too many devices"
        case .accountKeyChanged: "account identity key changed"
        case .deviceListRejected: "device list rejected"
        case .linkSlotUsed: "pairing slot already written"
        case .unknownEnvelope: "unknown envelope"
        case .deviceRemoved: "device removed"
        case .blockListFull: "block list full"
        case .unsendTokenFull: "unsend token full"
        default: "store error \(code.rawValue)"
        }
        return detail.isEmpty ? "StoreError: \(name)" : "StoreError: \(name) (\(detail))"
    }
}

/// A signed device list as stored (`devices.md` 4.1): the payload bytes, the account identity key's
/// signature and the payload's version.
public struct StoredDeviceList: Hashable, Sendable {
    /// `DeviceListPayload` bytes, 69 + 36n.
    public var payload: Data
    /// 64-byte Ed25519 signature by the account identity key over `payload`.
    public var signature: Data
    /// The payload's version (bytes 51..<59), kept to compare with the next list.
    public var version: UInt64

    /// Creates a record.
    public init(payload: Data, signature: Data, version: UInt64) {
        self.payload = payload
        self.signature = signature
        self.version = version
    }
}

/// One `(device id, device identity key)` entry of a device list.
public struct DeviceListEntry: Hashable, Sendable {
    /// Relay-assigned device id.
    public var deviceID: UInt32
    /// 32-byte Ed25519 device identity key.
    public var deviceIdentityKey: Data

    /// Creates an entry.
    public init(deviceID: UInt32, deviceIdentityKey: Data) {
        self.deviceID = deviceID
        self.deviceIdentityKey = deviceIdentityKey
    }
}

/// What a removal of devices did (`publishDeviceList`, `deleteAccount`).
public struct DeviceRemovalResult: Hashable, Sendable {
    /// The device ids removed (their live connections must be closed).
    public var removedDeviceIDs: [UInt32]
    /// Sender devices that got an `expired` receipt (to wake).
    public var notifiedSenders: Set<DeviceAddress>

    /// Creates a result.
    public init(removedDeviceIDs: [UInt32], notifiedSenders: Set<DeviceAddress>) {
        self.removedDeviceIDs = removedDeviceIDs
        self.notifiedSenders = notifiedSenders
    }
}

/// How one handle's addressed devices differ from its current devices (`Error.device_mismatches`).
public struct DeviceMismatchRecord: Hashable, Sendable {
    /// The handle.
    public var handle: String
    /// Current devices not addressed, ascending.
    public var missingDeviceIDs: [UInt32]
    /// Addressed devices that are not current, ascending.
    public var staleDeviceIDs: [UInt32]

    /// Creates a record.
    public init(handle: String, missingDeviceIDs: [UInt32], staleDeviceIDs: [UInt32]) {
        self.handle = handle
        self.missingDeviceIDs = missingDeviceIDs
        self.staleDeviceIDs = staleDeviceIDs
    }
}

/// What a `submit` with a coverage check did.
public enum SubmitBatchOutcome: Hashable, Sendable {
    /// Checked (or not checked); one outcome per submission, in order.
    case stored([SubmissionOutcome])
    /// A group did not cover the current devices: nothing was stored. Sorted by handle.
    case mismatched([DeviceMismatchRecord])
}

extension RelayStore {
    /// `publishPreKeys` of X25519 prekeys only, with a limit on one-time ones; returns their stock.
    public func publishPreKeys(
        device: DeviceAddress, signedPreKey: SignedPreKeyRecord?, oneTimePreKeys: [OneTimePreKeyRecord], stockLimit: Int
    ) async throws -> Int {
        try await publishPreKeys(
            device: device, PreKeyPublication(signedPreKey: signedPreKey, oneTimePreKeys: oneTimePreKeys),
            limits: PreKeyStockLimits(oneTime: stockLimit, oneTimeKEM: .max)
        ).oneTime
    }

    /// Number of one-time X25519 prekeys in stock for `device`.
    public func oneTimePreKeyCount(device: DeviceAddress) async throws -> Int {
        try await preKeyStock(device: device).oneTime
    }

    /// `publishPreKeys` without a stock limit.
    public func publishPreKeys(device: DeviceAddress, signedPreKey: SignedPreKeyRecord?, oneTimePreKeys: [OneTimePreKeyRecord]) async throws -> Int {
        try await publishPreKeys(device: device, signedPreKey: signedPreKey, oneTimePreKeys: oneTimePreKeys, stockLimit: .max)
    }

    /// `submit` without a queue limit.
    public func submit(sender: DeviceAddress, envelopes: [EnvelopeSubmission], atMs: Int64) async throws -> [SubmissionOutcome] {
        try await submit(sender: sender, envelopes: envelopes, atMs: atMs, queueLimit: .max)
    }
}

// MARK: Push endpoints (`protocol/push.md` 4, 5 and 7)

/// A device's push endpoint as stored (`protocol/push.md` 4). Never shown to another user and never logged.
public struct StoredPushEndpoint: Hashable, Sendable {
    /// The push service: `webpush`, `apns` or `fcm` (the metric label, `PushProviderKind.rawValue`).
    public var provider: String
    /// Web Push: the endpoint URL; APNs: the device token (lowercase hex); FCM: the registration token. Nil once
    /// the relay dropped the endpoint as dead (`push.md` 7: only provider, time and reason are kept).
    public var endpoint: String?
    /// Web Push only: the 65-byte uncompressed P-256 public key (`p256dh`); empty otherwise and once dropped.
    public var p256dh: Data
    /// Web Push only: the 16-byte authentication secret; empty otherwise and once dropped.
    public var authSecret: Data
    /// APNs only: background pushes instead of alerts.
    public var apnsBackground: Bool
    /// When the device registered it, milliseconds since the Unix epoch.
    public var registeredAtMs: Int64
    /// Last wake-up the push service accepted, milliseconds since the Unix epoch; 0 = none.
    public var lastWakeAtMs: Int64
    /// Wake-ups the push service accepted for this endpoint.
    public var wakesSent: UInt64
    /// Why the last attempt failed or why the endpoint was dropped; empty after a success. Never a key or payload.
    public var lastFailure: String
    /// When the relay dropped the endpoint as dead, milliseconds since the Unix epoch; 0 = live.
    public var droppedAtMs: Int64
    /// End of the device's `urgent` coalescing window (`push.md` 5), milliseconds since the Unix epoch; the
    /// window is open while this is after now, closed at 0.
    public var urgentWindowUntilMs: Int64

    /// Whether the relay may wake through it (set and not dropped).
    public var isLive: Bool { endpoint != nil && droppedAtMs == 0 }

    /// Creates a record.
    public init(
        provider: String, endpoint: String?, p256dh: Data = Data(), authSecret: Data = Data(), apnsBackground: Bool = false,
        registeredAtMs: Int64, lastWakeAtMs: Int64 = 0, wakesSent: UInt64 = 0, lastFailure: String = "", droppedAtMs: Int64 = 0,
        urgentWindowUntilMs: Int64 = 0
    ) {
        self.provider = provider
        self.endpoint = endpoint
        self.p256dh = p256dh
        self.authSecret = authSecret
        self.apnsBackground = apnsBackground
        self.registeredAtMs = registeredAtMs
        self.lastWakeAtMs = lastWakeAtMs
        self.wakesSent = wakesSent
        self.lastFailure = lastFailure
        self.droppedAtMs = droppedAtMs
        self.urgentWindowUntilMs = urgentWindowUntilMs
    }
}

/// The outcome of `RelayStore.decideUrgentWake` (`protocol/push.md` 5 step 2).
public enum UrgentWakeDecision: Hashable, Sendable {
    /// The window was closed and is now open until the given time: wake through this endpoint.
    case wake(StoredPushEndpoint)
    /// The window is open: no wake-up; counted as coalesced for this provider (`webpush`, `apns`, `fcm`).
    case coalesced(provider: String)
    /// The device has no live endpoint.
    case noEndpoint
}

/// Push endpoints and the relay's own push secrets (`protocol/push.md`). Every implementation of `RelayStore`
/// conforms; the relay calls these from its push dispatcher, never in the path of a `Submit` reply.
public protocol PushEndpointStore: Sendable {
    /// Sets the push endpoint of `device` (`push.md` 4), replacing any earlier one, also a dropped one. The same live
    /// endpoint again keeps its counters and window and changes only `registeredAtMs` (and the keys); another
    /// endpoint starts with zero counters, no failure and a closed window. `endpoint.endpoint` must not be nil.
    /// Returns the stored record.
    /// - Throws: `.unknownDevice` when `device` is not a current device.
    func setPushEndpoint(device: DeviceAddress, _ endpoint: StoredPushEndpoint) async throws -> StoredPushEndpoint

    /// Deletes the endpoint of `device` (live or dropped); nothing happens when there is none.
    func removePushEndpoint(device: DeviceAddress) async throws

    /// The endpoint of `device` (live or dropped), or nil.
    func pushEndpoint(device: DeviceAddress) async throws -> StoredPushEndpoint?

    /// The coalescing decision for one `urgent` envelope (`push.md` 5 step 2), atomically: when `device` has a live
    /// endpoint whose window ends at or before `nowMs`, opens it until `windowUntilMs` and returns `.wake`; when the
    /// window is open, `.coalesced`; else `.noEndpoint`. Two callers racing (also on two relay nodes sharing the
    /// database) never both get `.wake` for one window.
    func decideUrgentWake(device: DeviceAddress, nowMs: Int64, windowUntilMs: Int64) async throws -> UrgentWakeDecision

    /// Closes the window of `device` (`push.md` 5 step 3, and after a skipped `urgent` wake-up). With
    /// `onlyIfUntilMs`, only when the window still ends then (a skip must not close a window opened later).
    func closeUrgentWindow(device: DeviceAddress, onlyIfUntilMs: Int64?) async throws

    /// A push service accepted a wake-up to `endpoint` of `device` at `atMs`: counts it and clears the last
    /// failure. Nothing happens when the device's endpoint changed meanwhile.
    func recordPushAccepted(device: DeviceAddress, endpoint: String, atMs: Int64) async throws

    /// A wake-up to `endpoint` of `device` failed for good: stores `reason` (no key, endpoint or payload) as the last
    /// failure. Nothing happens when the device's endpoint changed meanwhile.
    func recordPushFailed(device: DeviceAddress, endpoint: String, reason: String) async throws

    /// Drops `endpoint` of `device` as dead (`push.md` 7): forgets the endpoint and keys, keeps the provider, sets
    /// `droppedAtMs` and the reason, closes the window. Returns false (and changes nothing) when the device's
    /// endpoint is no longer `endpoint` (re-registered or removed meanwhile).
    func dropPushEndpoint(device: DeviceAddress, endpoint: String, reason: String, atMs: Int64) async throws -> Bool

    /// Whether envelope `envelopeID` (16 bytes) is still queued for `device` and expires after `nowMs`
    /// (`push.md` 5: the check just before sending).
    func isEnvelopeQueued(envelopeID: Data, device: DeviceAddress, nowMs: Int64) async throws -> Bool

    /// The relay secret `name` (e.g. `push.vapidKey`, a PEM private key): the stored one, else `candidate`, stored
    /// now. Atomic: relays racing on one database all get the first stored value.
    func relaySecret(named name: String, orStore candidate: Data, atMs: Int64) async throws -> Data
}
