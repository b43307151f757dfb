import AsyncHTTPClient
import Foundation
import Logging

// MARK: - Sender construction: the one place where the three providers' senders are built

/// The push credentials a relay reads at start (`protocol/push.md` 3 and 9), so that a bad key stops the relay
/// before it listens: the VAPID key (PEM) always; APNs and FCM when configured.
struct PushCredentials: Sendable {
    /// The relay's VAPID P-256 private key, PEM (`push.vapidKey`, or the one kept in the store).
    var vapidKeyPEM: String
    /// `push.apns.*`, when all four keys are set.
    var apns: APNsConfiguration?
    /// `push.fcm.serviceAccount` and `push.fcm.url`, when the service account is set.
    var fcm: FCMConfiguration?

    /// Credentials as given (nothing is checked).
    init(vapidKeyPEM: String, apns: APNsConfiguration?, fcm: FCMConfiguration?) {
        self.vapidKeyPEM = vapidKeyPEM
        self.apns = apns
        self.fcm = fcm
    }

    /// Reads `push.apns.keyFile` and `push.fcm.serviceAccount` when set, and checks them (through the senders'
    /// configuration types) and the VAPID key.
    /// - Throws: `ConfigurationError` naming the key whose file cannot be read or is not what it must be.
    init(_ configuration: PushConfiguration, vapidKeyPEM: String) throws(ConfigurationError) {
        self.vapidKeyPEM = vapidKeyPEM
        do {
            _ = try VAPIDKey(pem: vapidKeyPEM)
        } catch {
            throw ConfigurationError("push.vapidKey (--vapid-key): \(error.message)")
        }
        if configuration.apnsEnabled, let file = configuration.apnsKeyFile, let keyID = configuration.apnsKeyID,
            let teamID = configuration.apnsTeamID, let topic = configuration.apnsTopic
        {
            let pem = try Self.read(file, key: "push.apns.keyFile")
            apns = try APNsConfiguration(keyPEM: String(decoding: pem, as: UTF8.self), keyID: keyID, teamID: teamID, topic: topic, baseURL: configuration.apnsURL)
        }
        if let file = configuration.fcmServiceAccount {
            fcm = try FCMConfiguration(serviceAccountJSON: Self.read(file, key: "push.fcm.serviceAccount"), baseURL: configuration.fcmURL)
        }
    }

    /// The providers a device may register for: Web Push always, APNs and FCM when configured.
    var providers: Set<PushProviderKind> {
        var providers: Set<PushProviderKind> = [.webPush]
        if apns != nil { providers.insert(.apns) }
        if fcm != nil { providers.insert(.fcm) }
        return providers
    }

    private static func read(_ path: String, key: String) throws(ConfigurationError) -> Data {
        do {
            return try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ConfigurationError("cannot read the \(key) file \(path)")
        }
    }
}

/// Builds the relay's `PushSender`s (`protocol/push.md` 3) over the relay's one `httpClient`: Web Push always, APNs
/// and FCM when their credentials are configured. Called once when the push dispatcher starts.
/// - Throws: `ConfigurationError` when the VAPID key does not parse (checked at start already).
func makePushSenders(
    configuration: PushConfiguration, credentials: PushCredentials, httpClient: HTTPClient
) throws(ConfigurationError) -> [PushProviderKind: any PushSender] {
    var senders: [PushProviderKind: any PushSender] = [:]
    let vapidKey: VAPIDKey
    do {
        vapidKey = try VAPIDKey(pem: credentials.vapidKeyPEM)
    } catch {
        throw ConfigurationError("push.vapidKey: \(error.message)")
    }
    senders[.webPush] = WebPushSender(client: httpClient, vapidKey: vapidKey, subject: configuration.vapidSubject, timeout: configuration.timeout,
        allowPrivateEndpoints: configuration.allowPrivateEndpoints)
    if let apns = credentials.apns {
        senders[.apns] = APNsSender(configuration: apns, httpClient: httpClient, timeout: configuration.timeout)
    }
    if let fcm = credentials.fcm {
        senders[.fcm] = FCMSender(configuration: fcm, httpClient: httpClient, timeout: configuration.timeout)
    }
    return senders
}
