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
    // TODO(integrator): Web Push, once push-webpush is merged: senders[.webPush] = WebPushSender(...).
    // TODO(integrator): APNs and FCM, once push-apnsfcm is merged:
    //   if configuration.apnsEnabled { senders[.apns] = try APNsSender(...) }
    //   if configuration.fcmEnabled { senders[.fcm] = try FCMSender(...) }
    _ = (configuration, httpClient, vapidKeyPEM, logger)
    return senders
}
