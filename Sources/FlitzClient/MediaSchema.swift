import GRDB

extension ClientStore {
    /// `v9-attachments`: one row per media message (`protocol/attachments.md` section 3), shared by the media code
    /// (which fills it), history search (which indexes `file_name` and filters by `kind`) and the passphrase
    /// work (`pointer` holds the attachment key and goes through `sealSecret`). Rows go with their message.
    static func migrateAttachments(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE attachments (
                message_seq INTEGER PRIMARY KEY REFERENCES messages(seq) ON DELETE CASCADE,
                kind TEXT NOT NULL,                       -- image, video, audio, document, location
                file_name TEXT NOT NULL DEFAULT '',
                content_type TEXT NOT NULL DEFAULT '',
                size INTEGER NOT NULL DEFAULT 0,          -- plaintext bytes (0 for a location)
                pointer BLOB,                             -- sealSecret(encoded AttachmentPointer); NULL for a location
                latitude REAL,
                longitude REAL,
                label TEXT NOT NULL DEFAULT '',
                local_path TEXT                           -- the verified, decrypted file once downloaded
            );
            CREATE INDEX attachments_kind ON attachments(kind);
            """)
    }
}
