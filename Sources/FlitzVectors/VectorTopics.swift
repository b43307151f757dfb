/// Every topic this build verifies. Adding one: a generator function in `Sources/FlitzVectorGen` and a
/// `VectorTopic` here (`vectors/README.md`, "Adding a topic").
public enum VectorTopics {
    /// All topics, in the order the CLI lists them.
    public static let all: [VectorTopic] = [
        HKDFTopic.topic, X3DHTopic.topic, PQXDHTopic.topic, RatchetTopic.topic, SessionTopic.topic, ContentTopic.topic, FramesTopic.topic,
        FingerprintTopic.topic, DevicesTopic.topic, PushTopic.topic, ConversationsTopic.topic, AttachmentTopic.topic, CallTopic.topic,
    ]
}
