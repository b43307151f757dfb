import FlitzCrypto
import FlitzStore
import FlitzWire
import Foundation

/// The relay side of multi-device accounts (`protocol/devices.md`; `protocol/relay.md`, "Devices of an
/// account"): registering further devices, signed device lists and device removal, account deletion and
/// settings, and the pairing rendezvous. The relay checks signatures only to keep honest mistakes out;
/// clients verify device lists themselves.
extension Relay {
    /// Dispatches the multi-device frames allowed before authentication (`RegisterDevice`, `LinkPut`,
    /// `LinkTake`); nil for any other body.
    /// - Throws: `RelayError` for a refused request.
    func handleUnauthenticatedDeviceFrame(requestID: UInt64, body: WireFrame.OneOf_Body, nonce: Data) async throws(RelayError) -> WireFrame? {
        switch body {
        case .registerDevice(let request):
            return WireFrame(requestID: requestID, body: .registerResult(try await registerDevice(request, nonce: nonce)))
        case .linkPut(let request):
            try await linkPut(request)
            return WireFrame(requestID: requestID, body: .ok(WireOk()))
        case .linkTake(let request):
            return WireFrame(requestID: requestID, body: .linkMessage(try await linkTake(request)))
        default:
            return nil
        }
    }

    /// Dispatches the multi-device frames of an authenticated `device` (whose connection's challenge nonce
    /// is `nonce`); nil for any other body.
    /// - Throws: `RelayError` for a refused request.
    func handleAuthenticatedDeviceFrame(
        requestID: UInt64, body: WireFrame.OneOf_Body, device: DeviceAddress, nonce: Data
    ) async throws(RelayError) -> WireFrame? {
        switch body {
        case .publishDeviceList(let request):
            try await publishDeviceList(request, device: device)
            return WireFrame(requestID: requestID, body: .ok(WireOk()))
        case .fetchDeviceList(let request):
            return WireFrame(requestID: requestID, body: .deviceListResult(try await fetchDeviceList(request)))
        case .deleteAccount(let request):
            try await deleteAccount(request, device: device, nonce: nonce)
            return WireFrame(requestID: requestID, body: .ok(WireOk()))
        case .updateAccountSettings(let request):
            try await updateAccountSettings(request, device: device)
            return WireFrame(requestID: requestID, body: .ok(WireOk()))
        case .linkPut, .linkTake:
            return try await handleUnauthenticatedDeviceFrame(requestID: requestID, body: body, nonce: nonce)
        default:
            return nil
        }
    }

    /// RegisterDevice (`relay.md`, "RegisterDevice"; `devices.md` 5.3 step 6): a new device of an existing
    /// handle, certified by the handle's current account identity key. `RegisterResult.recovery_code` is empty.
    func registerDevice(_ request: WireRegisterDevice, nonce: Data) async throws(RelayError) -> WireRegisterResult {
        let unknown = RelayError(.unknownRecipient, "no such handle")
        guard Handle.isValid(request.handle) else { throw unknown }
        let account: AccountRecord
        do {
            guard let found = try await store.account(handle: request.handle) else { throw unknown }
            account = found
        } catch {
            throw internalError(error)
        }
        let device = try validatedDevice(request.device, accountIdentityKey: account.accountIdentityKey)
        try verifyChallenge(request.challengeSignature, handle: request.handle, deviceIdentityKey: device.deviceIdentityKey, nonce: nonce)
        let deviceID: UInt32
        do {
            deviceID = try await store.registerDevice(
                handle: request.handle, accountIdentityKey: account.accountIdentityKey, device: device, atMs: clock.nowMs(),
                maxDevices: WireConstants.maxDevicesPerAccount)
        } catch let error as StoreError {
            switch error.code {
            case .unknownRecipient: throw unknown
            case .accountKeyChanged: throw RelayError(.invalidSignature, "the device certificate is not under the handle's current account identity key")
            case .tooManyDevices: throw RelayError(.tooManyDevices, "an account has at most \(WireConstants.maxDevicesPerAccount) devices")
            case .deviceRemoved:
                throw RelayError(.invalidSignature, "this device identity key was removed from the account; link with a new device key")
            case .preKeyIDReused: throw RelayError(.prekeyIDReused, error.detail)
            default: throw internalError(error)
            }
        } catch {
            throw internalError(error)
        }
        logger.debug("registered device", metadata: ["relay.handle": "\(request.handle)", "relay.device": "\(deviceID)"])
        var result = WireRegisterResult()
        result.deviceID = deviceID
        return result
    }

    /// PublishDeviceList (`relay.md`, "PublishDeviceList"; `devices.md` 4.3 and 6): checks the list under
    /// the handle's account identity key, stores it and removes `remove_device_ids` in one transaction, then
    /// closes the removed devices' connections and wakes the senders told `EXPIRED`.
    func publishDeviceList(_ request: WirePublishDeviceList, device: DeviceAddress) async throws(RelayError) {
        guard request.hasDeviceList else { throw RelayError(.malformedFrame, "a device list is required") }
        let signed = request.deviceList
        guard signed.signature.count == WireConstants.signatureLength else {
            throw RelayError(.malformedFrame, "a device list signature is 64 bytes")
        }
        guard request.removeDeviceIds.count <= WireConstants.maxDevicesPerAccount else {
            throw RelayError(.invalidArgument, "at most \(WireConstants.maxDevicesPerAccount) devices to remove")
        }
        let payload: DeviceListPayload
        do {
            payload = try DeviceListPayload(decoding: signed.payload)
        } catch {
            throw RelayError(.deviceListRejected, error.description)
        }
        let account: AccountRecord
        do {
            guard let found = try await store.account(handle: device.handle) else { throw RelayError(.authenticationFailed, "this device was removed") }
            account = found
        } catch {
            throw internalError(error)
        }
        guard payload.accountIdentityKey == account.accountIdentityKey else {
            throw RelayError(.deviceListRejected, "the list names another account identity key than the handle's current one")
        }
        guard let key = try? Ed25519PublicKey(rawRepresentation: account.accountIdentityKey), key.isValidSignature(signed.signature, for: signed.payload)
        else { throw RelayError(.invalidSignature, "the device list signature does not verify under the account identity key") }
        let now = clock.nowMs()
        let result: DeviceRemovalResult
        do {
            result = try await store.publishDeviceList(
                handle: device.handle, accountIdentityKey: account.accountIdentityKey,
                list: StoredDeviceList(payload: signed.payload, signature: signed.signature, version: payload.version),
                entries: payload.entries.map { DeviceListEntry(deviceID: $0.deviceID, deviceIdentityKey: $0.deviceIdentityKey) },
                publisher: device, removeDeviceIDs: request.removeDeviceIds, atMs: now, receiptExpiresAtMs: now + retentionMs)
        } catch let error as StoreError where error.code == .deviceListRejected {
            throw RelayError(.deviceListRejected, error.detail)
        } catch {
            throw internalError(error)
        }
        registry.close(result.removedDeviceIDs.map { DeviceAddress(handle: device.handle, deviceID: $0) }, reason: "device removed from its account")
        registry.wake(result.notifiedSenders)
        logger.debug("device list published", metadata: [
            "relay.handle": "\(device.handle)", "relay.version": "\(payload.version)", "relay.removed": "\(result.removedDeviceIDs)",
        ])
    }

    /// FetchDeviceList (`relay.md`, "FetchDeviceList"): the stored list and every current device; takes no prekey.
    func fetchDeviceList(_ request: WireFetchDeviceList) async throws(RelayError) -> WireDeviceListResult {
        let unknown = RelayError(.unknownRecipient, "no such handle")
        guard Handle.isValid(request.handle) else { throw unknown }
        do {
            guard let account = try await store.account(handle: request.handle) else { throw unknown }
            let list = try await store.deviceList(handle: request.handle)
            let devices = try await store.devices(handle: request.handle)
            var result = WireDeviceListResult()
            result.handle = request.handle
            result.accountIdentityKey = account.accountIdentityKey
            if let list { result.deviceList = Self.wireDeviceList(list) }
            result.devices = devices.map { device in
                var info = WireDeviceInfo()
                info.deviceID = device.address.deviceID
                info.deviceIdentityKey = device.deviceIdentityKey
                info.deviceCertificateSignature = device.deviceCertificateSignature
                info.registeredAtMs = device.createdAtMs
                return info
            }
            return result
        } catch {
            throw internalError(error)
        }
    }

    /// DeleteAccount (`relay.md`, "DeleteAccount"; `devices.md` section 8): the account identity key's
    /// signature over this connection's nonce, then one transaction; afterwards every connection of the
    /// handle is closed (this one after its `Ok`).
    func deleteAccount(_ request: WireDeleteAccount, device: DeviceAddress, nonce: Data) async throws(RelayError) {
        guard request.signature.count == WireConstants.signatureLength else {
            throw RelayError(.malformedFrame, "the account deletion signature is 64 bytes")
        }
        let account: AccountRecord
        do {
            guard let found = try await store.account(handle: device.handle) else { throw RelayError(.authenticationFailed, "this device was removed") }
            account = found
        } catch {
            throw internalError(error)
        }
        let signed = SignedPayload.deleteAccount(accountIdentityKey: account.accountIdentityKey, nonce: nonce, handle: device.handle)
        guard let key = try? Ed25519PublicKey(rawRepresentation: account.accountIdentityKey), key.isValidSignature(request.signature, for: signed)
        else { throw RelayError(.invalidSignature, "the account deletion signature does not verify under the account identity key") }
        let now = clock.nowMs()
        let result: DeviceRemovalResult
        do {
            result = try await store.deleteAccount(
                handle: device.handle, accountIdentityKey: account.accountIdentityKey, atMs: now, tombstoneUntilMs: now + retentionMs,
                receiptExpiresAtMs: now + retentionMs)
        } catch let error as StoreError where error.code == .accountKeyChanged {
            throw RelayError(.invalidSignature, "the account identity key changed meanwhile")
        } catch let error as StoreError where error.code == .unknownRecipient {
            throw RelayError(.authenticationFailed, "this device was removed")
        } catch {
            throw internalError(error)
        }
        registry.close(result.removedDeviceIDs.map { DeviceAddress(handle: device.handle, deviceID: $0) }, reason: "account deleted")
        // The account's blobs and upload capabilities go with it (attachments.md 4.5).
        await purgeBlobs(handle: device.handle)
        registry.wake(result.notifiedSenders)
        logger.debug("account deleted", metadata: ["relay.handle": "\(device.handle)"])
    }

    /// UpdateAccountSettings (`relay.md`, "UpdateAccountSettings"): the account-wide seen-receipts setting.
    func updateAccountSettings(_ request: WireUpdateAccountSettings, device: DeviceAddress) async throws(RelayError) {
        do {
            try await store.setSeenReceiptsOff(handle: device.handle, request.seenReceiptsOff)
        } catch let error as StoreError where error.code == .unknownRecipient {
            throw RelayError(.authenticationFailed, "this device was removed")
        } catch {
            throw internalError(error)
        }
    }

    /// LinkPut (`relay.md`, "LinkPut and LinkTake"; `devices.md` 5.2): stores one pairing message, each slot once.
    func linkPut(_ request: WireLinkPut) async throws(RelayError) {
        try Self.checkRendezvous(request.rendezvousID, slot: request.slot)
        guard WireConstants.linkMessageBytes.contains(request.pairingMessage.count) else {
            throw RelayError(.invalidArgument, "a pairing message is 1 to \(WireConstants.linkMessageBytes.upperBound) bytes")
        }
        let now = clock.nowMs()
        do {
            try await store.putLinkMessage(
                rendezvousID: request.rendezvousID, slot: request.slot, message: request.pairingMessage, nowMs: now,
                expiresAtMs: now + configuration.linkLifetime.wholeMilliseconds)
        } catch let error as StoreError where error.code == .linkSlotUsed {
            throw RelayError(.invalidArgument, "this pairing slot was already written")
        } catch {
            throw internalError(error)
        }
    }

    /// LinkTake: reads and deletes a pairing message; an empty `LinkMessage` when nothing is there.
    func linkTake(_ request: WireLinkTake) async throws(RelayError) -> WireLinkMessage {
        try Self.checkRendezvous(request.rendezvousID, slot: request.slot)
        do {
            var reply = WireLinkMessage()
            reply.pairingMessage = try await store.takeLinkMessage(rendezvousID: request.rendezvousID, slot: request.slot, nowMs: clock.nowMs()) ?? Data()
            return reply
        } catch {
            throw internalError(error)
        }
    }

    private static func checkRendezvous(_ id: Data, slot: UInt32) throws(RelayError) {
        guard id.count == WireConstants.rendezvousIDLength else {
            throw RelayError(.invalidArgument, "a rendezvous id is \(WireConstants.rendezvousIDLength) bytes")
        }
        guard WireConstants.linkSlots.contains(slot) else { throw RelayError(.invalidArgument, "pairing slots are 1 to 3") }
    }

    /// A stored list as sent on the wire.
    static func wireDeviceList(_ list: StoredDeviceList) -> WireSignedDeviceList {
        var wire = WireSignedDeviceList()
        wire.payload = list.payload
        wire.signature = list.signature
        return wire
    }
}
