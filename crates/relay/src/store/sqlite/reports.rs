//! Reported messages in the embedded store: each is the reported sender's
//! account, the content as that sender signed it (checked before it gets
//! here), the signature and the reporter's reason. Nothing names the
//! reporter.

use hush_proto::AccountId;
use rusqlite::{params, OptionalExtension};

use super::{as_i64, as_u64, SqliteStore};
use crate::store::{
    Report, StoreError, UnixSeconds, MAX_REPORTS, MAX_REPORTS_PER_ACCOUNT, MAX_REPORT_BYTES, REPORT_DAYS,
};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account BLOB NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    content BLOB NOT NULL,
    signature BLOB NOT NULL,
    reason TEXT NOT NULL,
    received INTEGER NOT NULL,
    more INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS reports_by_account ON reports(account, id);
";

/// The hour `now` falls in: when a report arrived, no finer.
fn hour(now: UnixSeconds) -> UnixSeconds {
    now - now % 3600
}

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
        let digest = crate::store::report_digest(account, content);
        let known: Option<i64> = self
            .connection
            .prepare_cached("SELECT id FROM reports WHERE digest = ?1")?
            .query_row([&digest[..]], |row| row.get(0))
            .optional()?;
        if known.is_some() {
            return Ok(());
        }
        let (about, oldest): (i64, Option<i64>) = self
            .connection
            .prepare_cached("SELECT COUNT(*), MIN(id) FROM reports WHERE account = ?1")?
            .query_row([&account.0[..]], |row| Ok((row.get(0)?, row.get(1)?)))?;
        if let (true, Some(oldest)) = (as_u64(about) >= MAX_REPORTS_PER_ACCOUNT, oldest) {
            self.connection
                .prepare_cached("UPDATE reports SET more = more + 1 WHERE id = ?1")?
                .execute([oldest])?;
            return Ok(());
        }
        let (held, bytes): (i64, i64) = self
            .connection
            .prepare_cached("SELECT COUNT(*), COALESCE(SUM(LENGTH(content)), 0) FROM reports")?
            .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        if as_u64(held) >= MAX_REPORTS
            || as_u64(bytes).saturating_add(content.len() as u64) > MAX_REPORT_BYTES
        {
            return Err(StoreError::Full);
        }
        self.connection
            .prepare_cached(
                "INSERT INTO reports (account, digest, content, signature, reason, received)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                &account.0[..],
                &digest[..],
                content,
                &signature[..],
                reason,
                as_i64(hour(now))
            ])?;
        Ok(())
    }

    /// Deletes reports older than [`REPORT_DAYS`].
    pub(super) fn purge_reports(&self, now: UnixSeconds) -> Result<(), StoreError> {
        let cutoff = now.saturating_sub(REPORT_DAYS * 24 * 3600);
        self.connection
            .prepare_cached("DELETE FROM reports WHERE received < ?1")?
            .execute([as_i64(cutoff)])?;
        Ok(())
    }

    /// Every report kept, oldest first.
    pub(super) fn kept_reports(&self) -> Result<Vec<Report>, StoreError> {
        let mut query = self.connection.prepare(
            "SELECT id, account, content, signature, reason, received, more FROM reports ORDER BY id",
        )?;
        let rows = query.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, Vec<u8>>(2)?,
                row.get::<_, Vec<u8>>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, i64>(6)?,
            ))
        })?;
        let mut reports = Vec::new();
        for row in rows {
            let (id, account, content, signature, reason, received, more) = row?;
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
                more: as_u64(more),
            });
        }
        Ok(reports)
    }
}
