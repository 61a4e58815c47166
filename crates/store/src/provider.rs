//! The OpenMLS provider over the encrypted database: RustCrypto for crypto
//! and randomness, `openmls_sqlite_storage` on the same SQLCipher connection
//! as Hush's own tables, so one transaction covers both.

use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::{Codec, Connection, SqliteStorageProvider};
use openmls_traits::OpenMlsProvider;

/// Serializes OpenMLS state as JSON inside the encrypted database.
#[derive(Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    type Error = serde_json::Error;

    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(slice)
    }
}

/// An OpenMLS provider borrowing the store's connection.
pub struct HushProvider<'a> {
    crypto: &'a RustCrypto,
    storage: SqliteStorageProvider<JsonCodec, &'a Connection>,
}

impl<'a> HushProvider<'a> {
    pub(crate) fn new(crypto: &'a RustCrypto, connection: &'a Connection) -> Self {
        Self { crypto, storage: SqliteStorageProvider::new(connection) }
    }
}

impl<'a> OpenMlsProvider for HushProvider<'a> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = SqliteStorageProvider<JsonCodec, &'a Connection>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        self.crypto
    }
}
