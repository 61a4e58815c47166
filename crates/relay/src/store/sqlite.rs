//! The embedded store: SQLite in WAL mode with `synchronous=FULL`, one
//! transaction per batch (group commit), `secure_delete` so delivered
//! ciphertext does not linger in free pages.

use std::path::Path;
use std::sync::Arc;

use hush_proto::{AccountId, Capability, IdentityKey, QueueId};
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    AccountRecord, Admin, CommitOutcome, CommitRequest, Decision, Enqueued, GroupRecord, Mailbox, Operations,
    Queued, RelayStore, Report, SealedCommitRequest, Stats, StoreError, UnixSeconds,
};

mod queues;
mod reports;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    id BLOB PRIMARY KEY,
    identity_key BLOB NOT NULL UNIQUE,
    created INTEGER NOT NULL,
    deactivated INTEGER,
    wipe_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS wipe_orders (
    account BLOB PRIMARY KEY,
    secret BLOB NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS key_packages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    account BLOB NOT NULL,
    last_resort INTEGER NOT NULL,
    data BLOB NOT NULL,
    expires INTEGER
);
CREATE INDEX IF NOT EXISTS key_packages_by_account ON key_packages(account, last_resort, seq);
CREATE TABLE IF NOT EXISTS mailbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient BLOB NOT NULL,
    arrived INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS mailbox_by_recipient ON mailbox(recipient, id);
CREATE INDEX IF NOT EXISTS mailbox_by_expiry ON mailbox(expires);
CREATE TABLE IF NOT EXISTS group_epochs (
    id BLOB PRIMARY KEY,
    epoch INTEGER NOT NULL,
    auth_key BLOB
);
CREATE TABLE IF NOT EXISTS group_commits (
    group_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    digest BLOB NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (group_id, epoch)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS group_commits_by_expiry ON group_commits(expires);
CREATE TABLE IF NOT EXISTS invites (
    code_hash BLOB PRIMARY KEY,
    uses_left INTEGER NOT NULL,
    expires INTEGER NOT NULL
);
";

/// The relay's SQLite store.
pub struct SqliteStore {
    pub(in crate::store) connection: Connection,
    /// Set when SQLite itself rolled back the batch's transaction (a full
    /// disk, an I/O error): nothing after that may run outside it.
    aborted: std::cell::Cell<bool>,
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn as_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path)?;
        Self::configure(connection)
    }

    /// An in-memory store, for tests and tools.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::configure(Connection::open_in_memory()?)
    }

    fn configure(connection: Connection) -> Result<Self, StoreError> {
        connection.busy_timeout(std::time::Duration::from_secs(10))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "secure_delete", "ON")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.execute_batch(SCHEMA)?;
        connection.execute_batch(queues::SCHEMA)?;
        connection.execute_batch(reports::SCHEMA)?;
        migrate(&connection)?;
        Ok(Self { connection, aborted: std::cell::Cell::new(false) })
    }

    /// Leaves checkpoints to [`Self::checkpoint_passive`] on another
    /// connection, so the writer never stalls copying the WAL into the
    /// database in the middle of a batch.
    pub fn disable_auto_checkpoint(&self) -> Result<(), StoreError> {
        self.connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(())
    }

    /// Copies what it can of the WAL into the database without blocking the
    /// writer.
    pub fn checkpoint_passive(&self) -> Result<(), StoreError> {
        self.connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Checkpoints the WAL into the main file and truncates it.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.connection.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }

    fn register(
        &self,
        invite_hash: &[u8; 32],
        key: &IdentityKey,
        wipe_hash: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<AccountId, StoreError> {
        let account = key.account();
        let exists: Option<i64> = self
            .connection
            .prepare_cached("SELECT 1 FROM accounts WHERE id = ?1")?
            .query_row([&account.0[..]], |row| row.get(0))
            .optional()?;
        if exists.is_some() {
            return Err(StoreError::AlreadyRegistered);
        }
        let used = self.connection.prepare_cached("UPDATE invites SET uses_left = uses_left - 1 WHERE code_hash = ?1 AND uses_left > 0 AND expires > ?2")?.execute(
            params![&invite_hash[..], as_i64(now)],
        )?;
        if used == 0 {
            return Err(StoreError::BadInvite);
        }
        self.connection
            .execute("DELETE FROM invites WHERE code_hash = ?1 AND uses_left <= 0", [&invite_hash[..]])?;
        self.connection
            .prepare_cached(
                "INSERT INTO accounts (id, identity_key, created, wipe_hash) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![&account.0[..], &key.0[..], as_i64(now), &wipe_hash[..]])?;
        Ok(account)
    }

    fn account(&self, account: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        let row = self
            .connection
            .prepare_cached(
                "SELECT identity_key, deactivated IS NOT NULL,
                        (SELECT secret FROM wipe_orders WHERE wipe_orders.account = accounts.id)
                 FROM accounts WHERE id = ?1",
            )?
            .query_row([&account.0[..]], |row| {
                Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, bool>(1)?, row.get::<_, Option<Vec<u8>>>(2)?))
            })
            .optional()?;
        Ok(row.and_then(|(key, deactivated, wipe)| {
            let key = <[u8; 32]>::try_from(key.as_slice()).ok()?;
            let wipe_order = wipe.and_then(|secret| <[u8; 32]>::try_from(secret.as_slice()).ok());
            Some(AccountRecord { identity_key: IdentityKey(key), deactivated, wipe_order })
        }))
    }

    /// Checks a wipe secret against the account's stored hash; on a match,
    /// deactivates the account and keeps the order for the device.
    fn remote_wipe(
        &self,
        account: &AccountId,
        secret: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<Vec<QueueId>, StoreError> {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let stored: Option<Vec<u8>> = self
            .connection
            .prepare_cached("SELECT wipe_hash FROM accounts WHERE id = ?1")?
            .query_row([&account.0[..]], |row| row.get(0))
            .optional()?;
        let presented = Sha256::digest(secret);
        let matches = stored.is_some_and(|hash| bool::from(hash.as_slice().ct_eq(presented.as_slice())));
        if !matches {
            return Err(StoreError::BadWipeCode);
        }
        self.connection
            .prepare_cached(
                "INSERT OR REPLACE INTO wipe_orders (account, secret, created) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![&account.0[..], &secret[..], as_i64(now)])?;
        self.deactivate_in_place(account, now)?;
        // The device's queues, tagged with its wipe secret, go with it.
        self.delete_wiped_queues(secret)
    }

    fn deactivate_in_place(&self, account: &AccountId, now: UnixSeconds) -> Result<usize, StoreError> {
        let changed = self
            .connection
            .prepare_cached("UPDATE accounts SET deactivated = COALESCE(deactivated, ?2) WHERE id = ?1")?
            .execute(params![&account.0[..], as_i64(now)])?;
        self.connection
            .prepare_cached("DELETE FROM mailbox WHERE recipient = ?1")?
            .execute([&account.0[..]])?;
        self.connection
            .prepare_cached("DELETE FROM key_packages WHERE account = ?1")?
            .execute([&account.0[..]])?;
        Ok(changed)
    }

    fn require_active(&self, account: &AccountId) -> Result<(), StoreError> {
        match self.account(account)? {
            Some(record) if !record.deactivated => Ok(()),
            _ => Err(StoreError::UnknownAccount),
        }
    }

    fn add_key_packages(
        &self,
        account: &AccountId,
        one_time: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        expires: UnixSeconds,
        now: UnixSeconds,
    ) -> Result<u32, StoreError> {
        self.require_active(account)?;
        let mut insert = self.connection.prepare_cached(
            "INSERT INTO key_packages (account, last_resort, data, expires) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for package in one_time {
            insert.execute(params![&account.0[..], false, package, as_i64(expires)])?;
        }
        if let Some(package) = last_resort {
            self.connection
                .prepare_cached("DELETE FROM key_packages WHERE account = ?1 AND last_resort = 1")?
                .execute([&account.0[..]])?;
            insert.execute(params![&account.0[..], true, package, as_i64(expires)])?;
        }
        self.count_key_packages(account, now)
    }

    fn count_key_packages(&self, account: &AccountId, now: UnixSeconds) -> Result<u32, StoreError> {
        let count: i64 = self
            .connection
            .prepare_cached(
                "SELECT COUNT(*) FROM key_packages WHERE account = ?1 AND last_resort = 0
                 AND (expires IS NULL OR expires > ?2)",
            )?
            .query_row(params![&account.0[..], as_i64(now)], |row| row.get(0))?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    fn take_key_package(&self, account: &AccountId, now: UnixSeconds) -> Result<Vec<u8>, StoreError> {
        self.require_active(account)?;
        let row: Option<(i64, bool, Vec<u8>)> = self
            .connection
            .prepare_cached(
                "SELECT seq, last_resort, data FROM key_packages
                 WHERE account = ?1 AND (expires IS NULL OR expires > ?2)
                 ORDER BY last_resort ASC, seq ASC LIMIT 1",
            )?
            .query_row(params![&account.0[..], as_i64(now)], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        let (seq, last_resort, data) = row.ok_or(StoreError::NoKeyPackage)?;
        if !last_resort {
            self.connection.prepare_cached("DELETE FROM key_packages WHERE seq = ?1")?.execute([seq])?;
        }
        Ok(data)
    }

    fn insert_queued(
        &self,
        recipients: &[AccountId],
        payload: &Arc<[u8]>,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> Result<Vec<Queued>, StoreError> {
        let mut insert = self.connection.prepare_cached(
            "INSERT INTO mailbox (recipient, arrived, expires, payload) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut queued = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            insert.execute(params![&recipient.0[..], as_i64(now), as_i64(expires), &payload[..]])?;
            queued.push(Queued {
                id: as_u64(self.connection.last_insert_rowid()),
                to: Mailbox::Account(*recipient),
                arrived_at: now,
                payload: Arc::clone(payload),
            });
        }
        Ok(queued)
    }

    fn group(&self, group: &hush_proto::GroupId) -> Result<Option<GroupRecord>, StoreError> {
        let row = self
            .connection
            .prepare_cached("SELECT epoch, auth_key FROM group_epochs WHERE id = ?1")?
            .query_row([&group.0[..]], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Option<Vec<u8>>>(1)?)))
            .optional()?;
        Ok(row.map(|(epoch, key)| GroupRecord {
            epoch: as_u64(epoch),
            key: key.and_then(|key| <[u8; 32]>::try_from(key.as_slice()).ok()),
        }))
    }

    fn ordered_at(&self, group: &hush_proto::GroupId, epoch: u64) -> Result<Option<[u8; 32]>, StoreError> {
        let digest: Option<Vec<u8>> = self
            .connection
            .prepare_cached("SELECT digest FROM group_commits WHERE group_id = ?1 AND epoch = ?2")?
            .query_row(params![&group.0[..], as_i64(epoch)], |row| row.get(0))
            .optional()?;
        Ok(digest.and_then(|digest| <[u8; 32]>::try_from(digest.as_slice()).ok()))
    }

    /// Decides a commit against the group's record; if it is accepted,
    /// moves the group to the next epoch and answers `None`, else answers
    /// the outcome (or `NotAMember`). The caller queues the commit.
    fn order_commit(
        &self,
        commit: &CommitRequest,
        expires: UnixSeconds,
    ) -> Result<Option<CommitOutcome>, StoreError> {
        let group = self.group(&commit.group)?;
        let ordered = match &group {
            Some(group) if group.epoch != commit.epoch => self.ordered_at(&commit.group, commit.epoch)?,
            _ => None,
        };
        match commit.decide(group.as_ref(), ordered) {
            Decision::Accept => {}
            Decision::Repeated => return Ok(Some(CommitOutcome::Repeated)),
            Decision::Stale(current) => return Ok(Some(CommitOutcome::Stale { current })),
            Decision::NotAMember => return Err(StoreError::NotAMember),
        }
        self.connection
            .prepare_cached(
                "INSERT INTO group_epochs (id, epoch, auth_key) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET epoch = excluded.epoch, auth_key = excluded.auth_key",
            )?
            .execute(params![
                &commit.group.0[..],
                as_i64(commit.epoch.saturating_add(1)),
                &commit.next_key[..]
            ])?;
        // Kept as long as the commit itself, so a committer whose answer
        // was lost learns the outcome when it sends the commit again.
        self.connection
            .prepare_cached(
                "INSERT OR REPLACE INTO group_commits (group_id, epoch, digest, expires) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![&commit.group.0[..], as_i64(commit.epoch), &commit.digest()[..], as_i64(expires)])?;
        Ok(None)
    }

    fn pending(
        &self,
        account: &AccountId,
        after: u64,
        limit: u32,
        now: UnixSeconds,
    ) -> Result<Vec<Queued>, StoreError> {
        let mut query = self.connection.prepare_cached(
            "SELECT id, arrived, payload FROM mailbox
             WHERE recipient = ?1 AND id > ?2 AND expires > ?4 ORDER BY id LIMIT ?3",
        )?;
        let rows = query.query_map(params![&account.0[..], as_i64(after), limit, as_i64(now)], |row| {
            Ok(Queued {
                id: as_u64(row.get(0)?),
                to: Mailbox::Account(*account),
                arrived_at: as_u64(row.get(1)?),
                payload: Arc::from(row.get::<_, Vec<u8>>(2)?),
            })
        })?;
        bounded_page(rows)
    }

    fn ack(&self, account: &AccountId, ids: &[u64]) -> Result<u64, StoreError> {
        let mut delete =
            self.connection.prepare_cached("DELETE FROM mailbox WHERE id = ?1 AND recipient = ?2")?;
        let mut deleted = 0;
        for id in ids {
            deleted += delete.execute(params![as_i64(*id), &account.0[..]])? as u64;
        }
        Ok(deleted)
    }

    /// Runs one operation in a savepoint, so a failed one leaves no trace
    /// in the batch around it (or commits on its own outside one).
    fn atomic<T>(&self, work: impl FnOnce(&Self) -> Result<T, StoreError>) -> Result<T, StoreError> {
        if self.aborted.get() {
            return Err(StoreError::Batch("the batch's transaction was rolled back".into()));
        }
        self.connection.prepare_cached("SAVEPOINT op")?.execute([])?;
        let result = work(self);
        // After some errors SQLite has already rolled the whole transaction
        // back; releasing the savepoint then would let the rest of the
        // batch commit piecemeal, outside any transaction.
        let undone = match &result {
            Ok(_) => Ok(()),
            Err(_) if self.connection.is_autocommit() => Err(()),
            Err(_) => self
                .connection
                .prepare_cached("ROLLBACK TO op")
                .and_then(|mut s| s.execute([]))
                .map(drop)
                .map_err(drop),
        };
        let released = self.connection.prepare_cached("RELEASE op").and_then(|mut s| s.execute([]));
        if undone.is_err() || released.is_err() {
            self.aborted.set(true);
            return Err(StoreError::Batch("the batch's transaction was rolled back".into()));
        }
        result
    }
}

/// Collects rows into a page of at most [`super::PAGE_BYTES`] of payload (a
/// first payload larger than that comes alone). Rows are read one at a
/// time: stopping here reads no further.
fn bounded_page(rows: impl Iterator<Item = rusqlite::Result<Queued>>) -> Result<Vec<Queued>, StoreError> {
    let mut page = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let queued = row?;
        bytes += queued.payload.len();
        if !page.is_empty() && bytes > super::PAGE_BYTES {
            break;
        }
        page.push(queued);
    }
    Ok(page)
}

/// Brings a store written by an older relay up to the current schema.
fn migrate(connection: &Connection) -> Result<(), StoreError> {
    // Columns added since version 1: (table, column, type). Key packages
    // stored before they had an expiry never expire at the relay; their
    // devices replace the last-resort one within a week.
    for (table, column, kind) in
        [("group_epochs", "auth_key", "BLOB"), ("key_packages", "expires", "INTEGER")]
    {
        let mut query = connection.prepare("SELECT name FROM pragma_table_info(?1)")?;
        let columns: Vec<String> = query.query_map([table], |row| row.get(0))?.collect::<Result<_, _>>()?;
        if !columns.iter().any(|name| name == column) {
            connection.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    Ok(())
}

impl Operations for SqliteStore {
    fn register(
        &mut self,
        invite_hash: &[u8; 32],
        identity_key: &IdentityKey,
        wipe_hash: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<AccountId, StoreError> {
        self.atomic(|store| store.register(invite_hash, identity_key, wipe_hash, now))
    }

    fn remote_wipe(
        &mut self,
        account: &AccountId,
        secret: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<Vec<QueueId>, StoreError> {
        self.atomic(|store| store.remote_wipe(account, secret, now))
    }

    fn account(&mut self, account: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        SqliteStore::account(self, account)
    }

    fn add_key_packages(
        &mut self,
        account: &AccountId,
        one_time: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        expires: UnixSeconds,
        now: UnixSeconds,
    ) -> Result<u32, StoreError> {
        self.atomic(|store| store.add_key_packages(account, one_time, last_resort, expires, now))
    }

    fn count_key_packages(&mut self, account: &AccountId, now: UnixSeconds) -> Result<u32, StoreError> {
        SqliteStore::count_key_packages(self, account, now)
    }

    fn take_key_package(&mut self, account: &AccountId, now: UnixSeconds) -> Result<Vec<u8>, StoreError> {
        self.atomic(|store| store.take_key_package(account, now))
    }

    fn create_queue(
        &mut self,
        id: &QueueId,
        owner_key: &[u8; 32],
        write_hash: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        self.atomic(|store| store.create_queue(id, owner_key, write_hash, now))
    }

    fn queue_owner(&mut self, queue: &QueueId) -> Result<Option<[u8; 32]>, StoreError> {
        SqliteStore::queue_owner(self, queue)
    }

    fn touch_queues(&mut self, queues: &[QueueId], now: UnixSeconds) -> Result<(), StoreError> {
        self.atomic(|store| store.touch_queues(queues, now))
    }

    fn enqueue_sealed(
        &mut self,
        targets: &[Capability],
        payload: &Arc<[u8]>,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> Result<Enqueued, StoreError> {
        self.atomic(|store| store.enqueue_sealed(targets, payload, now, expires))
    }

    fn commit_sealed(
        &mut self,
        commit: &SealedCommitRequest,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> Result<CommitOutcome, StoreError> {
        self.atomic(|store| store.commit_sealed(commit, now, expires))
    }

    fn ack_queue(&mut self, queue: &QueueId, seqs: &[u64]) -> Result<u64, StoreError> {
        self.atomic(|store| store.ack_queue(queue, seqs))
    }

    fn rekey_queue(
        &mut self,
        queue: &QueueId,
        owner_key: &[u8; 32],
        wipe_tag: &[u8; 32],
    ) -> Result<bool, StoreError> {
        self.atomic(|store| store.rekey_queue(queue, owner_key, wipe_tag))
    }

    fn delete_queue(&mut self, queue: &QueueId) -> Result<bool, StoreError> {
        self.atomic(|store| store.delete_queue(queue))
    }

    fn spend_token(&mut self, day: u64, nonce: &[u8; 32]) -> Result<bool, StoreError> {
        self.atomic(|store| store.spend_token(day, nonce))
    }

    fn add_report(
        &mut self,
        account: &AccountId,
        content: &[u8],
        signature: &[u8; 64],
        reason: &str,
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        self.atomic(|store| store.add_report(account, content, signature, reason, now))
    }

    fn pending(
        &mut self,
        mailbox: &Mailbox,
        after: u64,
        limit: u32,
        now: UnixSeconds,
    ) -> Result<Vec<Queued>, StoreError> {
        match mailbox {
            Mailbox::Account(account) => SqliteStore::pending(self, account, after, limit, now),
            Mailbox::Queue(queue) => self.pending_queue(queue, after, limit, now),
        }
    }

    fn ack(&mut self, account: &AccountId, ids: &[u64]) -> Result<u64, StoreError> {
        self.atomic(|store| store.ack(account, ids))
    }

    fn purge_expired(&mut self, now: UnixSeconds) -> Result<u64, StoreError> {
        self.atomic(|store| {
            let deleted = store
                .connection
                .prepare_cached("DELETE FROM mailbox WHERE expires <= ?1")?
                .execute([as_i64(now)])?;
            for table in ["group_commits", "key_packages"] {
                store
                    .connection
                    .prepare_cached(&format!("DELETE FROM {table} WHERE expires <= ?1"))?
                    .execute([as_i64(now)])?;
            }
            store.purge_reports(now)?;
            Ok(deleted as u64 + store.purge_queues(now)?)
        })
    }
}

impl Admin for SqliteStore {
    fn add_invite(
        &mut self,
        code_hash: &[u8; 32],
        uses: u32,
        expires: UnixSeconds,
    ) -> Result<(), StoreError> {
        self.connection
            .prepare_cached("INSERT INTO invites (code_hash, uses_left, expires) VALUES (?1, ?2, ?3)")?
            .execute(params![&code_hash[..], uses, as_i64(expires)])?;
        Ok(())
    }

    fn deactivate(&mut self, account: &AccountId, now: UnixSeconds) -> Result<bool, StoreError> {
        self.connection.execute_batch("BEGIN IMMEDIATE")?;
        match self.deactivate_in_place(account, now) {
            Ok(changed) => {
                self.connection.execute_batch("COMMIT")?;
                Ok(changed > 0)
            }
            Err(error) => {
                let _ = self.connection.execute_batch("ROLLBACK");
                Err(error)
            }
        }
    }

    fn provision(
        &mut self,
        accounts: &[(IdentityKey, [u8; 32])],
        now: UnixSeconds,
    ) -> Result<usize, StoreError> {
        let transaction = self.connection.transaction()?;
        let mut added = 0;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT OR IGNORE INTO accounts (id, identity_key, created, wipe_hash) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (key, wipe_hash) in accounts {
                let id = key.account();
                added += insert.execute(params![&id.0[..], &key.0[..], as_i64(now), &wipe_hash[..]])?;
            }
        }
        transaction.commit()?;
        Ok(added)
    }

    fn stats(&mut self) -> Result<Stats, StoreError> {
        let count = |sql: &str| -> Result<u64, StoreError> {
            Ok(as_u64(self.connection.query_row(sql, [], |row| row.get::<_, i64>(0))?))
        };
        Ok(Stats {
            accounts: count("SELECT COUNT(*) FROM accounts")?,
            active_accounts: count("SELECT COUNT(*) FROM accounts WHERE deactivated IS NULL")?,
            queued_messages: count(
                "SELECT (SELECT COUNT(*) FROM mailbox) + (SELECT COUNT(*) FROM queue_entries)",
            )?,
            queued_bytes: count(
                "SELECT (SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM mailbox)
                      + (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM payloads)",
            )?,
            queues: count("SELECT COUNT(*) FROM queues")?,
        })
    }

    fn reports(&mut self) -> Result<Vec<Report>, StoreError> {
        self.kept_reports()
    }

    fn dismiss_report(&mut self, id: u64) -> Result<bool, StoreError> {
        Ok(self.connection.execute("DELETE FROM reports WHERE id = ?1", [as_i64(id)])? > 0)
    }
}

impl RelayStore for SqliteStore {
    fn batch(&mut self, work: &mut dyn FnMut(&mut dyn Operations)) -> Result<(), StoreError> {
        self.aborted.set(false);
        self.connection.execute_batch("BEGIN IMMEDIATE")?;
        work(self);
        if self.aborted.replace(false) {
            if !self.connection.is_autocommit() {
                let _ = self.connection.execute_batch("ROLLBACK");
            }
            return Err(StoreError::Batch("the batch's transaction was rolled back".into()));
        }
        if let Err(error) = self.connection.execute_batch("COMMIT") {
            let _ = self.connection.execute_batch("ROLLBACK");
            return Err(error.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
