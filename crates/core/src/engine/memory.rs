//! A device store in memory, for tests and simulations: the same
//! behaviour as the SQLCipher store, transactions included (a failed one
//! leaves nothing behind), and nothing on disk.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};

use hush_proto::AccountId;
use openmls::prelude::OpenMlsProvider;
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;

use super::store::{DeviceStore, StorageError};
use crate::record::{ConversationKind, ConversationRecord, MessageRecord};

#[derive(Clone, Default)]
struct Tables {
    settings: BTreeMap<String, Vec<u8>>,
    contacts: BTreeMap<String, AccountId>,
    conversations: BTreeMap<Vec<u8>, ConversationRecord>,
    /// Messages with when they arrived and whether they were shown.
    messages: Vec<(MessageRecord, u64, bool)>,
    sightings: HashMap<[u8; 32], u64>,
}

/// A device store in memory (single-threaded, like one device).
#[derive(Default)]
pub struct MemoryStore {
    crypto: RustCrypto,
    mls: MemoryStorage,
    tables: RefCell<Tables>,
    /// Writes left before one fails (see [`MemoryStore::fail_write_in`]).
    fault: Cell<Option<u32>>,
    /// A transaction is open (they do not nest, as in SQLite).
    in_transaction: Cell<bool>,
}

/// The OpenMLS provider over a [`MemoryStore`].
pub struct MemoryProvider<'a> {
    crypto: &'a RustCrypto,
    storage: &'a MemoryStorage,
}

impl OpenMlsProvider for MemoryProvider<'_> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &Self::StorageProvider {
        self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        self.crypto
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or renames a contact.
    pub fn add_contact(&self, name: &str, account: AccountId) {
        let mut tables = self.tables.borrow_mut();
        tables.contacts.retain(|_, known| *known != account);
        tables.contacts.insert(name.to_owned(), account);
    }

    /// Makes a write fail after `writes` more succeed, once, as a full disk
    /// or a crash would: the transaction around it is rolled back.
    pub fn fail_write_in(&self, writes: u32) {
        self.fault.set(Some(writes));
    }

    /// Cancels a failure set by [`MemoryStore::fail_write_in`] that has not
    /// happened yet.
    pub fn heal(&self) {
        self.fault.set(None);
    }

    /// Counts a write; fails the one the fault was set for.
    fn write(&self) -> Result<(), StorageError> {
        match self.fault.get() {
            Some(0) => {
                self.fault.set(None);
                Err(StorageError::new(std::io::Error::other("injected write failure")))
            }
            Some(left) => {
                self.fault.set(Some(left - 1));
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Every stored message of a conversation, oldest first.
    pub fn messages(&self, group_id: &[u8]) -> Vec<MessageRecord> {
        let tables = self.tables.borrow();
        tables.messages.iter().filter(|(m, ..)| m.group_id == group_id).map(|(m, ..)| m.clone()).collect()
    }

    fn update(&self, group_id: &[u8], change: impl FnOnce(&mut ConversationRecord)) {
        if let Some(record) = self.tables.borrow_mut().conversations.get_mut(group_id) {
            change(record);
        }
    }

    fn with_prefix<'t>(
        tables: &'t Tables,
        prefix: &'t str,
    ) -> impl Iterator<Item = (&'t String, &'t Vec<u8>)> + 't {
        tables.settings.range(prefix.to_owned()..).take_while(move |(name, _)| name.starts_with(prefix))
    }
}

impl DeviceStore for MemoryStore {
    type Provider<'a> = MemoryProvider<'a>;

    fn provider(&self) -> MemoryProvider<'_> {
        MemoryProvider { crypto: &self.crypto, storage: &self.mls }
    }

    fn transaction<T, E: From<StorageError>>(
        &self,
        work: impl FnOnce(&Self) -> Result<T, E>,
    ) -> Result<T, E> {
        if self.in_transaction.get() {
            return Err(StorageError::new(std::io::Error::other("a transaction is already open")).into());
        }
        let tables = self.tables.borrow().clone();
        let mls = self.mls.values.read().map_err(|_| poisoned())?.clone();
        self.in_transaction.set(true);
        let outcome = work(self);
        self.in_transaction.set(false);
        if outcome.is_err() {
            *self.tables.borrow_mut() = tables;
            *self.mls.values.write().map_err(|_| poisoned())? = mls;
        }
        outcome
    }

    fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.tables.borrow().settings.get(name).cloned())
    }

    fn set_setting(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        self.write()?;
        self.tables.borrow_mut().settings.insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete_setting(&self, name: &str) -> Result<(), StorageError> {
        self.write()?;
        self.tables.borrow_mut().settings.remove(name);
        Ok(())
    }

    fn settings_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let tables = self.tables.borrow();
        Ok(Self::with_prefix(&tables, prefix).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn setting_heads_with_prefix(
        &self,
        prefix: &str,
        len: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let tables = self.tables.borrow();
        Ok(Self::with_prefix(&tables, prefix)
            .map(|(k, v)| (k.clone(), v[..len.min(v.len())].to_vec()))
            .collect())
    }

    fn count_settings_with_prefix(&self, prefix: &str) -> Result<(u64, u64), StorageError> {
        let tables = self.tables.borrow();
        Ok(Self::with_prefix(&tables, prefix)
            .fold((0, 0), |(count, bytes), (_, v)| (count + 1, bytes + v.len() as u64)))
    }

    fn delete_settings_with_prefix(&self, prefix: &str) -> Result<usize, StorageError> {
        self.write()?;
        let mut tables = self.tables.borrow_mut();
        let names: Vec<String> = Self::with_prefix(&tables, prefix).map(|(k, _)| k.clone()).collect();
        for name in &names {
            tables.settings.remove(name);
        }
        Ok(names.len())
    }

    fn contact(&self, name: &str) -> Result<Option<AccountId>, StorageError> {
        Ok(self.tables.borrow().contacts.get(name).copied())
    }

    fn contact_name(&self, account: &AccountId) -> Result<Option<String>, StorageError> {
        let tables = self.tables.borrow();
        Ok(tables.contacts.iter().find(|(_, known)| *known == account).map(|(name, _)| name.clone()))
    }

    fn insert_conversation(
        &self,
        group_id: &[u8],
        kind: &ConversationKind,
        now_ms: u64,
    ) -> Result<(), StorageError> {
        self.write()?;
        let mut tables = self.tables.borrow_mut();
        let record = tables.conversations.entry(group_id.to_vec()).or_insert_with(|| ConversationRecord {
            group_id: group_id.to_vec(),
            kind: kind.clone(),
            active: true,
            sent_since_update: 0,
            last_update_ms: now_ms,
            needs_update: false,
            timer_secs: None,
        });
        record.kind = kind.clone();
        Ok(())
    }

    fn set_conversation_active(&self, group_id: &[u8], active: bool) -> Result<(), StorageError> {
        self.write()?;
        self.update(group_id, |record| record.active = active);
        Ok(())
    }

    fn set_timer(&self, group_id: &[u8], secs: Option<u32>) -> Result<(), StorageError> {
        self.write()?;
        self.update(group_id, |record| record.timer_secs = secs);
        Ok(())
    }

    fn set_needs_update(&self, group_id: &[u8], needs: bool) -> Result<(), StorageError> {
        self.write()?;
        self.update(group_id, |record| record.needs_update = needs);
        Ok(())
    }

    fn updated(&self, group_id: &[u8], now_ms: u64) -> Result<(), StorageError> {
        self.write()?;
        self.update(group_id, |record| {
            record.sent_since_update = 0;
            record.needs_update = false;
            record.last_update_ms = now_ms;
        });
        Ok(())
    }

    fn count_sent(&self, group_id: &[u8]) -> Result<(), StorageError> {
        self.write()?;
        self.update(group_id, |record| record.sent_since_update += 1);
        Ok(())
    }

    fn conversation(&self, group_id: &[u8]) -> Result<Option<ConversationRecord>, StorageError> {
        Ok(self.tables.borrow().conversations.get(group_id).cloned())
    }

    fn conversations(&self) -> Result<Vec<ConversationRecord>, StorageError> {
        Ok(self.tables.borrow().conversations.values().cloned().collect())
    }

    fn direct_conversations(&self, peer: &AccountId) -> Result<Vec<ConversationRecord>, StorageError> {
        let tables = self.tables.borrow();
        let direct = |record: &&ConversationRecord| {
            record.active && matches!(&record.kind, ConversationKind::Direct { peer: p } if p == peer)
        };
        Ok(tables.conversations.values().filter(direct).cloned().collect())
    }

    fn group_by_name(&self, name: &str) -> Result<Option<ConversationRecord>, StorageError> {
        let tables = self.tables.borrow();
        let named = |record: &&ConversationRecord| {
            record.active && matches!(&record.kind, ConversationKind::Group { name: n } if n == name)
        };
        Ok(tables.conversations.values().rfind(named).cloned())
    }

    fn insert_message(
        &self,
        message: &MessageRecord,
        now_ms: u64,
        shown: bool,
    ) -> Result<bool, StorageError> {
        self.write()?;
        let mut tables = self.tables.borrow_mut();
        if tables.messages.iter().any(|(m, ..)| m.message_id == message.message_id) {
            return Ok(false);
        }
        tables.messages.push((message.clone(), now_ms, shown));
        Ok(true)
    }

    fn delete_messages(&self, group_id: &[u8]) -> Result<usize, StorageError> {
        self.write()?;
        let mut tables = self.tables.borrow_mut();
        let before = tables.messages.len();
        tables.messages.retain(|(m, ..)| m.group_id != group_id);
        Ok(before - tables.messages.len())
    }

    fn first_sighting(&self, hash: &[u8; 32], now_ms: u64) -> Result<bool, StorageError> {
        self.write()?;
        let mut tables = self.tables.borrow_mut();
        if tables.sightings.contains_key(hash) {
            return Ok(false);
        }
        tables.sightings.insert(*hash, now_ms);
        Ok(true)
    }

    fn forget_sightings(&self, before_ms: u64) -> Result<(), StorageError> {
        self.write()?;
        self.tables.borrow_mut().sightings.retain(|_, at| *at >= before_ms);
        Ok(())
    }
}

fn poisoned() -> StorageError {
    StorageError::new(std::io::Error::other("the in-memory OpenMLS storage lock is poisoned"))
}
