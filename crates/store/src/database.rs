//! The encrypted database and Hush's own tables.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use hush_proto::AccountId;
use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::{Connection, SqliteStorageProvider};
use rusqlite::{params, OptionalExtension};

use crate::error::StoreError;
use crate::keyfile::{Attempt, DatabaseKey, KdfParams, KeyFile, SealedKeys, Unlocked, Wrapping};
use crate::provider::{HushProvider, JsonCodec};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS profile (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS contacts (name TEXT PRIMARY KEY, account BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    group_id BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT,
    peer BLOB,
    active INTEGER NOT NULL DEFAULT 1,
    sent_since_update INTEGER NOT NULL DEFAULT 0,
    last_update_ms INTEGER NOT NULL DEFAULT 0,
    needs_update INTEGER NOT NULL DEFAULT 0,
    timer_secs INTEGER,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id BLOB NOT NULL UNIQUE,
    group_id BLOB NOT NULL,
    sender BLOB NOT NULL,
    text TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    shown INTEGER NOT NULL DEFAULT 0,
    event INTEGER NOT NULL DEFAULT 0,
    expires_at_ms INTEGER,
    proof BLOB
);
CREATE INDEX IF NOT EXISTS messages_by_group ON messages(group_id, seq);
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages(expires_at_ms) WHERE expires_at_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS seen_payloads (hash BLOB PRIMARY KEY, at_ms INTEGER NOT NULL);
";

/// How long a received message keeps its sender's signature (so that it
/// can be reported): a month. After that the text stays, but nothing on the
/// device proves to anyone else who wrote it.
pub const PROOF_KEPT_MS: u64 = 30 * 24 * 3600 * 1000;

/// The profile setting that records the last re-key (Unix ms, big-endian).
const REKEYED_AT: &str = "rekeyed_at_ms";
/// Set to `[1]` when messages were purged after the last re-key.
const PURGED_SINCE_REKEY: &str = "purged_since_rekey";
/// Set to `[1]` when the key must be replaced at the next chance (a new
/// passphrase).
const REKEY_REQUESTED: &str = "rekey_requested";

use hush_core::SignedContent;
pub use hush_core::{ConversationKind, ConversationRecord, MessageRecord};

/// Adds the columns later versions added to tables an older profile made
/// (`CREATE TABLE IF NOT EXISTS` leaves an existing table as it is).
fn add_missing_columns(connection: &Connection) -> Result<(), StoreError> {
    let has_proof: bool = connection.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('messages') WHERE name = 'proof'",
        [],
        |row| row.get(0),
    )?;
    if !has_proof {
        connection.execute_batch("ALTER TABLE messages ADD COLUMN proof BLOB")?;
    }
    Ok(())
}

/// An unlocked profile.
pub struct Store {
    dir: PathBuf,
    connection: Connection,
    crypto: RustCrypto,
    /// The database key in use and how the key file wraps it; replaced by
    /// a re-key or a passphrase change.
    keys: RefCell<Keys>,
    /// The profile directory, opened and locked shared for as long as this
    /// process has the profile open; a re-key needs it exclusive.
    presence: ProfileLock,
}

/// A `flock` on the profile directory. Every process with the profile open
/// holds it shared; a re-key (which changes the key every other process
/// would read the database with) runs only if it can take it exclusive,
/// that is only when no other process has the profile open. An unlock
/// waits while a re-key runs.
struct ProfileLock(std::fs::File);

impl ProfileLock {
    fn shared(dir: &Path) -> Result<Self, StoreError> {
        let file = std::fs::File::open(dir)?;
        file.lock_shared()?;
        Ok(Self(file))
    }

    /// Runs `work` with the lock exclusive, or answers None at once when
    /// another process holds it; the lock is shared again afterwards.
    ///
    /// Converting a `flock` is not atomic (the old lock is dropped first),
    /// so every conversion, up and down, happens under the key file's lock:
    /// no other process can take the directory exclusive in the gap.
    fn exclusively<T>(
        &self,
        key_path: &Path,
        work: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let serializer = KeyFile::lock(key_path)?;
        match self.0.try_lock() {
            Ok(()) => drop(serializer),
            Err(std::fs::TryLockError::WouldBlock) => {
                self.0.lock_shared()?;
                return Ok(None);
            }
            Err(std::fs::TryLockError::Error(error)) => {
                self.0.lock_shared()?;
                return Err(error.into());
            }
        }
        let result = work();
        let serializer = KeyFile::lock(key_path)?;
        self.0.lock_shared()?;
        drop(serializer);
        result.map(Some)
    }
}

/// The database key of an open profile and how the key file wraps it.
struct Keys {
    database: DatabaseKey,
    wrapping: Wrapping,
}

/// How often the database key is replaced even when nothing expired.
pub const REKEY_EVERY_MS: u64 = 24 * 3600 * 1000;
/// After a purge of expired messages the key is replaced at the next
/// unlock, unless the last re-key is more recent than this (a conversation
/// with a short timer purges often; see docs/device-security.md for the
/// measured cost).
pub const REKEY_AFTER_PURGE_GAP_MS: u64 = 10 * 60 * 1000;

const DATABASE_FILES: [&str; 6] =
    ["hush.db", "hush.db-wal", "hush.db-shm", "hush.db-journal", rekey::EXPORT_FILE, rekey::EXPORT_JOURNAL];

fn i(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn u(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn account(bytes: Vec<u8>) -> Option<AccountId> {
    <[u8; AccountId::LEN]>::try_from(bytes.as_slice()).ok().map(AccountId)
}

/// Makes `dir` (mode 0700, whatever the umask or its earlier mode) and an
/// empty database file in it (mode 0600: SQLite gives its WAL and shared
/// memory files the database file's mode).
fn prepare_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for stale in DATABASE_FILES {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let db =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dir.join("hush.db"))?;
    db.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Sets every profile file to mode 0600 (profiles made before this rule,
/// or files a umask widened).
fn restrict_modes(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for name in DATABASE_FILES.iter().chain(std::iter::once(&"key")) {
        match std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o600)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error.into()),
            _ => {}
        }
    }
    Ok(())
}

impl Store {
    fn key_path(dir: &Path) -> PathBuf {
        dir.join("key")
    }

    fn db_path(dir: &Path) -> PathBuf {
        dir.join("hush.db")
    }

    /// True if `dir` holds a profile.
    pub fn exists(dir: &Path) -> bool {
        Self::key_path(dir).exists()
    }

    /// Creates a new profile in `dir` (mode 0700, its files 0600).
    /// `max_attempts` wrong passphrases in a row wipe it (0: never).
    pub fn create(
        dir: &Path,
        passphrase: &[u8],
        params: KdfParams,
        max_attempts: u32,
    ) -> Result<Self, StoreError> {
        if Self::exists(dir) {
            return Err(StoreError::ProfileExists);
        }
        prepare_private_dir(dir)?;
        let presence = ProfileLock::shared(dir)?;
        let key = DatabaseKey::random();
        let connection = Self::open_with_key(dir, &key)?;
        let wrapping = KeyFile::create(&Self::key_path(dir), passphrase, &key, params, max_attempts)?;
        let store = Self::configure(dir, connection, Keys { database: key, wrapping }, presence)?;
        store.set_setting(REKEYED_AT, &crate::now_ms().to_be_bytes())?;
        Ok(store)
    }

    /// Unlocks the profile in `dir`.
    ///
    /// A wrong passphrase changes nothing but the key file's attempt slots
    /// (see the key file's design): one is used up before the passphrase
    /// is tried, so killing the process mid-try still counts, and all are
    /// re-sealed on success. The panic passphrase, or one wrong passphrase
    /// too many, wipes the profile and answers [`StoreError::Wiped`], which
    /// reads exactly like [`StoreError::NoProfile`]. Expired messages are
    /// purged, and the database key replaced when it is due.
    pub fn open(dir: &Path, passphrase: &[u8]) -> Result<Self, StoreError> {
        if !Self::exists(dir) {
            return Err(StoreError::NoProfile);
        }
        match KeyFile::attempt(&Self::key_path(dir), passphrase)? {
            Attempt::Opened(Unlocked::Database(wrapping)) => {
                // The profile lock only now, so that no other process can
                // delay a panic wipe; a re-key may have run meanwhile, so
                // the sealed keys are read again.
                let presence = ProfileLock::shared(dir)?;
                let keys = KeyFile::read_keys(&Self::key_path(dir), &wrapping)?;
                restrict_modes(dir)?;
                let store = Self::open_sealed(dir, keys, wrapping, presence)?;
                let now = crate::now_ms();
                store.purge_expired(now)?;
                Ok(store.rekeyed_if_due(now)?.0)
            }
            Attempt::Opened(Unlocked::Panic(code)) => {
                wipe(dir)?;
                Err(StoreError::Wiped(Some(Box::new(code))))
            }
            Attempt::Wrong { exhausted: true } => {
                wipe(dir)?;
                Err(StoreError::Wiped(None))
            }
            Attempt::Wrong { exhausted: false } => Err(StoreError::WrongPassphrase),
        }
    }

    /// Opens the database with the sealed key, or with the next key when a
    /// re-key committed in the database but not yet in the key file (a
    /// crash between the two); then seals the one that worked, alone.
    fn open_sealed(
        dir: &Path,
        keys: SealedKeys,
        wrapping: Wrapping,
        presence: ProfileLock,
    ) -> Result<Self, StoreError> {
        let SealedKeys { current, next } = keys;
        let (connection, key) = match Self::open_with_key(dir, &current) {
            Ok(connection) => (connection, current),
            Err(error) => match next {
                Some(next) => (Self::open_with_key(dir, &next)?, next),
                None => return Err(error),
            },
        };
        let sealed = SealedKeys { current: key.duplicate(), next: None };
        KeyFile::reseal(&Self::key_path(dir), &wrapping, &sealed)?;
        // What a re-key cut short left: ciphertext under a key no longer
        // sealed anywhere.
        for leftover in [rekey::EXPORT_FILE, rekey::EXPORT_JOURNAL] {
            let _ = std::fs::remove_file(dir.join(leftover));
        }
        Self::configure(dir, connection, Keys { database: key, wrapping }, presence)
    }

    /// Checks the passphrase of this open profile (the lock screen), with
    /// the same rules as [`Store::open`]: a wrong one uses up an attempt,
    /// the panic passphrase or one miss too many wipes the profile and
    /// answers [`StoreError::Wiped`].
    pub fn check_passphrase(&self, passphrase: &[u8]) -> Result<(), StoreError> {
        match KeyFile::attempt(&Self::key_path(&self.dir), passphrase)? {
            Attempt::Opened(Unlocked::Database(..)) => Ok(()),
            Attempt::Opened(Unlocked::Panic(code)) => {
                wipe_files(&self.dir, Open::ByThisProcess)?;
                Err(StoreError::Wiped(Some(Box::new(code))))
            }
            Attempt::Wrong { exhausted: true } => {
                wipe_files(&self.dir, Open::ByThisProcess)?;
                Err(StoreError::Wiped(None))
            }
            Attempt::Wrong { exhausted: false } => Err(StoreError::WrongPassphrase),
        }
    }

    /// Sets (or changes) the panic passphrase: it will open nothing, only
    /// wipe the profile and send `code` to the relay.
    pub fn set_panic_passphrase(&self, panic: &[u8], code: &hush_proto::WipeCode) -> Result<(), StoreError> {
        let keys = self.keys.borrow();
        let sealed = SealedKeys { current: keys.database.duplicate(), next: None };
        KeyFile::set_panic(&Self::key_path(&self.dir), &keys.wrapping, &sealed, panic, code)
    }

    /// Changes the passphrase (the strength floor is the caller's rule)
    /// and marks the database key due for replacement, so that an earlier
    /// copy of the key file and the old passphrase open nothing current
    /// once [`Store::rekeyed`] has run. Refuses the panic passphrase.
    pub fn change_passphrase(&self, passphrase: &[u8]) -> Result<(), StoreError> {
        {
            let mut keys = self.keys.borrow_mut();
            let sealed = SealedKeys { current: keys.database.duplicate(), next: None };
            keys.wrapping =
                KeyFile::change_passphrase(&Self::key_path(&self.dir), &keys.wrapping, passphrase, &sealed)?;
        }
        self.set_setting(REKEY_REQUESTED, &[1])
    }

    /// Wipes this profile (a verified remote wipe order). The database is
    /// closed first; the profile lock is held until the files are gone, so
    /// no other process can start a re-key in the middle.
    pub fn wipe(self) -> Result<(), StoreError> {
        let Store { dir, connection, crypto: _, keys, presence } = self;
        drop(connection);
        drop(keys);
        let wiped = wipe(&dir);
        drop(presence);
        wiped
    }

    /// Checkpoints the WAL and truncates it to nothing; false if a reader
    /// kept part of it (then it stays until the next chance).
    fn truncate_wal(&self) -> Result<bool, StoreError> {
        let busy: i64 = self.connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
        Ok(busy == 0)
    }

    /// Deletes every message whose timer ran out, and the senders'
    /// signatures of messages received more than [`PROOF_KEPT_MS`] ago,
    /// then checkpoints and truncates the WAL so no copy of them stays in
    /// it, and notes that the database key is due for replacement (see
    /// [`Store::rekeyed`]). Returns how many messages were deleted.
    pub fn purge_expired(&self, now_ms: u64) -> Result<usize, StoreError> {
        let deleted = self.connection.execute(
            "DELETE FROM messages WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1",
            [i(now_ms)],
        )?;
        let unproved = self.connection.execute(
            "UPDATE messages SET proof = NULL WHERE proof IS NOT NULL AND received_at_ms <= ?1",
            [i(now_ms.saturating_sub(PROOF_KEPT_MS))],
        )?;
        if deleted > 0 || unproved > 0 {
            self.set_setting(PURGED_SINCE_REKEY, &[1])?;
            self.truncate_wal()?;
        }
        Ok(deleted)
    }

    /// Sets a conversation's disappearing-message timer.
    pub fn set_timer(&self, group_id: &[u8], timer_secs: Option<u32>) -> Result<(), StoreError> {
        self.connection.execute(
            "UPDATE conversations SET timer_secs = ?2 WHERE group_id = ?1",
            params![group_id, timer_secs],
        )?;
        Ok(())
    }

    /// Opens the database under `key` and checks that the key is right.
    fn open_with_key(dir: &Path, key: &DatabaseKey) -> Result<Connection, StoreError> {
        Self::open_file_with_key(&Self::db_path(dir), key)
    }

    fn open_file_with_key(path: &Path, key: &DatabaseKey) -> Result<Connection, StoreError> {
        let connection = Connection::open(path)?;
        // SQLCipher's own log goes to stderr (a failed key check, say):
        // nothing of it belongs on a user's terminal. Memory security (set
        // before the key) zeroes SQLCipher's allocations when freed.
        connection.pragma_update(None, "cipher_log_level", "NONE")?;
        connection.pragma_update(None, "cipher_memory_security", "ON")?;
        connection.execute_batch(&key.key_statement())?;
        connection.pragma_update(None, "cipher_log_level", "NONE")?;
        connection.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        Ok(connection)
    }

    /// Settings that keep deleted data from lingering: temporary tables in
    /// memory, deleted content overwritten (`secure_delete`), and the WAL
    /// truncated after purges.
    fn configure(
        dir: &Path,
        mut connection: Connection,
        keys: Keys,
        presence: ProfileLock,
    ) -> Result<Self, StoreError> {
        connection.busy_timeout(std::time::Duration::from_secs(10))?;
        connection.pragma_update(None, "temp_store", "MEMORY")?;
        connection.pragma_update(None, "secure_delete", "ON")?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.execute_batch(SCHEMA)?;
        add_missing_columns(&connection)?;
        SqliteStorageProvider::<JsonCodec, &mut Connection>::new(&mut connection)
            .run_migrations()
            .map_err(|error| StoreError::Migration(error.to_string()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            connection,
            crypto: RustCrypto::default(),
            keys: RefCell::new(keys),
            presence,
        })
    }

    /// The profile directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The OpenMLS provider over this database.
    pub fn provider(&self) -> HushProvider<'_> {
        HushProvider::new(&self.crypto, &self.connection)
    }

    /// Runs `work` in one transaction: Hush's rows and OpenMLS state commit
    /// together or not at all.
    pub fn transaction<T, E: From<StoreError>>(
        &self,
        work: impl FnOnce(&Self) -> Result<T, E>,
    ) -> Result<T, E> {
        self.begin()?;
        match work(self) {
            Ok(value) => {
                self.commit()?;
                Ok(value)
            }
            Err(error) => {
                self.rollback();
                Err(error)
            }
        }
    }

    pub(crate) fn begin(&self) -> Result<(), StoreError> {
        Ok(self.connection.execute_batch("BEGIN IMMEDIATE")?)
    }

    pub(crate) fn commit(&self) -> Result<(), StoreError> {
        Ok(self.connection.execute_batch("COMMIT")?)
    }

    pub(crate) fn rollback(&self) {
        let _ = self.connection.execute_batch("ROLLBACK");
    }

    /// Reads a profile value.
    pub fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .connection
            .query_row("SELECT value FROM profile WHERE name = ?1", [name], |row| row.get(0))
            .optional()?)
    }

    /// Writes a profile value.
    pub fn set_setting(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.connection.execute(
            "INSERT INTO profile (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
        Ok(())
    }

    /// Deletes every message of a conversation.
    pub fn delete_messages(&self, group_id: &[u8]) -> Result<usize, StoreError> {
        Ok(self.connection.execute("DELETE FROM messages WHERE group_id = ?1", [group_id])?)
    }

    /// Deletes a profile value (nothing happens if there is none).
    pub fn delete_setting(&self, name: &str) -> Result<(), StoreError> {
        self.connection.execute("DELETE FROM profile WHERE name = ?1", [name])?;
        Ok(())
    }

    /// Every profile value whose name starts with `prefix`, by name.
    pub fn settings_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut query = self
            .connection
            .prepare_cached("SELECT name, value FROM profile WHERE name >= ?1 AND name < ?2 ORDER BY name")?;
        let rows =
            query.query_map(params![prefix, prefix_end(prefix)], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every profile value whose name starts with `prefix`, by name, cut to
    /// its first `len` bytes (for records that start with a header).
    pub fn setting_heads_with_prefix(
        &self,
        prefix: &str,
        len: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut query = self.connection.prepare_cached(
            "SELECT name, substr(value, 1, ?3) FROM profile WHERE name >= ?1 AND name < ?2 ORDER BY name",
        )?;
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        let rows = query
            .query_map(params![prefix, prefix_end(prefix), len], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many profile values have names starting with `prefix`, and
    /// their total size in bytes.
    pub fn count_settings_with_prefix(&self, prefix: &str) -> Result<(u64, u64), StoreError> {
        let (count, bytes): (i64, i64) = self
            .connection
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(value)), 0) FROM profile WHERE name >= ?1 AND name < ?2",
            )?
            .query_row(params![prefix, prefix_end(prefix)], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok((u64::try_from(count).unwrap_or(0), u64::try_from(bytes).unwrap_or(0)))
    }

    /// Deletes every profile value whose name starts with `prefix`.
    pub fn delete_settings_with_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        Ok(self.connection.execute(
            "DELETE FROM profile WHERE name >= ?1 AND name < ?2",
            params![prefix, prefix_end(prefix)],
        )?)
    }

    /// Adds or renames a contact.
    pub fn add_contact(&self, name: &str, contact: &AccountId) -> Result<(), StoreError> {
        self.connection.execute("DELETE FROM contacts WHERE account = ?1", [&contact.0[..]])?;
        self.connection.execute(
            "INSERT INTO contacts (name, account) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET account = excluded.account",
            params![name, &contact.0[..]],
        )?;
        Ok(())
    }

    /// All contacts, by name.
    pub fn contacts(&self) -> Result<Vec<(String, AccountId)>, StoreError> {
        let mut query = self.connection.prepare("SELECT name, account FROM contacts ORDER BY name")?;
        let rows = query.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?)))?;
        let mut contacts = Vec::new();
        for row in rows {
            let (name, bytes) = row?;
            if let Some(id) = account(bytes) {
                contacts.push((name, id));
            }
        }
        Ok(contacts)
    }

    /// The account of a contact name.
    pub fn contact(&self, name: &str) -> Result<Option<AccountId>, StoreError> {
        let bytes: Option<Vec<u8>> = self
            .connection
            .query_row("SELECT account FROM contacts WHERE name = ?1", [name], |row| row.get(0))
            .optional()?;
        Ok(bytes.and_then(account))
    }

    /// The contact name of an account, if any.
    pub fn contact_name(&self, id: &AccountId) -> Result<Option<String>, StoreError> {
        Ok(self
            .connection
            .query_row("SELECT name FROM contacts WHERE account = ?1", [&id.0[..]], |row| row.get(0))
            .optional()?)
    }

    /// Records a conversation.
    pub fn insert_conversation(
        &self,
        group_id: &[u8],
        kind: &ConversationKind,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let (kind_text, name, peer) = kind_columns(kind);
        self.connection.execute(
            "INSERT INTO conversations (group_id, kind, name, peer, created_ms, last_update_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT(group_id) DO UPDATE SET kind = excluded.kind, name = excluded.name, peer = excluded.peer",
            params![group_id, kind_text, name, peer, i(now_ms)],
        )?;
        Ok(())
    }

    /// Marks a conversation as left (or active again).
    pub fn set_conversation_active(&self, group_id: &[u8], active: bool) -> Result<(), StoreError> {
        self.connection
            .execute("UPDATE conversations SET active = ?2 WHERE group_id = ?1", params![group_id, active])?;
        Ok(())
    }

    /// Notes a message sent (for the self-update policy).
    pub fn count_sent(&self, group_id: &[u8]) -> Result<(), StoreError> {
        self.connection.execute(
            "UPDATE conversations SET sent_since_update = sent_since_update + 1 WHERE group_id = ?1",
            [group_id],
        )?;
        Ok(())
    }

    /// Notes whether we owe a group a self-update.
    pub fn set_needs_update(&self, group_id: &[u8], needs: bool) -> Result<(), StoreError> {
        self.connection.execute(
            "UPDATE conversations SET needs_update = ?2 WHERE group_id = ?1",
            params![group_id, needs],
        )?;
        Ok(())
    }

    /// Notes a self-update just made.
    pub fn updated(&self, group_id: &[u8], now_ms: u64) -> Result<(), StoreError> {
        self.connection.execute(
            "UPDATE conversations SET sent_since_update = 0, needs_update = 0, last_update_ms = ?2 WHERE group_id = ?1",
            params![group_id, i(now_ms)],
        )?;
        Ok(())
    }

    /// One conversation.
    pub fn conversation(&self, group_id: &[u8]) -> Result<Option<ConversationRecord>, StoreError> {
        let mut all = self.conversations_where("group_id = ?1", params![group_id])?;
        Ok(all.pop())
    }

    /// Every conversation.
    pub fn conversations(&self) -> Result<Vec<ConversationRecord>, StoreError> {
        self.conversations_where("1 = 1", params![])
    }

    /// The active direct conversations with `peer`, canonical (smallest
    /// group id) first. Two people who start a conversation at the same
    /// moment end up with two groups; both sides then use the same one.
    pub fn direct_conversations(&self, peer: &AccountId) -> Result<Vec<ConversationRecord>, StoreError> {
        self.conversations_where("kind = 'direct' AND peer = ?1 AND active = 1", params![&peer.0[..]])
    }

    /// Every direct conversation with `peer`, including ones left.
    pub fn direct_conversations_any(&self, peer: &AccountId) -> Result<Vec<ConversationRecord>, StoreError> {
        self.conversations_where("kind = 'direct' AND peer = ?1", params![&peer.0[..]])
    }

    /// The active group with this name.
    pub fn group_by_name(&self, name: &str) -> Result<Option<ConversationRecord>, StoreError> {
        let mut all =
            self.conversations_where("kind = 'group' AND name = ?1 AND active = 1", params![name])?;
        Ok(all.pop())
    }

    fn conversations_where(
        &self,
        condition: &str,
        arguments: impl rusqlite::Params,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        let sql = format!(
            "SELECT group_id, kind, name, peer, active, sent_since_update, last_update_ms, needs_update, timer_secs
             FROM conversations WHERE {condition} ORDER BY group_id"
        );
        let mut query = self.connection.prepare(&sql)?;
        let rows = query.query_map(arguments, |row| {
            let kind = match (
                row.get::<_, String>(1)?.as_str(),
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<Vec<u8>>>(3)?,
            ) {
                ("direct", _, Some(peer)) => account(peer).map(|peer| ConversationKind::Direct { peer }),
                ("group", Some(name), _) => Some(ConversationKind::Group { name }),
                _ => Some(ConversationKind::Pending),
            };
            Ok(ConversationRecord {
                group_id: row.get(0)?,
                kind: kind.unwrap_or(ConversationKind::Pending),
                active: row.get(4)?,
                sent_since_update: u(row.get(5)?),
                last_update_ms: u(row.get(6)?),
                needs_update: row.get(7)?,
                timer_secs: row.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores a message; false if a message with this id exists already.
    pub fn insert_message(
        &self,
        message: &MessageRecord,
        received_at_ms: u64,
        shown: bool,
    ) -> Result<bool, StoreError> {
        let inserted = self.connection.execute(
            "INSERT OR IGNORE INTO messages
             (message_id, group_id, sender, text, sent_at_ms, received_at_ms, shown, event, expires_at_ms, proof)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                &message.message_id[..],
                message.group_id,
                &message.sender.0[..],
                message.text,
                i(message.sent_at_ms),
                i(received_at_ms),
                shown,
                message.event,
                message.expires_at_ms.map(i),
                message.proof.as_ref().map(SignedContent::to_bytes)
            ],
        )?;
        Ok(inserted > 0)
    }

    /// The message with this id, if this device still has it.
    pub fn message(&self, message_id: &[u8; 16]) -> Result<Option<MessageRecord>, StoreError> {
        Ok(self
            .messages_where("message_id = ?1", params![&message_id[..]])?
            .pop()
            .map(|(_, message)| message))
    }

    /// Messages not yet printed by `recv`, oldest first.
    pub fn unshown_messages(&self) -> Result<Vec<(i64, MessageRecord)>, StoreError> {
        self.messages_where("shown = 0", params![])
    }

    /// Marks a message printed.
    pub fn mark_shown(&self, seq: i64) -> Result<(), StoreError> {
        self.connection.execute("UPDATE messages SET shown = 1 WHERE seq = ?1", [seq])?;
        Ok(())
    }

    /// Per conversation: messages not yet shown, and when the last message
    /// arrived (Unix ms). Events count as activity, not as unread.
    pub fn activity(&self) -> Result<Vec<(Vec<u8>, u64, u64)>, StoreError> {
        let mut query = self.connection.prepare_cached(
            "SELECT group_id, SUM(shown = 0 AND event = 0), MAX(received_at_ms) FROM messages GROUP BY group_id",
        )?;
        let rows =
            query.query_map([], |row| Ok((row.get::<_, Vec<u8>>(0)?, u(row.get(1)?), u(row.get(2)?))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks every message of a group shown.
    pub fn mark_group_shown(&self, group_id: &[u8]) -> Result<(), StoreError> {
        self.connection
            .execute("UPDATE messages SET shown = 1 WHERE group_id = ?1 AND shown = 0", [group_id])?;
        Ok(())
    }

    /// The messages of some groups, oldest first.
    pub fn history(&self, group_ids: &[Vec<u8>]) -> Result<Vec<MessageRecord>, StoreError> {
        let mut all = Vec::new();
        for group_id in group_ids {
            all.extend(self.messages_where("group_id = ?1", params![group_id])?);
        }
        all.sort_by_key(|(seq, _)| *seq);
        Ok(all.into_iter().map(|(_, message)| message).collect())
    }

    /// The latest `limit` messages of some groups, oldest first (what a
    /// screen shows, without reading a long history whole).
    pub fn recent_history(
        &self,
        group_ids: &[Vec<u8>],
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut all = Vec::new();
        for group_id in group_ids {
            all.extend(self.messages_where(
                "group_id = ?1 AND seq IN (SELECT seq FROM messages WHERE group_id = ?1 ORDER BY seq DESC LIMIT ?2)",
                params![group_id, limit],
            )?);
        }
        all.sort_by_key(|(seq, _)| *seq);
        let skip = all.len().saturating_sub(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(all.into_iter().skip(skip).map(|(_, message)| message).collect())
    }

    fn messages_where(
        &self,
        condition: &str,
        arguments: impl rusqlite::Params,
    ) -> Result<Vec<(i64, MessageRecord)>, StoreError> {
        let sql = format!(
            "SELECT seq, message_id, group_id, sender, text, sent_at_ms, event, expires_at_ms, proof
             FROM messages WHERE {condition} ORDER BY seq"
        );
        let mut query = self.connection.prepare(&sql)?;
        let rows = query.query_map(arguments, |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, Vec<u8>>(2)?,
                row.get::<_, Vec<u8>>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, bool>(6)?,
                row.get::<_, Option<i64>>(7)?,
                row.get::<_, Option<Vec<u8>>>(8)?,
            ))
        })?;
        let mut messages = Vec::new();
        for row in rows {
            let (seq, id, group_id, sender, text, sent_at_ms, event, expires, proof) = row?;
            let (Ok(message_id), Some(sender)) = (<[u8; 16]>::try_from(id.as_slice()), account(sender))
            else {
                continue;
            };
            let expires_at_ms = expires.map(u);
            let sent_at_ms = u(sent_at_ms);
            let proof = proof.and_then(|bytes| SignedContent::from_bytes(&bytes).ok());
            messages.push((
                seq,
                MessageRecord { message_id, group_id, sender, text, sent_at_ms, event, expires_at_ms, proof },
            ));
        }
        Ok(messages)
    }

    /// Records a delivered payload's hash; false if it was seen before.
    pub fn first_sighting(&self, hash: &[u8; 32], now_ms: u64) -> Result<bool, StoreError> {
        let inserted = self.connection.execute(
            "INSERT OR IGNORE INTO seen_payloads (hash, at_ms) VALUES (?1, ?2)",
            params![&hash[..], i(now_ms)],
        )?;
        Ok(inserted > 0)
    }

    /// Forgets payload hashes older than `before_ms`.
    pub fn forget_sightings(&self, before_ms: u64) -> Result<(), StoreError> {
        self.connection.execute("DELETE FROM seen_payloads WHERE at_ms < ?1", [i(before_ms)])?;
        Ok(())
    }
}

/// The first name after every name that starts with `prefix` (text sorts
/// by its UTF-8 bytes, as code points do), so `prefix..prefix_end` is an
/// index range: the prefix with its last character replaced by the next one.
fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.to_owned();
    while let Some(last) = end.pop() {
        let next = match u32::from(last) + 1 {
            0xd800 => Some('\u{e000}'),
            code => char::from_u32(code),
        };
        if let Some(next) = next {
            end.push(next);
            return end;
        }
    }
    // Only for an empty prefix (or one of nothing but U+10FFFF): past
    // every name a profile uses.
    char::MAX.to_string().repeat(4)
}

/// Destroys a profile. The key file is overwritten in place with random
/// bytes and synced first: from then on the database cannot be decrypted,
/// even from copies of its pages left elsewhere (crypto-shredding). Then
/// the database files are overwritten with zeros in place and synced
/// (cheap, and it leaves no ciphertext to carve), and everything is
/// removed. What overwriting cannot promise on flash storage and
/// copy-on-write file systems is in docs/device-security.md.
pub fn wipe(dir: &Path) -> Result<(), StoreError> {
    wipe_files(dir, Open::Closed)
}

/// Whether this process still has the database open while it wipes.
#[derive(PartialEq)]
enum Open {
    Closed,
    /// The shared-memory index is then left alone: SQLite has it mapped,
    /// and it holds no content, only where pages sit in the WAL.
    ByThisProcess,
}

fn wipe_files(dir: &Path, open: Open) -> Result<(), StoreError> {
    KeyFile::destroy(&dir.join("key"))?;
    for name in DATABASE_FILES {
        if open == Open::ByThisProcess && name == "hush.db-shm" {
            continue;
        }
        let _ = overwrite_with_zeros(&dir.join(name));
    }
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error.into()),
        _ => {}
    }
    if let Some(parent) = dir.parent() {
        if let Ok(parent) = std::fs::File::open(parent) {
            let _ = parent.sync_all();
        }
    }
    Ok(())
}

/// Overwrites a file's contents with zeros where they are, then syncs.
fn overwrite_with_zeros(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from((len - at).min(zeros.len() as u64)).unwrap_or(zeros.len());
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_all()?;
    Ok(())
}

fn kind_columns(kind: &ConversationKind) -> (&'static str, Option<&str>, Option<Vec<u8>>) {
    match kind {
        ConversationKind::Direct { peer } => ("direct", None, Some(peer.0.to_vec())),
        ConversationKind::Group { name } => ("group", Some(name.as_str()), None),
        ConversationKind::Pending => ("pending", None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams::FAST;

    #[test]
    fn wrong_passphrase_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), b"right", CHEAP, 10).unwrap();
        store.set_setting("name", b"alice").unwrap();
        drop(store);
        assert!(matches!(Store::open(dir.path(), b"wrong"), Err(StoreError::WrongPassphrase)));
        let store = Store::open(dir.path(), b"right").unwrap();
        assert_eq!(store.setting("name").unwrap(), Some(b"alice".to_vec()));
    }

    #[test]
    fn settings_by_prefix_are_exactly_those_whose_name_starts_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), b"pw", CHEAP, 10).unwrap();
        for name in
            ["held:ab:1", "held:ab:2", "held:ab", "held:abc:1", "held:a", "hele", "held:ab:\u{10ffff}x"]
        {
            store.set_setting(name, name.as_bytes()).unwrap();
        }
        let names = |prefix| -> Vec<String> {
            store.settings_with_prefix(prefix).unwrap().into_iter().map(|(name, _)| name).collect()
        };
        assert_eq!(names("held:ab:"), ["held:ab:1", "held:ab:2", "held:ab:\u{10ffff}x"]);
        assert_eq!(store.count_settings_with_prefix("held:ab:").unwrap(), (3, 9 + 9 + 13));
        assert_eq!(store.delete_settings_with_prefix("held:ab:").unwrap(), 3);
        assert_eq!(names("held:"), ["held:a", "held:ab", "held:abc:1"]);
        assert_eq!(store.setting("hele").unwrap(), Some(b"hele".to_vec()));
    }

    #[test]
    fn database_files_hold_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), b"pw", CHEAP, 10).unwrap();
        store.add_contact("bobthebuilder", &AccountId([3; 20])).unwrap();
        let message = MessageRecord {
            message_id: [1; 16],
            group_id: vec![1],
            sender: AccountId([3; 20]),
            text: "meet at the old mill".into(),
            sent_at_ms: 1,
            event: false,
            expires_at_ms: None,
            proof: None,
        };
        store.insert_message(&message, 2, false).unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            for needle in [&b"bobthebuilder"[..], b"meet at the old mill", b"SQLite format 3"] {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle));
            }
        }
    }

    #[test]
    fn a_messages_proof_is_kept_with_it_and_a_profile_from_before_proofs_gains_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), b"pw", CHEAP, 10).unwrap();
        // A profile made before messages kept proofs.
        store.connection.execute_batch("ALTER TABLE messages DROP COLUMN proof").unwrap();
        drop(store);
        let store = Store::open(dir.path(), b"pw").unwrap();
        let proof = SignedContent { content: b"{}".to_vec(), signature: [7; 64] };
        let message = MessageRecord {
            message_id: [4; 16],
            group_id: vec![1],
            sender: AccountId([3; 20]),
            text: "hi".into(),
            sent_at_ms: 1,
            event: false,
            expires_at_ms: Some(50),
            proof: Some(proof.clone()),
        };
        store.insert_message(&message, 2, false).unwrap();
        assert_eq!(store.message(&[4; 16]).unwrap().and_then(|m| m.proof), Some(proof));
        assert_eq!(store.message(&[5; 16]).unwrap(), None);
        // It goes when the message expires.
        store.purge_expired(60).unwrap();
        assert_eq!(store.message(&[4; 16]).unwrap(), None);
        // A message that stays loses its proof after a month.
        let kept = MessageRecord { message_id: [6; 16], expires_at_ms: None, ..message };
        store.insert_message(&kept, 100, false).unwrap();
        store.purge_expired(100 + PROOF_KEPT_MS - 1).unwrap();
        assert!(store.message(&[6; 16]).unwrap().unwrap().proof.is_some());
        store.purge_expired(100 + PROOF_KEPT_MS).unwrap();
        let kept = store.message(&[6; 16]).unwrap().unwrap();
        assert_eq!((kept.proof, kept.text.as_str()), (None, "hi"));
    }

    #[test]
    fn messages_are_stored_once_and_shown_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), b"pw", CHEAP, 10).unwrap();
        let message = MessageRecord {
            message_id: [9; 16],
            group_id: vec![1],
            sender: AccountId([3; 20]),
            text: "hi".into(),
            sent_at_ms: 1,
            event: false,
            expires_at_ms: None,
            proof: None,
        };
        assert!(store.insert_message(&message, 2, false).unwrap());
        assert!(!store.insert_message(&message, 3, false).unwrap());
        let unshown = store.unshown_messages().unwrap();
        assert_eq!(unshown.len(), 1);
        store.mark_shown(unshown[0].0).unwrap();
        assert!(store.unshown_messages().unwrap().is_empty());
    }

    #[test]
    fn recent_history_is_the_latest_messages_across_groups_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), b"pw", CHEAP, 10).unwrap();
        for n in 0..10u8 {
            let message = MessageRecord {
                message_id: [n; 16],
                group_id: vec![n % 2],
                sender: AccountId([3; 20]),
                text: n.to_string(),
                sent_at_ms: u64::from(n),
                event: false,
                expires_at_ms: None,
                proof: None,
            };
            store.insert_message(&message, 0, false).unwrap();
        }
        let texts = |messages: Vec<MessageRecord>| messages.into_iter().map(|m| m.text).collect::<Vec<_>>();
        assert_eq!(texts(store.recent_history(&[vec![0], vec![1]], 3).unwrap()), ["7", "8", "9"]);
        assert_eq!(texts(store.recent_history(&[vec![0]], 2).unwrap()), ["6", "8"]);
        assert_eq!(store.recent_history(&[vec![1]], 100).unwrap().len(), 5);
    }
}

#[cfg(test)]
mod wipe_tests {
    #[test]
    fn a_purged_message_leaves_no_trace_in_the_database_or_its_wal() {
        // Unkeyed here so the raw pages can be searched: the settings under
        // test (secure_delete, WAL truncation) are the same as with a key.
        let root = tempfile::tempdir().unwrap();
        let connection = Connection::open(root.path().join("hush.db")).unwrap();
        let keys = Keys { database: DatabaseKey::random(), wrapping: Wrapping::unusable() };
        let presence = ProfileLock::shared(root.path()).unwrap();
        let store = Store::configure(root.path(), connection, keys, presence).unwrap();
        let needle = b"a-secret-that-must-vanish";
        for n in 0..50u8 {
            let message = MessageRecord {
                message_id: [n; 16],
                group_id: vec![1],
                sender: AccountId([3; 20]),
                text: String::from_utf8(needle.to_vec()).unwrap(),
                sent_at_ms: 1,
                event: false,
                expires_at_ms: Some(10),
                proof: None,
            };
            store.insert_message(&message, 2, false).unwrap();
        }
        let found = |root: &Path| {
            std::fs::read_dir(root).unwrap().any(|entry| {
                let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                bytes.windows(needle.len()).any(|w| w == needle)
            })
        };
        assert!(found(root.path()), "the test must see the plaintext before the purge");
        assert_eq!(store.purge_expired(10).unwrap(), 50);
        assert!(!found(root.path()), "a trace of the purged message is left on disk");
    }

    use hush_proto::{CertificatePin, WipeCode};

    use super::*;

    const CHEAP: KdfParams = KdfParams::FAST;

    fn code() -> WipeCode {
        WipeCode {
            address: "h:1".into(),
            pin: CertificatePin([1; 32]),
            account: AccountId([2; 20]),
            secret: [3; 32],
        }
    }

    #[test]
    fn panic_passphrase_wipes_and_reads_like_no_profile() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("profile");
        let store = Store::create(&dir, b"real", CHEAP, 10).unwrap();
        assert!(matches!(store.set_panic_passphrase(b"real", &code()), Err(StoreError::PanicIsPassphrase)));
        store.set_panic_passphrase(b"duress", &code()).unwrap();
        drop(store);
        let wiped = Store::open(&dir, b"duress");
        let Err(StoreError::Wiped(Some(got))) = wiped else { panic!() };
        assert_eq!(*got, code());
        assert!(!dir.exists());
        assert_eq!(StoreError::Wiped(None).to_string(), StoreError::NoProfile.to_string());
    }

    #[test]
    fn too_many_wrong_passphrases_wipe_and_a_right_one_resets_the_count() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("profile");
        drop(Store::create(&dir, b"real", CHEAP, 3).unwrap());
        for _ in 0..2 {
            assert!(matches!(Store::open(&dir, b"nope"), Err(StoreError::WrongPassphrase)));
        }
        drop(Store::open(&dir, b"real").unwrap());
        for _ in 0..2 {
            assert!(matches!(Store::open(&dir, b"nope"), Err(StoreError::WrongPassphrase)));
        }
        assert!(matches!(Store::open(&dir, b"nope"), Err(StoreError::Wiped(None))));
        assert!(!dir.exists());
    }

    #[test]
    fn expired_messages_are_deleted() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::create(root.path(), b"pw", CHEAP, 0).unwrap();
        let message = MessageRecord {
            message_id: [7; 16],
            group_id: vec![1],
            sender: AccountId([3; 20]),
            text: "gone soon".into(),
            sent_at_ms: 1,
            event: false,
            expires_at_ms: Some(100),
            proof: None,
        };
        store.insert_message(&message, 2, false).unwrap();
        assert_eq!(store.purge_expired(99).unwrap(), 0);
        assert_eq!(store.purge_expired(100).unwrap(), 1);
        assert!(store.history(&[vec![1]]).unwrap().is_empty());
    }
}

pub mod rekey;

#[cfg(test)]
mod rekey_tests;
