//! The device's storage, as the engine needs it. `hush-store` implements
//! it over SQLCipher; [`super::MemoryStore`] keeps everything in memory
//! for tests and simulations.

use hush_proto::AccountId;
use openmls::prelude::OpenMlsProvider;

use crate::record::{ConversationKind, ConversationRecord, MessageRecord};

/// A failure of the device's own storage: the one kind of error that
/// leaves a delivery unacknowledged, so the relay delivers it again.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StorageError(Box<dyn std::error::Error + Send + Sync>);

impl StorageError {
    /// Wraps a backend's error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(error))
    }

    /// The backend's error.
    pub fn into_inner(self) -> Box<dyn std::error::Error + Send + Sync> {
        self.0
    }
}

/// Everything a device keeps: OpenMLS state, settings (named byte
/// strings), contacts, conversations, messages and the hashes of payloads
/// already seen. Every method works inside or outside a transaction.
pub trait DeviceStore {
    /// The OpenMLS provider over this store.
    type Provider<'a>: OpenMlsProvider
    where
        Self: 'a;

    /// The OpenMLS provider (its storage is part of [`Self::transaction`]).
    fn provider(&self) -> Self::Provider<'_>;

    /// Runs `work` in one transaction: every change it makes, OpenMLS
    /// state included, is kept together or not at all.
    fn transaction<T, E: From<StorageError>>(&self, work: impl FnOnce(&Self) -> Result<T, E>)
        -> Result<T, E>;

    /// A setting.
    fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Writes a setting.
    fn set_setting(&self, name: &str, value: &[u8]) -> Result<(), StorageError>;
    /// Deletes a setting (nothing happens if there is none).
    fn delete_setting(&self, name: &str) -> Result<(), StorageError>;
    /// Every setting whose name starts with `prefix`, by name.
    fn settings_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError>;
    /// As [`DeviceStore::settings_with_prefix`], each value cut to `len` bytes.
    fn setting_heads_with_prefix(
        &self,
        prefix: &str,
        len: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError>;
    /// How many settings start with `prefix`, and their bytes.
    fn count_settings_with_prefix(&self, prefix: &str) -> Result<(u64, u64), StorageError>;
    /// Deletes every setting that starts with `prefix`.
    fn delete_settings_with_prefix(&self, prefix: &str) -> Result<usize, StorageError>;

    /// The contact called `name`.
    fn contact(&self, name: &str) -> Result<Option<AccountId>, StorageError>;
    /// The name of the contact `account`.
    fn contact_name(&self, account: &AccountId) -> Result<Option<String>, StorageError>;

    /// Records a conversation, or changes its kind.
    fn insert_conversation(
        &self,
        group_id: &[u8],
        kind: &ConversationKind,
        now_ms: u64,
    ) -> Result<(), StorageError>;
    /// Marks a conversation left (or active again).
    fn set_conversation_active(&self, group_id: &[u8], active: bool) -> Result<(), StorageError>;
    /// Sets the disappearing-message timer.
    fn set_timer(&self, group_id: &[u8], secs: Option<u32>) -> Result<(), StorageError>;
    /// Notes whether we owe the group a self-update.
    fn set_needs_update(&self, group_id: &[u8], needs: bool) -> Result<(), StorageError>;
    /// Notes a self-update just made.
    fn updated(&self, group_id: &[u8], now_ms: u64) -> Result<(), StorageError>;
    /// Notes a message sent (for the self-update policy).
    fn count_sent(&self, group_id: &[u8]) -> Result<(), StorageError>;
    /// One conversation.
    fn conversation(&self, group_id: &[u8]) -> Result<Option<ConversationRecord>, StorageError>;
    /// Every conversation, by group id.
    fn conversations(&self) -> Result<Vec<ConversationRecord>, StorageError>;
    /// The active one-to-one conversations with `peer`, smallest group id first.
    fn direct_conversations(&self, peer: &AccountId) -> Result<Vec<ConversationRecord>, StorageError>;
    /// The active group called `name`.
    fn group_by_name(&self, name: &str) -> Result<Option<ConversationRecord>, StorageError>;

    /// Stores a message (`shown`: not unread); false if its id is stored already.
    fn insert_message(&self, message: &MessageRecord, now_ms: u64, shown: bool)
        -> Result<bool, StorageError>;
    /// Deletes a conversation's messages.
    fn delete_messages(&self, group_id: &[u8]) -> Result<usize, StorageError>;

    /// Records a payload's hash; false if it was seen before.
    fn first_sighting(&self, hash: &[u8; 32], now_ms: u64) -> Result<bool, StorageError>;
    /// Forgets hashes recorded before `before_ms`.
    fn forget_sightings(&self, before_ms: u64) -> Result<(), StorageError>;
}
