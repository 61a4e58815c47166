//! The engine's view of the store: `hush_core::DeviceStore` over the
//! SQLCipher database, each method the store's own.

use hush_core::{ConversationKind, ConversationRecord, DeviceStore, MessageRecord, StorageError};
use hush_proto::AccountId;

use crate::database::Store;
use crate::provider::HushProvider;
use crate::StoreError;

impl From<StoreError> for StorageError {
    fn from(error: StoreError) -> Self {
        StorageError::new(error)
    }
}

impl DeviceStore for Store {
    type Provider<'a> = HushProvider<'a>;

    fn provider(&self) -> HushProvider<'_> {
        Store::provider(self)
    }

    fn transaction<T, E: From<StorageError>>(
        &self,
        work: impl FnOnce(&Self) -> Result<T, E>,
    ) -> Result<T, E> {
        self.begin().map_err(StorageError::from)?;
        match work(self) {
            Ok(value) => {
                self.commit().map_err(StorageError::from)?;
                Ok(value)
            }
            Err(error) => {
                self.rollback();
                Err(error)
            }
        }
    }

    fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(Store::setting(self, name)?)
    }

    fn set_setting(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        Ok(Store::set_setting(self, name, value)?)
    }

    fn delete_setting(&self, name: &str) -> Result<(), StorageError> {
        Ok(Store::delete_setting(self, name)?)
    }

    fn settings_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        Ok(Store::settings_with_prefix(self, prefix)?)
    }

    fn setting_heads_with_prefix(
        &self,
        prefix: &str,
        len: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        Ok(Store::setting_heads_with_prefix(self, prefix, len)?)
    }

    fn count_settings_with_prefix(&self, prefix: &str) -> Result<(u64, u64), StorageError> {
        Ok(Store::count_settings_with_prefix(self, prefix)?)
    }

    fn delete_settings_with_prefix(&self, prefix: &str) -> Result<usize, StorageError> {
        Ok(Store::delete_settings_with_prefix(self, prefix)?)
    }

    fn contact(&self, name: &str) -> Result<Option<AccountId>, StorageError> {
        Ok(Store::contact(self, name)?)
    }

    fn contact_name(&self, account: &AccountId) -> Result<Option<String>, StorageError> {
        Ok(Store::contact_name(self, account)?)
    }

    fn insert_conversation(
        &self,
        group_id: &[u8],
        kind: &ConversationKind,
        now_ms: u64,
    ) -> Result<(), StorageError> {
        Ok(Store::insert_conversation(self, group_id, kind, now_ms)?)
    }

    fn set_conversation_active(&self, group_id: &[u8], active: bool) -> Result<(), StorageError> {
        Ok(Store::set_conversation_active(self, group_id, active)?)
    }

    fn set_timer(&self, group_id: &[u8], secs: Option<u32>) -> Result<(), StorageError> {
        Ok(Store::set_timer(self, group_id, secs)?)
    }

    fn set_needs_update(&self, group_id: &[u8], needs: bool) -> Result<(), StorageError> {
        Ok(Store::set_needs_update(self, group_id, needs)?)
    }

    fn updated(&self, group_id: &[u8], now_ms: u64) -> Result<(), StorageError> {
        Ok(Store::updated(self, group_id, now_ms)?)
    }

    fn count_sent(&self, group_id: &[u8]) -> Result<(), StorageError> {
        Ok(Store::count_sent(self, group_id)?)
    }

    fn conversation(&self, group_id: &[u8]) -> Result<Option<ConversationRecord>, StorageError> {
        Ok(Store::conversation(self, group_id)?)
    }

    fn conversations(&self) -> Result<Vec<ConversationRecord>, StorageError> {
        Ok(Store::conversations(self)?)
    }

    fn direct_conversations(&self, peer: &AccountId) -> Result<Vec<ConversationRecord>, StorageError> {
        Ok(Store::direct_conversations(self, peer)?)
    }

    fn group_by_name(&self, name: &str) -> Result<Option<ConversationRecord>, StorageError> {
        Ok(Store::group_by_name(self, name)?)
    }

    fn insert_message(
        &self,
        message: &MessageRecord,
        now_ms: u64,
        shown: bool,
    ) -> Result<bool, StorageError> {
        Ok(Store::insert_message(self, message, now_ms, shown)?)
    }

    fn delete_messages(&self, group_id: &[u8]) -> Result<usize, StorageError> {
        Ok(Store::delete_messages(self, group_id)?)
    }

    fn first_sighting(&self, hash: &[u8; 32], now_ms: u64) -> Result<bool, StorageError> {
        Ok(Store::first_sighting(self, hash, now_ms)?)
    }

    fn forget_sightings(&self, before_ms: u64) -> Result<(), StorageError> {
        Ok(Store::forget_sightings(self, before_ms)?)
    }
}
