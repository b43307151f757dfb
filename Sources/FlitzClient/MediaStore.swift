import FlitzCrypto
import FlitzProtocol
import Foundation
import GRDB

/// What history, `receive` and the gallery show of a media message (`protocol/attachments.md` section 3): the
/// `attachments` row of its message.
public struct MediaSummary: Sendable, Hashable {
    /// `image`, `video`, `audio`, `document` or `location`.
    public var kind: String
    /// The sender's file name (may be empty; never contains `/`, `\` or a control character).
    public var fileName: String
    /// MIME type (may be empty).
    public var contentType: String
    /// Bytes of the file (0 for a location).
    public var size: UInt64
    /// Pixels, 0 when unknown.
    public var width: UInt32 = 0
    /// Pixels, 0 when unknown.
    public var height: UInt32 = 0
    /// Milliseconds of video or audio, 0 when unknown.
    public var durationMilliseconds: UInt32 = 0
    /// Bytes of the JPEG thumbnail carried in the pointer (0: none).
    public var thumbnailBytes: Int = 0
    /// An audio recorded as a voice message.
    public var voiceNote = false
    /// Degrees, for a location.
    public var latitude: Double?
    /// Degrees, for a location.
    public var longitude: Double?
    /// A location's label.
    public var label: String = ""
    /// Where `flitz download` put the verified file; nil before.
    public var localPath: String?
}

extension ClientStore {
    /// `v10-media`: uploads under way (`protocol/attachments.md` section 5: the capability, blob id and temporary
    /// blob file are kept until the message is sent, so an interrupted upload resumes from `HEAD`'s offset).
    /// `state` holds the attachment key, unsend token and upload token: a secret column (`sealSecret`).
    static func migrateMedia(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE media_uploads (
                id INTEGER PRIMARY KEY,
                peer TEXT NOT NULL,
                source TEXT NOT NULL,                     -- the absolute path given to `flitz send --file`
                state BLOB NOT NULL,                      -- sealSecret(JSON of PendingUpload)
                created_at_ms INTEGER NOT NULL,
                UNIQUE (peer, source)
            );
            -- The identity of the file `flitz download` wrote at `local_path` (stat at download): deleting the
            -- message removes that file only while it still matches, never a file edited or saved there since.
            ALTER TABLE attachments ADD COLUMN local_device INTEGER;
            ALTER TABLE attachments ADD COLUMN local_inode INTEGER;
            ALTER TABLE attachments ADD COLUMN local_size INTEGER;
            ALTER TABLE attachments ADD COLUMN local_mtime_ns INTEGER;
            """)
    }

    /// `sealSecret` of a non-optional secret for code that holds only a `Database` (the static store paths of
    /// sending and receiving): sealed under the store key when the home has a passphrase.
    static func sealSecretColumn(_ secret: Data, _ column: SecretColumn, _ db: Database) throws -> Data {
        try sealSecret(secret, column, db) ?? secret
    }
    /// Opens what `sealSecretColumn` stored.
    /// - Throws: `ClientError(.protocolFailure)` when it does not open (altered, corrupt, moved from another column).
    static func openSecretColumn(_ stored: Data, _ column: SecretColumn, _ db: Database) throws -> Data {
        try openSecret(stored, column, db) ?? stored
    }
}

/// What identifies the file `flitz download` wrote (`lstat`): device, inode, size in bytes and modification time
/// in nanoseconds since 1970. Deleting a message removes its downloaded file only while all four still match.
struct DownloadedFileIdentity: Equatable {
    var device: Int64
    var inode: Int64
    var size: Int64
    var modifiedNanoseconds: Int64

    init(device: Int64, inode: Int64, size: Int64, modifiedNanoseconds: Int64) {
        self.device = device
        self.inode = inode
        self.size = size
        self.modifiedNanoseconds = modifiedNanoseconds
    }

    /// The identity of the regular file at `path` (not following a symbolic link); nil when there is none.
    init?(path: String) {
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        device = Int64(bitPattern: UInt64(info.st_dev))
        inode = Int64(bitPattern: UInt64(info.st_ino))
        size = Int64(info.st_size)
        modifiedNanoseconds = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
    }
}

extension FlitzClient {
    /// The encoded form of a pointer in `attachments.pointer`: a `MessageContent` whose text carries only the
    /// pointer, so decoding re-runs section 3's validation (FlitzProtocol keeps the proto conversion private).
    static func encodePointer(_ pointer: AttachmentPointer) -> Data {
        MessageContent(messageID: Data(count: 16), sentAtMilliseconds: 0, body: .text(TextMessage("", attachment: pointer))).encoded()
    }

    /// The pointer `encodePointer` stored; nil when it does not decode.
    static func decodePointer(_ data: Data) -> AttachmentPointer? {
        guard let content = try? MessageContent(decoding: data), case .text(let text) = content.body else { return nil }
        return text.attachment
    }

    /// Stores the `attachments` row of a media text (sent, received or a sent transcript) on message row `seq`, in
    /// the transaction that stores the message (`storeTextFields`). Nothing for a plain text.
    static func storeAttachmentRow(_ text: TextMessage, seq: Int64, _ db: Database) throws {
        if let pointer = text.attachment {
            try db.execute(
                sql: """
                    INSERT INTO attachments (message_seq, kind, file_name, content_type, size, pointer)
                    VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (message_seq) DO UPDATE SET kind = excluded.kind, file_name = excluded.file_name,
                        content_type = excluded.content_type, size = excluded.size, pointer = excluded.pointer
                    """,
                arguments: [
                    seq, pointer.kind.rawValue, pointer.fileName, pointer.contentType, Int64(pointer.plaintextSize),
                    try ClientStore.sealSecretColumn(encodePointer(pointer), .attachmentPointer, db),
                ])
        } else if let location = text.location {
            try db.execute(
                sql: """
                    INSERT INTO attachments (message_seq, kind, latitude, longitude, label) VALUES (?, 'location', ?, ?, ?)
                    ON CONFLICT (message_seq) DO UPDATE SET latitude = excluded.latitude, longitude = excluded.longitude, label = excluded.label
                    """,
                arguments: [seq, location.latitude, location.longitude, location.label])
        }
    }

    /// Removes a message's `attachments` row and its downloaded file (delete for everyone, unsend, disappearing,
    /// `protocol/attachments.md` 3 "as on any text"). The file goes only while it is exactly the one `download`
    /// wrote (same device, inode, size and modification time, `DownloadedFileIdentity`): a file edited since, or
    /// another file saved under that name later, is left. Only the latest download of the message is tracked.
    static func eraseAttachment(seq: Int64, _ db: Database) throws {
        let row = try Row.fetchOne(
            db, sql: "SELECT local_path, local_device, local_inode, local_size, local_mtime_ns FROM attachments WHERE message_seq = ?",
            arguments: [seq])
        try db.execute(sql: "DELETE FROM attachments WHERE message_seq = ?", arguments: [seq])
        guard let row, let path = row["local_path"] as String?,
            let device = row["local_device"] as Int64?, let inode = row["local_inode"] as Int64?,
            let size = row["local_size"] as Int64?, let mtime = row["local_mtime_ns"] as Int64?
        else { return }
        let recorded = DownloadedFileIdentity(device: device, inode: inode, size: size, modifiedNanoseconds: mtime)
        if DownloadedFileIdentity(path: path) == recorded { try? FileManager.default.removeItem(atPath: path) }
    }

    /// The pointer or location of message row `seq`, for forwarding it; both nil for a plain text.
    static func forwardedMedia(seq: Int64, _ db: Database) throws -> (AttachmentPointer?, Location?) {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM attachments WHERE message_seq = ?", arguments: [seq]) else { return (nil, nil) }
        if let sealed = row["pointer"] as Data? {
            guard let pointer = decodePointer(try ClientStore.openSecretColumn(sealed, .attachmentPointer, db)) else {
                throw ClientError(.protocolFailure, "the attachment's pointer is unreadable")
            }
            return (pointer, nil)
        }
        guard let latitude = row["latitude"] as Double?, let longitude = row["longitude"] as Double? else { return (nil, nil) }
        return (nil, Location(latitude: latitude, longitude: longitude, label: row["label"]))
    }

    /// The `attachments` row of message row `seq` for display; nil for a plain text.
    static func mediaSummary(seq: Int64, _ db: Database) throws -> MediaSummary? {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM attachments WHERE message_seq = ?", arguments: [seq]) else { return nil }
        return mediaSummary(row, db)
    }

    /// The display summary of an `attachments` row; the pointer's details (dimensions, duration, thumbnail) only
    /// when `db` is given to open it.
    static func mediaSummary(_ row: Row, _ db: Database?) -> MediaSummary {
        var summary = MediaSummary(kind: row["kind"], fileName: row["file_name"], contentType: row["content_type"], size: UInt64(row["size"] as Int64))
        summary.latitude = row["latitude"]
        summary.longitude = row["longitude"]
        summary.label = row["label"]
        summary.localPath = row["local_path"]
        if let db, let sealed = row["pointer"] as Data?, let opened = try? ClientStore.openSecretColumn(sealed, .attachmentPointer, db), let pointer = decodePointer(opened) {
            summary.width = pointer.width
            summary.height = pointer.height
            summary.durationMilliseconds = pointer.durationMilliseconds
            summary.thumbnailBytes = pointer.thumbnail.count
            summary.voiceNote = pointer.voiceNote
        }
        return summary
    }
}
