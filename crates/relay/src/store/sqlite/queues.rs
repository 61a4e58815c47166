//! Queues in the embedded store. A payload is stored once (`payloads`) and
//! referenced by an entry in each queue it was written to (`queue_entries`);
//! nothing links a queue to an account, and the relay keeps only the SHA-256
//! of each queue's write secret.

use std::sync::Arc;

use hush_proto::{Capability, QueueId};
use rusqlite::{params, OptionalExtension};
use subtle::ConstantTimeEq;

use super::{as_i64, as_u64, SqliteStore};
use crate::store::{
    CommitOutcome, Enqueued, Mailbox, Queued, SealedCommitRequest, StoreError, UnixSeconds, MAX_QUEUE_BYTES,
    MAX_QUEUE_ENTRIES, QUEUE_IDLE_DAYS,
};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queues (
    id BLOB PRIMARY KEY,
    owner_key BLOB NOT NULL,
    write_hash BLOB NOT NULL,
    next_seq INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    used_day INTEGER NOT NULL,
    wipe_tag BLOB
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS payloads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    arrived INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS payloads_by_expiry ON payloads(expires);
CREATE TABLE IF NOT EXISTS queue_entries (
    queue BLOB NOT NULL,
    seq INTEGER NOT NULL,
    payload INTEGER NOT NULL,
    len INTEGER NOT NULL,
    PRIMARY KEY (queue, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS queue_entries_by_payload ON queue_entries(payload);
CREATE TABLE IF NOT EXISTS spent_tokens (
    nonce BLOB PRIMARY KEY,
    day INTEGER NOT NULL
) WITHOUT ROWID;
";

/// A queue's counters, as a write needs them.
struct QueueState {
    write_hash: Vec<u8>,
    next_seq: u64,
    entries: u64,
    bytes: u64,
}

fn day(now: UnixSeconds) -> i64 {
    as_i64(hush_proto::tokens::day_of(now))
}

impl SqliteStore {
    pub(super) fn create_queue(
        &self,
        id: &QueueId,
        owner_key: &[u8; 32],
        write_hash: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        let inserted = self
            .connection
            .prepare_cached(
                "INSERT OR IGNORE INTO queues (id, owner_key, write_hash, next_seq, entries, bytes, used_day)
                 VALUES (?1, ?2, ?3, 1, 0, 0, ?4)",
            )?
            .execute(params![&id.0[..], &owner_key[..], &write_hash[..], day(now)])?;
        if inserted == 0 {
            return Err(StoreError::QueueIdTaken);
        }
        Ok(())
    }

    pub(super) fn queue_owner(&self, queue: &QueueId) -> Result<Option<[u8; 32]>, StoreError> {
        let key: Option<Vec<u8>> = self
            .connection
            .prepare_cached("SELECT owner_key FROM queues WHERE id = ?1")?
            .query_row(params![&queue.0[..]], |row| row.get(0))
            .optional()?;
        Ok(key.and_then(|key| <[u8; 32]>::try_from(key.as_slice()).ok()))
    }

    /// Notes that `queues` were proved today. The day, not the time: enough
    /// to delete queues nobody uses, without a record of when each was read.
    pub(super) fn touch_queues(&self, queues: &[QueueId], now: UnixSeconds) -> Result<(), StoreError> {
        let mut touch = self
            .connection
            .prepare_cached("UPDATE queues SET used_day = ?2 WHERE id = ?1 AND used_day < ?2")?;
        for queue in queues {
            touch.execute(params![&queue.0[..], day(now)])?;
        }
        Ok(())
    }

    fn queue_state(&self, queue: &QueueId) -> Result<Option<QueueState>, StoreError> {
        Ok(self
            .connection
            .prepare_cached("SELECT write_hash, next_seq, entries, bytes FROM queues WHERE id = ?1")?
            .query_row([&queue.0[..]], |row| {
                Ok(QueueState {
                    write_hash: row.get(0)?,
                    next_seq: as_u64(row.get(1)?),
                    entries: as_u64(row.get(2)?),
                    bytes: as_u64(row.get(3)?),
                })
            })
            .optional()?)
    }

    /// The queue's state if `capability` may write to it.
    fn writable(&self, capability: &Capability) -> Result<Option<QueueState>, StoreError> {
        let presented = capability.write_hash();
        Ok(self
            .queue_state(&capability.queue)?
            .filter(|state| bool::from(state.write_hash.as_slice().ct_eq(&presented[..]))))
    }

    fn insert_payload(
        &self,
        payload: &Arc<[u8]>,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> Result<i64, StoreError> {
        self.connection
            .prepare_cached("INSERT INTO payloads (arrived, expires, data) VALUES (?1, ?2, ?3)")?
            .execute(params![as_i64(now), as_i64(expires), &payload[..]])?;
        Ok(self.connection.last_insert_rowid())
    }

    /// Writes `payload` (stored once, lazily) to every queue of `targets`
    /// that accepts it; indexes of the others, offset by `first_index`,
    /// go to `refused`. A queue named twice is written once.
    #[allow(clippy::too_many_arguments)]
    fn write_to_queues(
        &self,
        targets: &[Capability],
        payload: &Arc<[u8]>,
        now: UnixSeconds,
        expires: UnixSeconds,
        first_index: u32,
        out: &mut Enqueued,
    ) -> Result<(), StoreError> {
        let len = payload.len() as u64;
        let mut stored = None;
        for (index, capability) in (first_index..).zip(targets) {
            let room = |state: &QueueState| {
                state.entries < MAX_QUEUE_ENTRIES && state.bytes.saturating_add(len) <= MAX_QUEUE_BYTES
            };
            let already = out.queued.iter().any(|queued| queued.to == Mailbox::Queue(capability.queue));
            let Some(state) = self.writable(capability)?.filter(|state| room(state) && !already) else {
                out.refused.push(index);
                continue;
            };
            let payload_id = match stored {
                Some(id) => id,
                None => *stored.insert(self.insert_payload(payload, now, expires)?),
            };
            self.connection
                .prepare_cached(
                    "INSERT INTO queue_entries (queue, seq, payload, len) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![&capability.queue.0[..], as_i64(state.next_seq), payload_id, as_i64(len)])?;
            self.connection
                .prepare_cached(
                    "UPDATE queues SET next_seq = ?2, entries = entries + 1, bytes = bytes + ?3 WHERE id = ?1",
                )?
                .execute(params![&capability.queue.0[..], as_i64(state.next_seq + 1), as_i64(len)])?;
            out.queued.push(Queued {
                id: state.next_seq,
                to: Mailbox::Queue(capability.queue),
                arrived_at: now,
                payload: Arc::clone(payload),
            });
        }
        Ok(())
    }

    pub(super) fn enqueue_sealed(
        &self,
        targets: &[Capability],
        payload: &Arc<[u8]>,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> Result<Enqueued, StoreError> {
        let mut out = Enqueued::default();
        self.write_to_queues(targets, payload, now, expires, 0, &mut out)?;
        Ok(out)
    }

    pub(super) fn commit_sealed(
        &self,
        request: &SealedCommitRequest,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> Result<CommitOutcome, StoreError> {
        let commit = &request.commit;
        if let Some(outcome) = self.order_commit(commit, expires)? {
            return Ok(outcome);
        }
        let mut out = Enqueued::default();
        self.write_to_queues(&request.targets, &commit.payload, now, expires, 0, &mut out)?;
        if let Some(welcome) = &commit.welcome {
            let welcome_targets = request.welcome_targets();
            for (account, index) in &welcome_targets.accounts {
                match self.account(account)? {
                    Some(record) if !record.deactivated => {
                        out.queued.extend(self.insert_queued(&[*account], welcome, now, expires)?);
                    }
                    _ => out.refused.push(*index),
                }
            }
            let mut welcomed = Enqueued::default();
            self.write_to_queues(&welcome_targets.queues, welcome, now, expires, 0, &mut welcomed)?;
            out.refused.extend(welcomed.refused.iter().map(|i| welcome_targets.queue_indexes[*i as usize]));
            out.queued.extend(welcomed.queued);
        }
        for (index, (capability, next_hash)) in request.rotations() {
            if self.writable(capability)?.is_some() {
                self.connection
                    .prepare_cached("UPDATE queues SET write_hash = ?2 WHERE id = ?1")?
                    .execute(params![&capability.queue.0[..], &next_hash[..]])?;
            } else {
                out.refused.push(index);
            }
        }
        out.refused.sort_unstable();
        out.queued.sort_by_key(|queued| queued.id);
        Ok(CommitOutcome::Accepted(out))
    }

    pub(super) fn ack_queue(&self, queue: &QueueId, seqs: &[u64]) -> Result<u64, StoreError> {
        let mut deleted = 0;
        let mut bytes = 0;
        for seq in seqs {
            let entry: Option<(i64, i64)> = self
                .connection
                .prepare_cached(
                    "DELETE FROM queue_entries WHERE queue = ?1 AND seq = ?2 RETURNING payload, len",
                )?
                .query_row(params![&queue.0[..], as_i64(*seq)], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            let Some((payload, len)) = entry else { continue };
            self.drop_if_unreferenced(payload)?;
            deleted += 1;
            bytes += as_u64(len);
        }
        if deleted > 0 {
            self.connection
                .prepare_cached("UPDATE queues SET entries = entries - ?2, bytes = bytes - ?3 WHERE id = ?1")?
                .execute(params![&queue.0[..], as_i64(deleted), as_i64(bytes)])?;
        }
        Ok(deleted)
    }

    fn drop_if_unreferenced(&self, payload: i64) -> Result<(), StoreError> {
        self.connection
            .prepare_cached(
                "DELETE FROM payloads WHERE id = ?1
                 AND NOT EXISTS (SELECT 1 FROM queue_entries WHERE payload = ?1)",
            )?
            .execute([payload])?;
        Ok(())
    }

    pub(super) fn rekey_queue(
        &self,
        queue: &QueueId,
        owner_key: &[u8; 32],
        wipe_tag: &[u8; 32],
    ) -> Result<bool, StoreError> {
        let changed = self
            .connection
            .prepare_cached("UPDATE queues SET owner_key = ?2, wipe_tag = ?3 WHERE id = ?1")?
            .execute(params![&queue.0[..], &owner_key[..], &wipe_tag[..]])?;
        Ok(changed == 1)
    }

    /// Deletes the queues a wipe secret tags (see [`hush_proto::wipe_tag`]);
    /// answers which.
    pub(super) fn delete_wiped_queues(&self, secret: &[u8; 32]) -> Result<Vec<QueueId>, StoreError> {
        let tagged: Vec<(Vec<u8>, Vec<u8>)> = self
            .connection
            .prepare_cached("SELECT id, wipe_tag FROM queues WHERE wipe_tag IS NOT NULL")?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut deleted = Vec::new();
        for (id, tag) in tagged {
            let Ok(id) = <[u8; QueueId::LEN]>::try_from(id.as_slice()) else { continue };
            let queue = QueueId(id);
            if bool::from(tag.as_slice().ct_eq(&hush_proto::wipe_tag(secret, &queue)[..])) {
                self.delete_queue(&queue)?;
                deleted.push(queue);
            }
        }
        Ok(deleted)
    }

    pub(super) fn delete_queue(&self, queue: &QueueId) -> Result<bool, StoreError> {
        let payloads: Vec<i64> = self
            .connection
            .prepare_cached("DELETE FROM queue_entries WHERE queue = ?1 RETURNING payload")?
            .query_map([&queue.0[..]], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        for payload in payloads {
            self.drop_if_unreferenced(payload)?;
        }
        let deleted =
            self.connection.prepare_cached("DELETE FROM queues WHERE id = ?1")?.execute([&queue.0[..]])?;
        Ok(deleted == 1)
    }

    pub(super) fn spend_token(&self, token_day: u64, nonce: &[u8; 32]) -> Result<bool, StoreError> {
        let inserted = self
            .connection
            .prepare_cached("INSERT OR IGNORE INTO spent_tokens (nonce, day) VALUES (?1, ?2)")?
            .execute(params![&nonce[..], as_i64(token_day)])?;
        Ok(inserted == 1)
    }

    pub(super) fn pending_queue(
        &self,
        queue: &QueueId,
        after: u64,
        limit: u32,
        now: UnixSeconds,
    ) -> Result<Vec<Queued>, StoreError> {
        let mut query = self.connection.prepare_cached(
            "SELECT e.seq, p.arrived, p.data FROM queue_entries e JOIN payloads p ON p.id = e.payload
             WHERE e.queue = ?1 AND e.seq > ?2 AND p.expires > ?4 ORDER BY e.seq LIMIT ?3",
        )?;
        let rows = query.query_map(params![&queue.0[..], as_i64(after), limit, as_i64(now)], |row| {
            Ok(Queued {
                id: as_u64(row.get(0)?),
                to: Mailbox::Queue(*queue),
                arrived_at: as_u64(row.get(1)?),
                payload: Arc::from(row.get::<_, Vec<u8>>(2)?),
            })
        })?;
        super::bounded_page(rows)
    }

    /// Deletes expired payloads with their entries, spent tokens of days
    /// past, and queues unused for [`QUEUE_IDLE_DAYS`]; answers how many
    /// entries went.
    pub(super) fn purge_queues(&self, now: UnixSeconds) -> Result<u64, StoreError> {
        let mut deleted = 0;
        let expired: Vec<i64> = self
            .connection
            .prepare_cached("SELECT id FROM payloads WHERE expires <= ?1")?
            .query_map([as_i64(now)], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        for payload in expired {
            let entries: Vec<(Vec<u8>, i64)> = self
                .connection
                .prepare_cached("DELETE FROM queue_entries WHERE payload = ?1 RETURNING queue, len")?
                .query_map([payload], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (queue, len) in entries {
                self.connection
                    .prepare_cached(
                        "UPDATE queues SET entries = entries - 1, bytes = bytes - ?2 WHERE id = ?1",
                    )?
                    .execute(params![queue, len])?;
                deleted += 1;
            }
            self.connection.prepare_cached("DELETE FROM payloads WHERE id = ?1")?.execute([payload])?;
        }
        // A token is good on its day and the next.
        self.connection.prepare_cached("DELETE FROM spent_tokens WHERE day + 1 < ?1")?.execute([day(now)])?;
        let idle: Vec<Vec<u8>> = self
            .connection
            .prepare_cached("SELECT id FROM queues WHERE used_day + ?2 < ?1")?
            .query_map(params![day(now), as_i64(QUEUE_IDLE_DAYS)], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        for queue in idle {
            let Ok(id) = <[u8; QueueId::LEN]>::try_from(queue.as_slice()) else { continue };
            self.delete_queue(&QueueId(id))?;
        }
        Ok(deleted)
    }
}
