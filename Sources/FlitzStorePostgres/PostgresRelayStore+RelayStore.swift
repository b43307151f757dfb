import FlitzStore

/// `PostgresRelayStore` is a `RelayStore` (with `PushEndpointStore`, `ConversationStore` and `BlobMetadataStore`):
/// the methods are in `PostgresRelayStore+Core.swift`, `+Queue`, `+Conversations` (pg-core) and `+Push`, `+Blobs`
/// (pg-more). The conformance suite (Tests/FlitzStoreSQLiteTests) runs every store test on SQLite and on PostgreSQL.
extension PostgresRelayStore: RelayStore {}
