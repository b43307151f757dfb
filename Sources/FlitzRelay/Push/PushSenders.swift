import AsyncHTTPClient
import Foundation
import Logging

// MARK: - Sender construction: the one place where the three providers' senders are built

/// Builds the relay's `PushSender`s (`protocol/push.md` 3) over the relay's one `httpClient`: Web Push always, APNs
/// when its four `push.apns.*` keys are set, FCM when `push.fcm.serviceAccount` is set. Called once when the push
/// dispatcher starts.
/// - Parameter vapidKeyPEM: the relay's VAPID P-256 private key (PEM), from `push.vapidKey` or the database.
/// - Throws: `ConfigurationError` when a key or service account file cannot be read or parsed.
func makePushSenders(
    configuration: PushConfiguration, httpClient: HTTPClient, vapidKeyPEM: String, logger: Logger
) throws -> [PushProviderKind: any PushSender] {
    var senders: [PushProviderKind: any PushSender] = [:]
    let vapidKey: VAPIDKey
    do {
        vapidKey = try VAPIDKey(pem: vapidKeyPEM)
    } catch {
        throw ConfigurationError("push.vapidKey: \(error.message)")
    }
    senders[.webPush] = WebPushSender(client: httpClient, vapidKey: vapidKey, subject: configuration.vapidSubject, timeout: configuration.timeout)
    // TODO(integrator): APNs and FCM, once push-apnsfcm is merged (`PushDispatcher.availableProviders` already offers
    // them to RegisterPushEndpoint when configured; until then such a wake-up fails as "no apns sender is configured"):
    //   if configuration.apnsEnabled, let file = configuration.apnsKeyFile, let keyID = configuration.apnsKeyID,
    //       let teamID = configuration.apnsTeamID, let topic = configuration.apnsTopic {
    //       let pem = try readPushFile(file, key: "push.apns.keyFile")
    //       let apns = try APNsConfiguration(keyPEM: pem, keyID: keyID, teamID: teamID, topic: topic, baseURL: configuration.apnsURL)
    //       senders[.apns] = APNsSender(configuration: apns, httpClient: httpClient, timeout: configuration.timeout)
    //   }
    //   if let file = configuration.fcmServiceAccount {
    //       let fcm = try FCMConfiguration(serviceAccountJSON: Data(readPushFile(file, key: "push.fcm.serviceAccount").utf8), baseURL: configuration.fcmURL)
    //       senders[.fcm] = FCMSender(configuration: fcm, httpClient: httpClient, timeout: configuration.timeout)
    //   }
    // (readPushFile: String(contentsOfFile:) mapping failure to ConfigurationError("cannot read \(key) file \(path)").)
    // Better still, make the two configurations in buildRelay so a bad key stops the relay before it listens.
    _ = logger
    return senders
}
