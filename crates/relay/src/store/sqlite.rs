//! The embedded store: SQLite in WAL mode with `synchronous=FULL`, one
//! transaction per batch (group commit), `secure_delete` so delivered
//! ciphertext does not linger in free pages.

use std::path::Path;
use std::sync::Arc;

use hush_proto::{AccountId, GroupId, IdentityKey};
use rusqlite::{params, Connection, OptionalExtension};

use super::{AccountRecord, CommitOutcome, Op, Output, Queued, RelayStore, Stats, StoreError, UnixSeconds};

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
    data BLOB NOT NULL
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
    epoch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS invites (
    code_hash BLOB PRIMARY KEY,
    uses_left INTEGER NOT NULL,
    expires INTEGER NOT NULL
);
";

/// The relay's SQLite store.
pub struct SqliteStore {
    connection: Connection,
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
        Ok(Self { connection })
    }

    /// Stores a new invite (by the hash of its code).
    pub fn add_invite(
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

    /// Deactivates an account and deletes its mailbox and key packages.
    /// Returns false if there is no such account.
    pub fn deactivate(&mut self, account: &AccountId, now: UnixSeconds) -> Result<bool, StoreError> {
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

    /// Pre-enrols accounts (identity key, SHA-256 of the wipe secret) without
    /// invites, in one transaction; returns how many were new.
    pub fn provision(
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

    /// Counts for the operator.
    pub fn stats(&self) -> Result<Stats, StoreError> {
        let count = |sql: &str| -> Result<u64, StoreError> {
            Ok(as_u64(self.connection.query_row(sql, [], |row| row.get::<_, i64>(0))?))
        };
        Ok(Stats {
            accounts: count("SELECT COUNT(*) FROM accounts")?,
            active_accounts: count("SELECT COUNT(*) FROM accounts WHERE deactivated IS NULL")?,
            queued_messages: count("SELECT COUNT(*) FROM mailbox")?,
            queued_bytes: count("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM mailbox")?,
        })
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

    fn run(&self, op: Op) -> Result<Output, StoreError> {
        match op {
            Op::Register { invite_hash, identity_key, wipe_hash, now } => {
                self.register(&invite_hash, &identity_key, &wipe_hash, now)
            }
            Op::RemoteWipe { account, secret, now } => self.remote_wipe(&account, &secret, now),
            Op::Account { account } => self.account(&account).map(Output::Account),
            Op::AddKeyPackages { account, one_time, last_resort } => {
                self.add_key_packages(&account, &one_time, last_resort.as_deref())
            }
            Op::CountKeyPackages { account } => {
                self.count_key_packages(&account).map(Output::KeyPackageCount)
            }
            Op::TakeKeyPackage { account } => self.take_key_package(&account),
            Op::Enqueue { recipients, payload, now, expires } => {
                self.enqueue(&recipients, &payload, now, expires).map(Output::Enqueued)
            }
            Op::Commit { group, epoch, recipients, payload, welcome, now, expires } => {
                self.commit(&group, epoch, &recipients, &payload, welcome.as_ref(), now, expires)
            }
            Op::Pending { account, after, limit, now } => {
                self.pending(&account, after, limit, now).map(Output::Pending)
            }
            Op::Ack { account, ids } => self.ack(&account, &ids).map(Output::Deleted),
            Op::PurgeExpired { now } => {
                let deleted = self
                    .connection
                    .prepare_cached("DELETE FROM mailbox WHERE expires <= ?1")?
                    .execute([as_i64(now)])?;
                Ok(Output::Deleted(deleted as u64))
            }
        }
    }

    fn register(
        &self,
        invite_hash: &[u8; 32],
        key: &IdentityKey,
        wipe_hash: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<Output, StoreError> {
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
        Ok(Output::Registered(account))
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
    ) -> Result<Output, StoreError> {
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
        Ok(Output::Deleted(1))
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
    ) -> Result<Output, StoreError> {
        self.require_active(account)?;
        let mut insert = self
            .connection
            .prepare_cached("INSERT INTO key_packages (account, last_resort, data) VALUES (?1, ?2, ?3)")?;
        for package in one_time {
            insert.execute(params![&account.0[..], false, package])?;
        }
        if let Some(package) = last_resort {
            self.connection
                .prepare_cached("DELETE FROM key_packages WHERE account = ?1 AND last_resort = 1")?
                .execute([&account.0[..]])?;
            insert.execute(params![&account.0[..], true, package])?;
        }
        self.count_key_packages(account).map(Output::KeyPackageCount)
    }

    fn count_key_packages(&self, account: &AccountId) -> Result<u32, StoreError> {
        let count: i64 = self
            .connection
            .prepare_cached("SELECT COUNT(*) FROM key_packages WHERE account = ?1 AND last_resort = 0")?
            .query_row([&account.0[..]], |row| row.get(0))?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    fn take_key_package(&self, account: &AccountId) -> Result<Output, StoreError> {
        self.require_active(account)?;
        let row: Option<(i64, bool, Vec<u8>)> = self
            .connection
            .prepare_cached(
                "SELECT seq, last_resort, data FROM key_packages WHERE account = ?1
                 ORDER BY last_resort ASC, seq ASC LIMIT 1",
            )?
            .query_row([&account.0[..]], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .optional()?;
        let (seq, last_resort, data) = row.ok_or(StoreError::NoKeyPackage)?;
        if !last_resort {
            self.connection.prepare_cached("DELETE FROM key_packages WHERE seq = ?1")?.execute([seq])?;
        }
        Ok(Output::KeyPackage(data))
    }

    /// Queues `payload` for every active recipient. Deactivated (wiped)
    /// and unknown recipients are skipped, so a member who wiped their
    /// device cannot make a group's sends fail; a send none of whose
    /// recipients is active is refused.
    fn enqueue(
        &self,
        recipients: &[AccountId],
        payload: &Arc<[u8]>,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> Result<Vec<Queued>, StoreError> {
        let active = self.active_only(recipients)?;
        if active.is_empty() && !recipients.is_empty() {
            return Err(StoreError::UnknownAccount);
        }
        self.insert_queued(&active, payload, now, expires)
    }

    fn active_only(&self, recipients: &[AccountId]) -> Result<Vec<AccountId>, StoreError> {
        let mut active = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            if matches!(self.account(recipient)?, Some(record) if !record.deactivated) {
                active.push(*recipient);
            }
        }
        Ok(active)
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
                recipient: *recipient,
                arrived_at: now,
                payload: Arc::clone(payload),
            });
        }
        Ok(queued)
    }

    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        group: &GroupId,
        epoch: u64,
        recipients: &[AccountId],
        payload: &Arc<[u8]>,
        welcome: Option<&(Vec<AccountId>, Arc<[u8]>)>,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> Result<Output, StoreError> {
        let current: Option<u64> = self
            .connection
            .prepare_cached("SELECT epoch FROM group_epochs WHERE id = ?1")?
            .query_row([&group.0[..]], |row| row.get::<_, i64>(0))
            .optional()?
            .map(as_u64);
        // A group unknown to the relay starts at the epoch of its first commit.
        if let Some(current) = current.filter(|current| *current != epoch) {
            return Ok(Output::Commit(CommitOutcome::Stale { current }));
        }
        // The commit goes to every active member; one that wiped its device
        // (or is being removed after it did) is skipped, and the group
        // moves on. New members must be active.
        let members = self.active_only(recipients)?;
        let mut queued = self.insert_queued(&members, payload, now, expires)?;
        if let Some((new_members, welcome)) = welcome {
            for member in new_members {
                self.require_active(member)?;
            }
            queued.extend(self.insert_queued(new_members, welcome, now, expires)?);
        }
        self.connection
            .prepare_cached(
                "INSERT INTO group_epochs (id, epoch) VALUES (?1, ?2)
             ON CONFLICT(id) DO UPDATE SET epoch = excluded.epoch",
            )?
            .execute(params![&group.0[..], as_i64(epoch.saturating_add(1))])?;
        Ok(Output::Commit(CommitOutcome::Accepted(queued)))
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
                recipient: *account,
                arrived_at: as_u64(row.get(1)?),
                payload: Arc::from(row.get::<_, Vec<u8>>(2)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Answers a read-only operation outside any write batch (see
    /// [`crate::actor::spawn_reader`]).
    pub fn read(&self, op: Op) -> Result<Output, StoreError> {
        match op {
            Op::Pending { account, after, limit, now } => {
                self.pending(&account, after, limit, now).map(Output::Pending)
            }
            _ => Err(StoreError::Batch("not a read-only operation".into())),
        }
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

    fn run_in_savepoint(&mut self, op: Op) -> Result<Output, StoreError> {
        self.connection.prepare_cached("SAVEPOINT op")?.execute([])?;
        let result = self.run(op);
        if result.is_err() {
            self.connection.prepare_cached("ROLLBACK TO op")?.execute([])?;
        }
        self.connection.prepare_cached("RELEASE op")?.execute([])?;
        result
    }
}

impl RelayStore for SqliteStore {
    fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Output, StoreError>> {
        let count = ops.len();
        if let Err(error) = self.connection.execute_batch("BEGIN IMMEDIATE") {
            return fail_all(count, &error);
        }
        let results: Vec<_> = ops.into_iter().map(|op| self.run_in_savepoint(op)).collect();
        match self.connection.execute_batch("COMMIT") {
            Ok(()) => results,
            Err(error) => {
                let _ = self.connection.execute_batch("ROLLBACK");
                fail_all(count, &error)
            }
        }
    }
}

fn fail_all(count: usize, error: &rusqlite::Error) -> Vec<Result<Output, StoreError>> {
    (0..count).map(|_| Err(StoreError::Batch(error.to_string()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_invite() -> (SqliteStore, [u8; 32]) {
        let mut store = SqliteStore::in_memory().unwrap();
        let hash = [5u8; 32];
        store.add_invite(&hash, 2, 1_000).unwrap();
        (store, hash)
    }

    fn one(store: &mut SqliteStore, op: Op) -> Result<Output, StoreError> {
        store.apply(vec![op]).pop().unwrap()
    }

    fn register(store: &mut SqliteStore, hash: [u8; 32], key: u8) -> AccountId {
        match one(
            store,
            Op::Register {
                invite_hash: hash,
                identity_key: IdentityKey([key; 32]),
                wipe_hash: [0; 32],
                now: 10,
            },
        ) {
            Ok(Output::Registered(id)) => id,
            other => panic!("register failed: {other:?}"),
        }
    }

    #[test]
    fn invite_is_used_up_after_its_uses() {
        let (mut store, hash) = store_with_invite();
        register(&mut store, hash, 1);
        register(&mut store, hash, 2);
        let third = one(
            &mut store,
            Op::Register {
                invite_hash: hash,
                identity_key: IdentityKey([3; 32]),
                wipe_hash: [0; 32],
                now: 10,
            },
        );
        assert!(matches!(third, Err(StoreError::BadInvite)));
    }

    #[test]
    fn expired_invite_is_refused() {
        let (mut store, hash) = store_with_invite();
        let late = one(
            &mut store,
            Op::Register {
                invite_hash: hash,
                identity_key: IdentityKey([3; 32]),
                wipe_hash: [0; 32],
                now: 5_000,
            },
        );
        assert!(matches!(late, Err(StoreError::BadInvite)));
    }

    #[test]
    fn one_time_key_packages_are_consumed_then_last_resort_is_reused() {
        let (mut store, hash) = store_with_invite();
        let alice = register(&mut store, hash, 1);
        one(
            &mut store,
            Op::AddKeyPackages { account: alice, one_time: vec![vec![1]], last_resort: Some(vec![9]) },
        )
        .unwrap();
        let take = |store: &mut SqliteStore| match one(store, Op::TakeKeyPackage { account: alice }) {
            Ok(Output::KeyPackage(kp)) => kp,
            other => panic!("{other:?}"),
        };
        assert_eq!(take(&mut store), vec![1]);
        assert_eq!(take(&mut store), vec![9]);
        assert_eq!(take(&mut store), vec![9]);
    }

    #[test]
    fn second_commit_for_an_epoch_is_stale() {
        let (mut store, hash) = store_with_invite();
        let alice = register(&mut store, hash, 1);
        let group = GroupId(vec![1, 2, 3]);
        let commit = |epoch| Op::Commit {
            group: group.clone(),
            epoch,
            recipients: vec![alice],
            payload: Arc::from(&b"c"[..]),
            welcome: None,
            now: 1,
            expires: 100,
        };
        assert!(matches!(one(&mut store, commit(0)), Ok(Output::Commit(CommitOutcome::Accepted(_)))));
        assert!(matches!(
            one(&mut store, commit(0)),
            Ok(Output::Commit(CommitOutcome::Stale { current: 1 }))
        ));
        assert!(matches!(one(&mut store, commit(1)), Ok(Output::Commit(CommitOutcome::Accepted(_)))));
    }

    #[test]
    fn a_failing_op_does_not_undo_its_batch_neighbours() {
        let (mut store, hash) = store_with_invite();
        let alice = register(&mut store, hash, 1);
        let stranger = AccountId([0; 20]);
        let payload: Arc<[u8]> = Arc::from(&b"x"[..]);
        let results = store.apply(vec![
            Op::Enqueue { recipients: vec![alice], payload: payload.clone(), now: 1, expires: 100 },
            Op::Enqueue { recipients: vec![stranger], payload, now: 1, expires: 100 },
        ]);
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(StoreError::UnknownAccount)));
        assert_eq!(store.stats().unwrap().queued_messages, 1);
    }

    #[test]
    fn a_deactivated_recipient_is_skipped_and_does_not_fail_a_send_or_a_commit() {
        let (mut store, hash) = store_with_invite();
        let alice = register(&mut store, hash, 1);
        let carol = register(&mut store, hash, 2);
        store.deactivate(&carol, 5).unwrap();
        let payload: Arc<[u8]> = Arc::from(&b"x"[..]);
        let Ok(Output::Enqueued(queued)) = one(
            &mut store,
            Op::Enqueue { recipients: vec![alice, carol], payload: payload.clone(), now: 6, expires: 100 },
        ) else {
            panic!("a send with one wiped member failed")
        };
        assert_eq!(queued.iter().map(|q| q.recipient).collect::<Vec<_>>(), [alice]);
        // Removing the wiped member: the commit is addressed to her too.
        let commit = Op::Commit {
            group: GroupId(vec![7; 16]),
            epoch: 3,
            recipients: vec![alice, carol],
            payload: payload.clone(),
            welcome: None,
            now: 6,
            expires: 100,
        };
        let Ok(Output::Commit(CommitOutcome::Accepted(queued))) = one(&mut store, commit) else {
            panic!("a commit with a wiped member failed")
        };
        assert_eq!(queued.len(), 1);
        // A Welcome to a wiped account is still refused.
        let commit = Op::Commit {
            group: GroupId(vec![7; 16]),
            epoch: 4,
            recipients: vec![alice],
            payload: payload.clone(),
            welcome: Some((vec![carol], payload)),
            now: 6,
            expires: 100,
        };
        assert!(matches!(one(&mut store, commit), Err(StoreError::UnknownAccount)));
    }

    #[test]
    fn ack_deletes_only_the_owners_rows_and_purge_drops_expired() {
        let (mut store, hash) = store_with_invite();
        let alice = register(&mut store, hash, 1);
        let bob = register(&mut store, hash, 2);
        let payload: Arc<[u8]> = Arc::from(&b"x"[..]);
        let Ok(Output::Enqueued(queued)) =
            one(&mut store, Op::Enqueue { recipients: vec![alice, bob], payload, now: 1, expires: 50 })
        else {
            panic!()
        };
        let ids: Vec<u64> = queued.iter().map(|q| q.id).collect();
        assert!(matches!(
            one(&mut store, Op::Ack { account: alice, ids: ids.clone() }),
            Ok(Output::Deleted(1))
        ));
        assert!(matches!(one(&mut store, Op::PurgeExpired { now: 50 }), Ok(Output::Deleted(1))));
        assert_eq!(store.stats().unwrap().queued_messages, 0);
    }

    #[test]
    fn the_reader_answers_pending_from_committed_state_and_nothing_else() {
        let (mut store, hash) = store_with_invite();
        let alice = register(&mut store, hash, 1);
        let payload: Arc<[u8]> = Arc::from(&b"x"[..]);
        let enqueue = Op::Enqueue { recipients: vec![alice], payload, now: 1, expires: 50 };
        assert!(one(&mut store, enqueue).is_ok());
        let pending = Op::Pending { account: alice, after: 0, limit: 10, now: 2 };
        assert!(matches!(store.read(pending), Ok(Output::Pending(page)) if page.len() == 1));
        let write = Op::Ack { account: alice, ids: vec![1] };
        assert!(matches!(store.read(write), Err(StoreError::Batch(_))));
        assert_eq!(store.stats().unwrap().queued_messages, 1, "a refused write changed nothing");
    }

    #[test]
    fn deactivation_drops_mailbox_and_key_packages() {
        let (mut store, hash) = store_with_invite();
        let alice = register(&mut store, hash, 1);
        one(&mut store, Op::AddKeyPackages { account: alice, one_time: vec![vec![1]], last_resort: None })
            .unwrap();
        one(
            &mut store,
            Op::Enqueue { recipients: vec![alice], payload: Arc::from(&b"x"[..]), now: 1, expires: 9 },
        )
        .unwrap();
        assert!(store.deactivate(&alice, 2).unwrap());
        let stats = store.stats().unwrap();
        assert_eq!((stats.active_accounts, stats.queued_messages), (0, 0));
        assert!(matches!(
            one(&mut store, Op::TakeKeyPackage { account: alice }),
            Err(StoreError::UnknownAccount)
        ));
    }
}

#[cfg(test)]
mod wipe_tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn only_the_right_wipe_secret_orders_a_wipe() {
        let mut store = SqliteStore::in_memory().unwrap();
        store.add_invite(&[1; 32], 1, 100).unwrap();
        let secret = [42u8; 32];
        let wipe_hash: [u8; 32] = Sha256::digest(secret).into();
        let op = Op::Register { invite_hash: [1; 32], identity_key: IdentityKey([1; 32]), wipe_hash, now: 1 };
        let Ok(Output::Registered(alice)) = store.apply(vec![op]).pop().unwrap() else { panic!() };
        let wrong =
            store.apply(vec![Op::RemoteWipe { account: alice, secret: [41; 32], now: 2 }]).pop().unwrap();
        assert!(matches!(wrong, Err(StoreError::BadWipeCode)));
        let Ok(Output::Account(Some(record))) =
            store.apply(vec![Op::Account { account: alice }]).pop().unwrap()
        else {
            panic!()
        };
        assert!(!record.deactivated && record.wipe_order.is_none());
        store.apply(vec![Op::RemoteWipe { account: alice, secret, now: 2 }]).pop().unwrap().unwrap();
        let Ok(Output::Account(Some(record))) =
            store.apply(vec![Op::Account { account: alice }]).pop().unwrap()
        else {
            panic!()
        };
        assert!(record.deactivated);
        assert_eq!(record.wipe_order, Some(secret));
    }

    #[test]
    fn expired_payloads_are_not_delivered_even_before_the_purge() {
        let mut store = SqliteStore::in_memory().unwrap();
        store.add_invite(&[1; 32], 1, 100).unwrap();
        let op = Op::Register {
            invite_hash: [1; 32],
            identity_key: IdentityKey([1; 32]),
            wipe_hash: [0; 32],
            now: 1,
        };
        let Ok(Output::Registered(alice)) = store.apply(vec![op]).pop().unwrap() else { panic!() };
        let payload: Arc<[u8]> = Arc::from(&b"x"[..]);
        store.apply(vec![Op::Enqueue { recipients: vec![alice], payload, now: 1, expires: 10 }]);
        let mut pending =
            |now| match store.apply(vec![Op::Pending { account: alice, after: 0, limit: 10, now }]).pop() {
                Some(Ok(Output::Pending(p))) => p.len(),
                other => panic!("{other:?}"),
            };
        assert_eq!(pending(9), 1);
        assert_eq!(pending(10), 0);
    }
}
