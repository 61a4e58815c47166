//! Reported messages in the embedded store: each is the reported sender's
//! account, the content as that sender signed it (checked before it gets
//! here), the signature and the reporter's reason. Nothing names the
//! reporter.

use hush_proto::AccountId;
use rusqlite::params;
use sha2::{Digest, Sha256};

use super::{as_i64, as_u64, SqliteStore};
use crate::store::{Report, StoreError, UnixSeconds, MAX_REPORTS};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account BLOB NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    content BLOB NOT NULL,
    signature BLOB NOT NULL,
    reason TEXT NOT NULL,
    received INTEGER NOT NULL
);
";

impl SqliteStore {
    pub(super) fn add_report(
        &self,
        account: &AccountId,
        content: &[u8],
        signature: &[u8; 64],
        reason: &str,
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        // The same message reported again (by another member, or twice)
        // is one report.
        let digest: [u8; 32] = Sha256::new().chain_update(account.0).chain_update(content).finalize().into();
        let held: i64 = self
            .connection
            .prepare_cached("SELECT COUNT(*) FROM reports")?
            .query_row([], |row| row.get(0))?;
        if as_u64(held) >= MAX_REPORTS {
            return Err(StoreError::Full);
        }
        self.connection
            .prepare_cached(
                "INSERT OR IGNORE INTO reports (account, digest, content, signature, reason, received)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![&account.0[..], &digest[..], content, &signature[..], reason, as_i64(now)])?;
        Ok(())
    }

    /// Every report kept, oldest first.
    pub fn reports(&self) -> Result<Vec<Report>, StoreError> {
        let mut query = self
            .connection
            .prepare("SELECT id, account, content, signature, reason, received FROM reports ORDER BY id")?;
        let rows = query.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, Vec<u8>>(2)?,
                row.get::<_, Vec<u8>>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, i64>(5)?,
            ))
        })?;
        let mut reports = Vec::new();
        for row in rows {
            let (id, account, content, signature, reason, received) = row?;
            let (Ok(account), Ok(signature)) =
                (<[u8; AccountId::LEN]>::try_from(account), <[u8; 64]>::try_from(signature))
            else {
                continue;
            };
            reports.push(Report {
                id: as_u64(id),
                account: AccountId(account),
                content,
                signature,
                reason,
                received: as_u64(received),
            });
        }
        Ok(reports)
    }

    /// Deletes a report the operator has dealt with; false if there was
    /// none with this id.
    pub fn dismiss_report(&mut self, id: u64) -> Result<bool, StoreError> {
        Ok(self.connection.execute("DELETE FROM reports WHERE id = ?1", [as_i64(id)])? > 0)
    }
}
