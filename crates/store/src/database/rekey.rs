//! Replacing the database key.
//!
//! The database is exported, under a new random key, to a new file that
//! then replaces the old one (`sqlcipher_export` into an attached
//! database, then a rename), and the old key is overwritten in the key
//! file. Every page written under the old key (the old file's blocks, freed
//! WAL blocks, copies a file system moved) is noise from then on, and the
//! new file is compact: free pages of deleted content are not copied.
//!
//! Why not `PRAGMA rekey` in place: when a page write fails halfway (a full
//! disk), SQLCipher rolls the re-key back and still answers success, and the
//! rolled-back database was found malformed in a test. An export either
//! produces a complete new file, checked before it replaces anything, or
//! changes nothing.
//!
//! Crash safety: the key file seals both keys from before the export until
//! after the rename; opening tries both and settles on the one that opens.
//! It runs only while no other process has the profile open (the profile
//! lock, taken exclusive), since another process would go on with the old
//! key and the old file.

use std::os::unix::fs::OpenOptionsExt;

use super::*;

/// The new database while it is being written.
pub(super) const EXPORT_FILE: &str = "hush.db.rekey";
/// Its rollback journal while it is being written.
pub(super) const EXPORT_JOURNAL: &str = "hush.db.rekey-journal";

/// What [`Store::rekeyed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rekey {
    /// The key was replaced.
    Replaced,
    /// Another process has the profile open: left for the next chance.
    Busy,
    /// Not due (see [`Store::rekeyed_if_due`]).
    NotDue,
    /// It failed (a full disk, say) and is left for the next chance; the
    /// profile is open under whichever key the database is under.
    Failed(String),
}

/// An export that failed before the new file replaced the old one (nothing
/// changed) or after (the database may be under either key).
enum Failed {
    Before(StoreError),
    After(StoreError),
}

impl<T: Into<StoreError>> From<T> for Failed {
    fn from(error: T) -> Self {
        Failed::Before(error.into())
    }
}

impl Store {
    /// Replaces the database key (see the module doc). Takes the store and
    /// gives back one reopened on the new file and key, or on the old ones
    /// when the re-key could not run ([`Rekey::Busy`]) or failed
    /// ([`Rekey::Failed`]: the profile stays usable and the re-key stays
    /// due). An error means the profile could not be reopened at all.
    pub fn rekeyed(self, now_ms: u64) -> Result<(Self, Rekey), StoreError> {
        let Store { dir, connection, crypto: _, keys, presence } = self;
        drop(connection);
        let mut keys = keys.into_inner();
        let key_path = Self::key_path(&dir);
        let outcome = presence.exclusively(&key_path, || Ok(replace_key(&dir, &keys)))?;
        let outcome = match outcome {
            None => Rekey::Busy,
            Some(Ok(next)) => {
                keys.database = next;
                Rekey::Replaced
            }
            Some(Err((error, maybe_next))) => {
                if let Some(next) = maybe_next {
                    settle(&dir, &mut keys, next);
                }
                Rekey::Failed(error.to_string())
            }
        };
        let connection = Self::open_with_key(&dir, &keys.database)?;
        let store = Self::configure(&dir, connection, keys, presence)?;
        if outcome == Rekey::Replaced {
            store.set_setting(REKEYED_AT, &now_ms.to_be_bytes())?;
            store.set_setting(PURGED_SINCE_REKEY, &[0])?;
            store.set_setting(REKEY_REQUESTED, &[0])?;
        }
        Ok((store, outcome))
    }

    /// Replaces the database key when it is due: asked for (a new
    /// passphrase), or messages were purged and the last re-key is
    /// [`REKEY_AFTER_PURGE_GAP_MS`] old, or it is [`REKEY_EVERY_MS`] old.
    pub fn rekeyed_if_due(self, now_ms: u64) -> Result<(Self, Rekey), StoreError> {
        let flag = |name: &str| -> Result<bool, StoreError> {
            Ok(self.setting(name)?.is_some_and(|value| value == [1]))
        };
        let last = self
            .setting(REKEYED_AT)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map_or(0, u64::from_be_bytes);
        let age = now_ms.saturating_sub(last);
        let due = flag(REKEY_REQUESTED)?
            || (flag(PURGED_SINCE_REKEY)? && age >= REKEY_AFTER_PURGE_GAP_MS)
            || age >= REKEY_EVERY_MS;
        if !due {
            return Ok((self, Rekey::NotDue));
        }
        self.rekeyed(now_ms)
    }
}

/// After a failure past the rename the database may be under either key:
/// take the one that opens, and seal it alone if that works (else both stay
/// sealed and the next unlock settles it).
fn settle(dir: &Path, keys: &mut Keys, next: DatabaseKey) {
    if Store::open_with_key(dir, &keys.database).is_err() && Store::open_with_key(dir, &next).is_ok() {
        keys.database = next;
    }
    let alone = SealedKeys { current: keys.database.duplicate(), next: None };
    let _ = KeyFile::reseal(&Store::key_path(dir), &keys.wrapping, &alone);
}

/// Seals both keys, exports, seals the new key alone. Answers the new key,
/// or why not and, when the database may already be under it, the new key.
#[allow(clippy::type_complexity)]
fn replace_key(dir: &Path, keys: &Keys) -> Result<DatabaseKey, (StoreError, Option<DatabaseKey>)> {
    let key_path = Store::key_path(dir);
    let next = DatabaseKey::random();
    let current = || SealedKeys { current: keys.database.duplicate(), next: None };
    let both = SealedKeys { current: keys.database.duplicate(), next: Some(next.duplicate()) };
    KeyFile::reseal(&key_path, &keys.wrapping, &both).map_err(|error| (error, None))?;
    match export(dir, &keys.database, &next) {
        Ok(()) => {}
        Err(Failed::Before(error)) => {
            for leftover in [EXPORT_FILE, EXPORT_JOURNAL] {
                let _ = std::fs::remove_file(dir.join(leftover));
            }
            // If this reseal fails too, both keys stay sealed and the
            // database is still under the first: the next unlock settles it.
            let _ = KeyFile::reseal(&key_path, &keys.wrapping, &current());
            return Err((StoreError::RekeyFailed(error.to_string()), None));
        }
        Err(Failed::After(error)) => return Err((StoreError::RekeyFailed(error.to_string()), Some(next))),
    }
    let alone = SealedKeys { current: next.duplicate(), next: None };
    KeyFile::reseal(&key_path, &keys.wrapping, &alone).map_err(|error| (error, Some(next.duplicate())))?;
    Ok(next)
}

/// Writes the database under `next` to the export file, checks it, and
/// renames it over the database.
fn export(dir: &Path, old: &DatabaseKey, next: &DatabaseKey) -> Result<(), Failed> {
    let target = dir.join(EXPORT_FILE);
    let _ = std::fs::remove_file(&target);
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&target)?;
    let connection = Store::open_with_key(dir, old)?;
    let name = target.to_str().ok_or(StoreError::RekeyFailed("profile path is not UTF-8".into()))?;
    connection.execute("ATTACH DATABASE ?1 AS rekeyed KEY ?2", params![name, &*next.pragma()])?;
    connection.query_row("SELECT sqlcipher_export('rekeyed')", [], |_| Ok(()))?;
    connection.execute_batch("DETACH DATABASE rekeyed")?;
    // The last connection to close checkpoints the WAL into the old file
    // and deletes it; a WAL that stays means someone else has it open.
    connection.close().map_err(|(_, error)| StoreError::from(error))?;
    let wal = dir.join("hush.db-wal");
    if std::fs::metadata(&wal).is_ok_and(|meta| meta.len() > 0) {
        return Err(Failed::Before(StoreError::RekeyFailed("the database is in use".into())));
    }
    std::fs::File::open(&target)?.sync_all()?;
    let check = Store::open_file_with_key(&target, next)?;
    check
        .query_row("PRAGMA quick_check", [], |row| row.get::<_, String>(0))
        .map_err(StoreError::from)
        .and_then(|verdict| match verdict.as_str() {
            "ok" => Ok(()),
            _ => Err(StoreError::RekeyFailed("the new database failed its check".into())),
        })?;
    drop(check);
    let _ = std::fs::remove_file(dir.join("hush.db-shm"));
    std::fs::rename(&target, Store::db_path(dir))?;
    let synced = std::fs::File::open(dir).and_then(|dir| dir.sync_all());
    synced.map_err(|error| Failed::After(error.into()))
}

/// The export step alone, for tests that stop a re-key between steps.
#[cfg(test)]
pub(super) fn export_for_tests(dir: &Path, old: &DatabaseKey, next: &DatabaseKey) -> Result<(), StoreError> {
    export(dir, old, next).map_err(|failed| match failed {
        Failed::Before(error) | Failed::After(error) => error,
    })
}
