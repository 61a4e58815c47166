//! The shared store: PostgreSQL, for several relays in front of one
//! database. The same tables as the embedded store, keyed by queue id
//! throughout, with what several writers need:
//!
//! - each queue and each introduction mailbox numbers its own entries,
//!   under the row lock of its `queues` (or `accounts`) row, in the
//!   transaction that inserts them: a writer that commits late holds the
//!   lock until it does, so a reader's cursor never passes a number that
//!   a slower transaction has yet to commit (a shared sequence would);
//! - a group's epoch moves under its row lock (compare-and-set across
//!   relays), its row made first if the group is new;
//! - one transaction per batch, committed with `synchronous_commit = on`
//!   before any of its sends is acknowledged;
//! - versioned migrations, applied under an advisory lock, so relays
//!   starting together migrate once.
//!
//! The client is tokio-postgres, driven on the store worker's own thread
//! (see [`connection`]): one connection per worker, so there is nothing to
//! pool, and a batch's one-statement writes are pipelined.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hush_proto::{AccountId, Capability, IdentityKey, QueueId};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

mod connection;

use connection::{Connection, Params};

use super::{
    AccountRecord, Admin, CommitOutcome, CommitRequest, Decision, Enqueued, GroupRecord, Mailbox, Operations,
    Queued, RelayStore, Report, SealedCommitRequest, Stats, StoreError, UnixSeconds, Write, Written,
    MAX_QUEUE_BYTES, MAX_QUEUE_ENTRIES, MAX_REPORTS, MAX_REPORTS_PER_ACCOUNT, MAX_REPORT_BYTES,
    QUEUE_IDLE_DAYS, REPORT_DAYS,
};

/// The schema, one entry per version: a database at version `n` has had
/// the first `n` applied. Append; never edit one that has shipped.
const MIGRATIONS: &[&str] = &["
CREATE TABLE accounts (
    id bytea PRIMARY KEY,
    identity_key bytea NOT NULL UNIQUE,
    created bigint NOT NULL,
    deactivated bigint,
    wipe_hash bytea NOT NULL,
    intro_seq bigint NOT NULL DEFAULT 0
);
CREATE TABLE wipe_orders (
    account bytea PRIMARY KEY,
    secret bytea NOT NULL,
    created bigint NOT NULL
);
CREATE TABLE key_packages (
    seq bigserial PRIMARY KEY,
    account bytea NOT NULL,
    last_resort boolean NOT NULL,
    data bytea NOT NULL,
    expires bigint
);
CREATE INDEX key_packages_by_account ON key_packages (account, last_resort, seq);
CREATE TABLE mailbox (
    recipient bytea NOT NULL,
    seq bigint NOT NULL,
    arrived bigint NOT NULL,
    expires bigint NOT NULL,
    payload bytea NOT NULL,
    PRIMARY KEY (recipient, seq)
);
CREATE INDEX mailbox_by_expiry ON mailbox (expires);
CREATE TABLE group_epochs (
    id bytea PRIMARY KEY,
    epoch bigint NOT NULL,
    auth_key bytea
);
CREATE TABLE group_commits (
    group_id bytea NOT NULL,
    epoch bigint NOT NULL,
    digest bytea NOT NULL,
    expires bigint NOT NULL,
    PRIMARY KEY (group_id, epoch)
);
CREATE INDEX group_commits_by_expiry ON group_commits (expires);
CREATE TABLE invites (
    code_hash bytea PRIMARY KEY,
    uses_left integer NOT NULL,
    expires bigint NOT NULL
);
CREATE TABLE queues (
    id bytea PRIMARY KEY,
    owner_key bytea NOT NULL,
    write_hash bytea NOT NULL,
    next_seq bigint NOT NULL,
    entries bigint NOT NULL,
    bytes bigint NOT NULL,
    used_day bigint NOT NULL,
    wipe_tag bytea
);
CREATE TABLE payloads (
    id bigserial PRIMARY KEY,
    arrived bigint NOT NULL,
    expires bigint NOT NULL,
    data bytea NOT NULL
);
-- Ciphertext does not compress: do not try.
ALTER TABLE payloads ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE mailbox ALTER COLUMN payload SET STORAGE EXTERNAL;
CREATE INDEX payloads_by_expiry ON payloads (expires);
-- An entry holds its payload itself when it went to one queue (`data`),
-- or names the payload row it shares with the other queues it went to.
CREATE TABLE queue_entries (
    queue bytea NOT NULL,
    seq bigint NOT NULL,
    payload bigint,
    len bigint NOT NULL,
    arrived bigint NOT NULL,
    expires bigint NOT NULL,
    data bytea,
    PRIMARY KEY (queue, seq),
    CHECK ((payload IS NULL) <> (data IS NULL))
);
ALTER TABLE queue_entries ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE INDEX queue_entries_by_payload ON queue_entries (payload) WHERE payload IS NOT NULL;
CREATE INDEX queue_entries_by_expiry ON queue_entries (expires);
CREATE INDEX queues_by_use ON queues (used_day);
CREATE TABLE spent_tokens (
    nonce bytea PRIMARY KEY,
    day bigint NOT NULL
);
CREATE INDEX spent_tokens_by_day ON spent_tokens (day);
CREATE INDEX key_packages_by_expiry ON key_packages (expires);
CREATE TABLE reports (
    id bigserial PRIMARY KEY,
    account bytea NOT NULL,
    digest bytea NOT NULL UNIQUE,
    content bytea NOT NULL,
    signature bytea NOT NULL,
    reason text NOT NULL,
    received bigint NOT NULL,
    more bigint NOT NULL DEFAULT 0
);
CREATE INDEX reports_by_account ON reports (account, id);
-- Secrets every relay of the cluster shares (the send-token secret).
CREATE TABLE relay_secrets (
    name text PRIMARY KEY,
    value bytea NOT NULL
);
-- Delivered ciphertext is deleted at once; have autovacuum reclaim its
-- space (where new rows then overwrite it) soon, not after a fifth of the
-- table has died (see docs/scaling.md on what dead rows give away).
ALTER TABLE payloads SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
ALTER TABLE queue_entries SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
ALTER TABLE mailbox SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 100);
"];

/// The advisory lock migrations run under ("hush" and 1).
const MIGRATION_LOCK: i64 = 0x6875_7368_0000_0001;
/// The advisory lock of the retention purge: one relay of a cluster purges
/// at a time, the others skip their turn.
const PURGE_LOCK: i64 = 0x6875_7368_0000_0002;

/// How long a statement waits for a row lock before giving up (a relay
/// that stopped mid-batch must not stall the others for long).
const SESSION_SETTINGS: &str = "SET synchronous_commit = on; SET lock_timeout = '5s'; \
     SET idle_in_transaction_session_timeout = '30s'";

/// How long connecting may take before the store says it cannot.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a PostgreSQL store is: the parsed URL, and how to show it.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    shown: String,
}

impl Target {
    /// Parses a `postgresql://` or `postgres://` URL (or a libpq key=value
    /// string).
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = match url.parse() {
            Ok(config) => config,
            Err(error) => return Err(StoreError::BadUrl(format!("{}: {error}", redact_url(url)))),
        };
        let shown = redact_password(url, config.get_password());
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // Over TCP, TLS is required unless the URL says otherwise (libpq's
        // default, `prefer`, lets anyone on the path turn it off).
        let tcp = config.get_hosts().iter().any(|host| matches!(host, tokio_postgres::config::Host::Tcp(_)));
        if tcp && !url.contains("sslmode") {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        // A dead peer is noticed in seconds, not hours.
        config.keepalives_idle(Duration::from_secs(30));
        config.tcp_user_timeout(Duration::from_secs(30));
        config.application_name("hush-relay");
        Ok(Self { config, shown })
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub(crate) fn connect(&self) -> Result<Connection, StoreError> {
        let unreachable = |reason: String| StoreError::Unreachable { url: self.shown.clone(), reason };
        let mut connection =
            Connection::connect(&self.config, tls()?).map_err(|error| unreachable(error.to_string()))?;
        // Acknowledged means committed to disk (and to a synchronous
        // standby, if the operator has one), whatever the server's default;
        // a lock held by a stuck relay is waited for seconds, not hours.
        connection.batch_execute(SESSION_SETTINGS).map_err(|error| unreachable(error.to_string()))?;
        Ok(connection)
    }

    /// A blocking client, for the cluster's listener (which needs the
    /// `postgres` crate's notification iterator).
    pub(crate) fn connect_blocking(&self) -> Result<postgres::Client, StoreError> {
        let unreachable = |error: postgres::Error| StoreError::Unreachable {
            url: self.shown.clone(),
            reason: error.to_string(),
        };
        let mut client = postgres::Config::from(self.config.clone()).connect(tls()?).map_err(unreachable)?;
        client.batch_execute(SESSION_SETTINGS).map_err(unreachable)?;
        Ok(client)
    }
}

/// TLS for connections over TCP (Unix sockets need none): rustls with the
/// system's trusted roots; libpq's `sslmode` in the URL decides whether it
/// is required.
fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(certificate);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| StoreError::BadUrl(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `url` with `password` (as parsed from it) replaced by `***`, wherever
/// and however it is written.
fn redact_password(url: &str, password: Option<&[u8]>) -> String {
    let Some(password) = password.filter(|password| !password.is_empty()) else { return redact_url(url) };
    let raw = String::from_utf8_lossy(password).into_owned();
    let encoded: String = password
        .iter()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(*byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    let mut shown = url.to_owned();
    for form in [raw, encoded.clone(), encoded.to_lowercase()] {
        shown = shown.replace(&form, "***");
    }
    shown
}

/// `url` with anything that may be a password replaced by `***`, for logs
/// and errors (also for URLs that do not parse).
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        // Credentials end at the last '@' (a password may hold '/', '?'
        // or '#'); a password given as a parameter goes too.
        let rest = match rest.rsplit_once('@') {
            Some((userinfo, hosts)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{hosts}"),
                None => format!("{userinfo}@{hosts}"),
            },
            None => rest.to_owned(),
        };
        let rest = match rest.split_once('?') {
            Some((path, query)) if query.contains("password") => format!("{path}?***"),
            _ => rest,
        };
        return format!("{scheme}://{rest}");
    }
    // key=value form: anything after a password key is hidden.
    match url.find("password") {
        Some(at) => format!("{}password=***", &url[..at]),
        None => url.to_owned(),
    }
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn as_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn day(now: UnixSeconds) -> i64 {
    as_i64(hush_proto::tokens::day_of(now))
}

/// The hour `now` falls in: when a report arrived, no finer.
fn hour(now: UnixSeconds) -> UnixSeconds {
    now - now % 3600
}

fn bytes<const N: usize>(value: Vec<u8>) -> Option<[u8; N]> {
    <[u8; N]>::try_from(value).ok()
}

/// Queues a payload to one queue in one statement: the queue's row numbers
/// the entry (and is locked by the update until the transaction ends), and
/// the entry holds the payload itself. No row if the write secret does not
/// match or the queue is full.
const ENQUEUE_ONE: &str = "WITH q AS (
         UPDATE queues SET next_seq = next_seq + 1, entries = entries + 1, bytes = bytes + $2
         WHERE id = $1 AND write_hash = $3 AND entries < $4 AND bytes + $2 <= $5
         RETURNING next_seq - 1 AS seq)
     INSERT INTO queue_entries (queue, seq, len, arrived, expires, data)
     SELECT $1, q.seq, $2, $6, $7, $8 FROM q RETURNING seq";

/// Deletes a queue's delivered entries and counts them off its row;
/// answers how many went and the shared payloads they named (see
/// [`PostgresStore::drop_unreferenced`]).
const ACK_ENTRIES: &str = "WITH gone AS (
         DELETE FROM queue_entries WHERE queue = $1 AND seq = ANY($2) RETURNING payload, len),
     counted AS (
         UPDATE queues SET entries = entries - (SELECT count(*) FROM gone),
                           bytes = bytes - (SELECT COALESCE(sum(len), 0) FROM gone)
         WHERE id = $1 AND EXISTS (SELECT 1 FROM gone))
     SELECT (SELECT count(*) FROM gone),
            ARRAY(SELECT DISTINCT payload FROM gone WHERE payload IS NOT NULL ORDER BY payload)";

/// Marks a token spent; a row only if it was not already.
const SPEND_TOKEN: &str =
    "INSERT INTO spent_tokens (nonce, day) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING RETURNING 1";

/// Where a write comes in the order every batch takes its locks in: token
/// spends by nonce (two relays inserting the same two nonces in opposite
/// orders would wait for each other), then writes to queues by queue id.
fn lock_order(write: &Write) -> (u8, &[u8]) {
    match write {
        Write::Spend { nonce, .. } => (0, &nonce[..]),
        Write::Enqueue { target, .. } => (1, &target.queue.0[..]),
        Write::Ack { queue, .. } => (1, &queue.0[..]),
    }
}

/// What [`ACK_ENTRIES`] answered: entries deleted, shared payloads named.
fn acked(row: Option<Row>) -> Result<(u64, Vec<i64>), StoreError> {
    let Some(row) = row else { return Ok((0, Vec::new())) };
    Ok((as_u64(row.try_get(0)?), row.try_get(1)?))
}

/// The parameters of [`ENQUEUE_ONE`].
struct EnqueueArgs<'a> {
    queue: &'a [u8],
    len: i64,
    write_hash: Vec<u8>,
    max_entries: i64,
    max_bytes: i64,
    now: i64,
    expires: i64,
    payload: &'a [u8],
}

impl<'a> EnqueueArgs<'a> {
    fn new(target: &'a Capability, payload: &'a [u8], now: UnixSeconds, expires: UnixSeconds) -> Self {
        Self {
            queue: &target.queue.0,
            len: payload.len() as i64,
            write_hash: target.write_hash().to_vec(),
            max_entries: as_i64(MAX_QUEUE_ENTRIES),
            max_bytes: as_i64(MAX_QUEUE_BYTES),
            now: as_i64(now),
            expires: as_i64(expires),
            payload,
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.queue,
            &self.len,
            &self.write_hash,
            &self.max_entries,
            &self.max_bytes,
            &self.now,
            &self.expires,
            &self.payload,
        ]
    }
}

/// The parameters of a [`Write`]'s statement.
enum WriteArgs<'a> {
    Enqueue(EnqueueArgs<'a>),
    Ack { queue: &'a [u8], seqs: Vec<i64> },
    Spend { nonce: &'a [u8], day: i64 },
}

impl<'a> WriteArgs<'a> {
    fn new(write: &'a Write) -> Self {
        match write {
            Write::Enqueue { target, payload, now, expires } => {
                Self::Enqueue(EnqueueArgs::new(target, payload, *now, *expires))
            }
            Write::Ack { queue, seqs } => {
                Self::Ack { queue: &queue.0, seqs: seqs.iter().map(|seq| as_i64(*seq)).collect() }
            }
            Write::Spend { day, nonce } => Self::Spend { nonce, day: as_i64(*day) },
        }
    }
}

/// A relay's connection to a PostgreSQL store.
pub struct PostgresStore {
    target: Target,
    /// None after the connection was lost; the next batch reconnects.
    client: Option<Connection>,
    /// Prepared statements of the current connection.
    statements: HashMap<&'static str, Statement>,
    /// True inside [`RelayStore::batch`].
    in_batch: bool,
    /// Set when the batch's transaction can no longer commit.
    aborted: bool,
    /// Why, if a statement said so (a deadlock, a lock not granted in
    /// time): then the whole batch may simply be sent again.
    retryable_abort: bool,
    /// True between BEGIN and COMMIT or ROLLBACK: a connection lost then is
    /// not silently replaced (the transaction went with it).
    in_transaction: bool,
    /// This connection's relay, in the notifications it sends (a relay
    /// ignores its own).
    node: u64,
    /// What the open transaction changed that other relays must hear of
    /// (see [`crate::cluster`]), sent in one notification as it commits.
    notes: Vec<crate::cluster::Note>,
}

impl PostgresStore {
    /// Connects, and creates or migrates the schema.
    pub fn connect(target: &Target) -> Result<Self, StoreError> {
        let mut store = Self {
            target: target.clone(),
            client: None,
            statements: HashMap::new(),
            in_batch: false,
            aborted: false,
            retryable_abort: false,
            in_transaction: false,
            node: rand::random(),
            notes: Vec::new(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The 32-byte secret `name` every relay of the cluster shares, made
    /// by the first relay that asks for it.
    pub fn shared_secret(&mut self, name: &str) -> Result<zeroize::Zeroizing<[u8; 32]>, StoreError> {
        let mut fresh = zeroize::Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut *fresh);
        let client = self.client()?;
        client.execute(
            "INSERT INTO relay_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &&fresh[..]],
        )?;
        let row = client.query_one("SELECT value FROM relay_secrets WHERE name = $1", &[&name])?;
        let value = zeroize::Zeroizing::new(row.try_get::<_, Vec<u8>>(0)?);
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        if value.len() != 32 {
            return Err(StoreError::Batch(format!("the shared secret {name} is malformed")));
        }
        secret.copy_from_slice(&value);
        Ok(secret)
    }

    /// Connects as relay `node` (see [`crate::cluster`]).
    pub fn connect_as(target: &Target, node: u64) -> Result<Self, StoreError> {
        let mut store = Self::connect(target)?;
        store.node = node;
        Ok(store)
    }

    /// Sends the transaction's notes, as notifications that PostgreSQL
    /// delivers when (and only if) the transaction commits: one, unless a
    /// wipe deleted more queues than it names.
    fn send_notes(&mut self) -> Result<(), StoreError> {
        if self.notes.is_empty() {
            return Ok(());
        }
        let notes = std::mem::take(&mut self.notes);
        for message in crate::cluster::encode(self.node, &notes) {
            self.execute("SELECT pg_notify($1, $2)", &[&crate::cluster::CHANNEL, &message])?;
        }
        Ok(())
    }

    /// Runs an operation of one statement: atomic by itself, so inside a
    /// batch it needs no savepoint (two round trips fewer). If it fails,
    /// the transaction is lost with it, and so is the batch.
    fn single<T>(&mut self, work: impl FnOnce(&mut Self) -> Result<T, StoreError>) -> Result<T, StoreError> {
        if !self.in_batch {
            return self.atomic(work);
        }
        if self.aborted {
            return Err(self.failed());
        }
        let noted = self.notes.len();
        let result = work(self);
        if let Err(error) = &result {
            self.notes.truncate(noted);
            self.aborted = true;
            self.retryable_abort |= error.is_unavailable();
        }
        result
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        if let Err(error) = self.simple("BEGIN") {
            // A connection that died since the last batch (the database
            // restarted, say) is found out only now, before any of the
            // batch's work: start it again on a new connection, once.
            if !error.is_unavailable() {
                return Err(error);
            }
            self.client = None;
            self.simple("BEGIN")?;
        }
        self.in_transaction = true;
        Ok(())
    }

    /// Commits the open transaction. `SELECT 1` first: in a transaction
    /// that an error aborted it fails, where COMMIT alone would answer
    /// with a quiet rollback. A commit whose answer never came may or may
    /// not have happened: that is said, not "nothing stored".
    fn commit(&mut self) -> Result<(), StoreError> {
        let committed = self.simple("SELECT 1; COMMIT");
        let lost = self.client.as_ref().is_none_or(Connection::is_closed);
        self.in_transaction = false;
        match committed {
            Ok(()) => Ok(()),
            Err(_) if lost => Err(StoreError::Batch("the database did not confirm the commit".into())),
            Err(error) => {
                let _ = self.simple("ROLLBACK");
                Err(error)
            }
        }
    }

    fn rollback(&mut self) {
        let _ = self.simple("ROLLBACK");
        self.in_transaction = false;
    }

    /// Why the batch's transaction failed: the database went away, or an
    /// operation's rollback did.
    fn failed(&self) -> StoreError {
        if self.retryable_abort || self.client.as_ref().is_none_or(Connection::is_closed) {
            StoreError::Unavailable
        } else {
            StoreError::Batch("the batch's transaction failed".into())
        }
    }

    fn client(&mut self) -> Result<&mut Connection, StoreError> {
        if self.client.as_ref().is_none_or(Connection::is_closed) {
            if self.in_transaction {
                // What the transaction did is gone; a new connection must
                // not carry on (and "commit") as if it were not.
                return Err(StoreError::Unavailable);
            }
            self.statements.clear();
            self.client = None;
            self.client = Some(self.target.connect()?);
        }
        self.client.as_mut().ok_or(StoreError::Closed)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let client = self.client()?;
        client.batch_execute("BEGIN")?;
        let migrated = (|| {
            client.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            client.batch_execute("CREATE TABLE IF NOT EXISTS hush_schema (version integer NOT NULL)")?;
            let found: Option<i32> = client.query_one("SELECT max(version) FROM hush_schema", &[])?.get(0);
            let found = found.unwrap_or(0);
            let known = MIGRATIONS.len() as i32;
            if found > known {
                return Err(StoreError::NewerSchema { found, known });
            }
            for (version, sql) in (1..).zip(MIGRATIONS).skip(found as usize) {
                client.batch_execute(sql)?;
                client.execute("INSERT INTO hush_schema (version) VALUES ($1)", &[&version])?;
            }
            client.batch_execute("COMMIT")
        })();
        if migrated.is_err() {
            let _ = client.batch_execute("ROLLBACK");
        }
        migrated
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client()?.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        self.client()?.execute(&statement, params)
    }

    fn query(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql)?;
        self.client()?.query(&statement, params)
    }

    fn query_opt(&mut self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>, StoreError> {
        let statement = self.statement(sql)?;
        self.client()?.query_opt(&statement, params)
    }

    fn simple(&mut self, sql: &str) -> Result<(), StoreError> {
        self.client()?.batch_execute(sql)
    }

    /// Runs one writing operation atomically: in a savepoint inside a
    /// batch (so a failed one leaves no trace in its batch), else in a
    /// transaction of its own.
    fn atomic<T>(&mut self, work: impl FnOnce(&mut Self) -> Result<T, StoreError>) -> Result<T, StoreError> {
        if !self.in_batch {
            self.notes.clear();
            self.begin()?;
            let result = work(self).and_then(|value| self.send_notes().map(|()| value));
            self.notes.clear();
            return match result {
                Ok(value) => self.commit().map(|()| value),
                Err(error) => {
                    self.rollback();
                    Err(error)
                }
            };
        }
        if self.aborted {
            return Err(self.failed());
        }
        if let Err(error) = self.simple("SAVEPOINT op") {
            self.aborted = true;
            return Err(error);
        }
        let noted = self.notes.len();
        let result = work(self);
        if result.is_err() {
            self.notes.truncate(noted);
        }
        let undone = match &result {
            Ok(_) => self.simple("RELEASE SAVEPOINT op"),
            Err(_) => self.simple("ROLLBACK TO SAVEPOINT op"),
        };
        if undone.is_err() {
            self.aborted = true;
            return Err(self.failed());
        }
        result
    }

    fn account_record(&mut self, account: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        let row = self.query_opt(
            "SELECT a.identity_key, a.deactivated IS NOT NULL, w.secret
             FROM accounts a LEFT JOIN wipe_orders w ON w.account = a.id WHERE a.id = $1",
            &[&&account.0[..]],
        )?;
        let Some(row) = row else { return Ok(None) };
        let key: Vec<u8> = row.try_get(0)?;
        let wipe: Option<Vec<u8>> = row.try_get(2)?;
        Ok(bytes(key).map(|key| AccountRecord {
            identity_key: IdentityKey(key),
            deactivated: row.try_get(1).unwrap_or(true),
            wipe_order: wipe.and_then(bytes),
        }))
    }

    fn deactivate_in_place(&mut self, account: &AccountId, now: UnixSeconds) -> Result<u64, StoreError> {
        let id = &account.0[..];
        let changed = self.execute(
            "UPDATE accounts SET deactivated = COALESCE(deactivated, $2) WHERE id = $1",
            &[&id, &as_i64(now)],
        )?;
        self.execute("DELETE FROM mailbox WHERE recipient = $1", &[&id])?;
        self.execute("DELETE FROM key_packages WHERE account = $1", &[&id])?;
        Ok(changed)
    }

    fn require_active(&mut self, account: &AccountId) -> Result<(), StoreError> {
        match self.account_record(account)? {
            Some(record) if !record.deactivated => Ok(()),
            _ => Err(StoreError::UnknownAccount),
        }
    }

    /// Puts a Welcome in an account's introduction mailbox, numbered under
    /// the account's row lock; false if the account is unknown or
    /// deactivated.
    fn introduce(
        &mut self,
        account: &AccountId,
        welcome: &Arc<[u8]>,
        now: UnixSeconds,
        expires: UnixSeconds,
        out: &mut Enqueued,
    ) -> Result<bool, StoreError> {
        let numbered = self.query_opt(
            "UPDATE accounts SET intro_seq = intro_seq + 1 WHERE id = $1 AND deactivated IS NULL
             RETURNING intro_seq",
            &[&&account.0[..]],
        )?;
        let Some(row) = numbered else { return Ok(false) };
        let seq: i64 = row.try_get(0)?;
        self.execute(
            "INSERT INTO mailbox (recipient, seq, arrived, expires, payload) VALUES ($1, $2, $3, $4, $5)",
            &[&&account.0[..], &seq, &as_i64(now), &as_i64(expires), &&welcome[..]],
        )?;
        self.notes.push(crate::cluster::Note::Stored(Mailbox::Account(*account)));
        out.queued.push(Queued {
            id: as_u64(seq),
            to: Mailbox::Account(*account),
            arrived_at: now,
            payload: Arc::clone(welcome),
        });
        Ok(true)
    }

    /// Decides a commit under its group's row lock; if accepted, moves the
    /// group on and answers `None`.
    fn order_commit(
        &mut self,
        commit: &CommitRequest,
        expires: UnixSeconds,
    ) -> Result<Option<CommitOutcome>, StoreError> {
        let group = &commit.group.0[..];
        // A new group's row is made first, at the commit's epoch with no
        // key (which `decide` accepts, as it would no row), so that two
        // relays ordering its first commit at once queue behind one lock.
        self.execute(
            "INSERT INTO group_epochs (id, epoch, auth_key) VALUES ($1, $2, NULL) ON CONFLICT (id) DO NOTHING",
            &[&group, &as_i64(commit.epoch)],
        )?;
        let row =
            self.query_opt("SELECT epoch, auth_key FROM group_epochs WHERE id = $1 FOR UPDATE", &[&group])?;
        let record = match row {
            Some(row) => Some(GroupRecord {
                epoch: as_u64(row.try_get(0)?),
                key: row.try_get::<_, Option<Vec<u8>>>(1)?.and_then(bytes),
            }),
            None => None,
        };
        let ordered = match &record {
            Some(record) if record.epoch != commit.epoch => self
                .query_opt(
                    "SELECT digest FROM group_commits WHERE group_id = $1 AND epoch = $2",
                    &[&group, &as_i64(commit.epoch)],
                )?
                .map(|row| row.try_get::<_, Vec<u8>>(0))
                .transpose()?
                .and_then(bytes),
            _ => None,
        };
        match commit.decide(record.as_ref(), ordered) {
            Decision::Accept => {}
            Decision::Repeated => return Ok(Some(CommitOutcome::Repeated)),
            Decision::Stale(current) => return Ok(Some(CommitOutcome::Stale { current })),
            Decision::NotAMember => return Err(StoreError::NotAMember),
        }
        self.execute(
            "UPDATE group_epochs SET epoch = $2, auth_key = $3 WHERE id = $1",
            &[&group, &as_i64(commit.epoch.saturating_add(1)), &&commit.next_key[..]],
        )?;
        self.execute(
            "INSERT INTO group_commits (group_id, epoch, digest, expires) VALUES ($1, $2, $3, $4)
             ON CONFLICT (group_id, epoch) DO UPDATE SET digest = excluded.digest, expires = excluded.expires",
            &[&group, &as_i64(commit.epoch), &&commit.digest()[..], &as_i64(expires)],
        )?;
        Ok(None)
    }

    /// Writes `payload` (stored once, when a first queue takes it) to every
    /// queue of `targets` whose write secret matches and that has room;
    /// indexes of the others go to `refused`. A queue named twice is
    /// written once. Each entry's number comes from its queue's row,
    /// locked by the update until the batch commits.
    fn write_to_queues(
        &mut self,
        targets: &[Capability],
        payload: &Arc<[u8]>,
        now: UnixSeconds,
        expires: UnixSeconds,
        out: &mut Enqueued,
    ) -> Result<Vec<u32>, StoreError> {
        let len = payload.len() as i64;
        let mut refused = Vec::new();
        let mut stored: Option<i64> = None;
        // Queue rows are locked in id order, in every batch of every
        // relay, so two batches never wait for each other in a circle.
        let mut order: Vec<(u32, &Capability)> = (0..).zip(targets).collect();
        order.sort_by_key(|(_, capability)| capability.queue.0);
        for (index, capability) in order {
            let already = out.queued.iter().any(|queued| queued.to == Mailbox::Queue(capability.queue));
            let numbered = if already {
                None
            } else {
                self.query_opt(
                    "UPDATE queues SET next_seq = next_seq + 1, entries = entries + 1, bytes = bytes + $2
                     WHERE id = $1 AND write_hash = $3 AND entries < $4 AND bytes + $2 <= $5
                     RETURNING next_seq - 1",
                    &[
                        &&capability.queue.0[..],
                        &len,
                        &&capability.write_hash()[..],
                        &as_i64(MAX_QUEUE_ENTRIES),
                        &as_i64(MAX_QUEUE_BYTES),
                    ],
                )?
            };
            let Some(row) = numbered else {
                refused.push(index);
                continue;
            };
            let seq: i64 = row.try_get(0)?;
            let payload_id = match stored {
                Some(id) => id,
                None => {
                    let row = self.query_opt(
                        "INSERT INTO payloads (arrived, expires, data) VALUES ($1, $2, $3) RETURNING id",
                        &[&as_i64(now), &as_i64(expires), &&payload[..]],
                    )?;
                    let id: i64 = row.ok_or(StoreError::Closed)?.try_get(0)?;
                    *stored.insert(id)
                }
            };
            self.execute(
                "INSERT INTO queue_entries (queue, seq, payload, len, arrived, expires)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&&capability.queue.0[..], &seq, &payload_id, &len, &as_i64(now), &as_i64(expires)],
            )?;
            self.notes.push(crate::cluster::Note::Stored(Mailbox::Queue(capability.queue)));
            out.queued.push(Queued {
                id: as_u64(seq),
                to: Mailbox::Queue(capability.queue),
                arrived_at: now,
                payload: Arc::clone(payload),
            });
        }
        refused.sort_unstable();
        Ok(refused)
    }

    /// Writes `payload` to one queue in one statement: the queue's row
    /// numbers the entry (and is locked by the update), and the entry holds
    /// the payload itself.
    fn write_to_queue(
        &mut self,
        target: &Capability,
        payload: &Arc<[u8]>,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> Result<Enqueued, StoreError> {
        let args = EnqueueArgs::new(target, payload, now, expires);
        let row = self.query_opt(ENQUEUE_ONE, &args.params())?;
        self.enqueued_one(target, payload, now, row)
    }

    /// What [`ENQUEUE_ONE`] answered with `row`, as `enqueue_sealed` says it.
    fn enqueued_one(
        &mut self,
        target: &Capability,
        payload: &Arc<[u8]>,
        now: UnixSeconds,
        row: Option<Row>,
    ) -> Result<Enqueued, StoreError> {
        let mut out = Enqueued::default();
        match row {
            Some(row) => {
                self.notes.push(crate::cluster::Note::Stored(Mailbox::Queue(target.queue)));
                out.queued.push(Queued {
                    id: as_u64(row.try_get(0)?),
                    to: Mailbox::Queue(target.queue),
                    arrived_at: now,
                    payload: Arc::clone(payload),
                });
            }
            None => out.refused.push(0),
        }
        Ok(out)
    }

    /// Sends every write of `writes` before reading any answer (one round
    /// trip for them all, not one each), then deletes the payloads the
    /// acknowledgements among them left unreferenced.
    ///
    /// They go in the order of the rows they lock ([`lock_order`]), each
    /// queue's writes in their own order: every relay's
    /// batches lock queues in the same order, so a relay's sends and
    /// another's acknowledgements of the same queues never wait for each
    /// other in a circle. Writes to different queues commit together, so
    /// their order is not seen.
    fn pipeline(&mut self, writes: &[&Write]) -> Result<Vec<Written>, StoreError> {
        let enqueue = self.statement(ENQUEUE_ONE)?;
        let ack = self.statement(ACK_ENTRIES)?;
        let spend = self.statement(SPEND_TOKEN)?;
        let mut order: Vec<usize> = (0..writes.len()).collect();
        order.sort_by_key(|&index| lock_order(writes[index]));
        let writes: Vec<(usize, &Write)> = order.iter().map(|&index| (index, writes[index])).collect();
        // The statements' parameters, owned here while they are sent.
        let args: Vec<WriteArgs<'_>> = writes.iter().map(|(_, write)| WriteArgs::new(write)).collect();
        let statements: Vec<(&Statement, Vec<&(dyn ToSql + Sync)>)> = args
            .iter()
            .map(|args| match args {
                WriteArgs::Enqueue(args) => (&enqueue, args.params().to_vec()),
                WriteArgs::Ack { queue, seqs } => (&ack, vec![queue as &(dyn ToSql + Sync), seqs]),
                WriteArgs::Spend { nonce, day } => (&spend, vec![nonce as &(dyn ToSql + Sync), day]),
            })
            .collect();
        let statements: Vec<(&Statement, Params<'_>)> =
            statements.iter().map(|(statement, params)| (*statement, &params[..])).collect();
        let rows = self.client()?.pipeline(&statements)?;
        let mut written: Vec<Option<Written>> = writes.iter().map(|_| None).collect();
        let mut payloads = Vec::new();
        for (&(index, write), row) in writes.iter().zip(rows) {
            let row = row?;
            written[index] = Some(match write {
                Write::Enqueue { target, payload, now, .. } => {
                    Written::Enqueued(self.enqueued_one(target, payload, *now, row)?)
                }
                Write::Ack { .. } => {
                    let (deleted, shared) = acked(row)?;
                    payloads.extend(shared);
                    Written::Acked(deleted)
                }
                Write::Spend { .. } => Written::Spent(row.is_some()),
            });
        }
        payloads.sort_unstable();
        payloads.dedup();
        self.drop_unreferenced(&payloads)?;
        written.into_iter().map(|written| written.ok_or(StoreError::Closed)).collect()
    }

    /// Deletes those of `payloads` (in id order) no queue refers to any
    /// more. Their rows are locked first, in id order, and the check is a
    /// statement of its own (so it sees what committed while it waited):
    /// two relays acknowledging a payload's last two entries at once cannot
    /// both see the other's entry and both keep it.
    fn drop_unreferenced(&mut self, payloads: &[i64]) -> Result<(), StoreError> {
        if payloads.is_empty() {
            return Ok(());
        }
        let ids = payloads.to_vec();
        self.query("SELECT 1 FROM payloads WHERE id = ANY($1) ORDER BY id FOR UPDATE", &[&ids])?;
        self.execute(
            "DELETE FROM payloads p WHERE p.id = ANY($1)
             AND NOT EXISTS (SELECT 1 FROM queue_entries e WHERE e.payload = p.id)",
            &[&ids],
        )?;
        Ok(())
    }

    fn delete_queue_in_place(&mut self, queue: &QueueId) -> Result<bool, StoreError> {
        let id = &queue.0[..];
        // The queue's row first: a write to it waits for this transaction
        // and then finds no queue, so no entry is added behind our back.
        let deleted = self.execute("DELETE FROM queues WHERE id = $1", &[&id])? == 1;
        self.delete_entries(queue)?;
        Ok(deleted)
    }

    fn delete_entries(&mut self, queue: &QueueId) -> Result<(), StoreError> {
        let id = &queue.0[..];
        let payloads = self.query(
            "DELETE FROM queue_entries WHERE queue = $1 AND payload IS NOT NULL RETURNING payload",
            &[&id],
        )?;
        self.execute("DELETE FROM queue_entries WHERE queue = $1", &[&id])?;
        let mut ids: Vec<i64> = payloads.iter().map(|row| row.try_get(0)).collect::<Result<_, _>>()?;
        ids.sort_unstable();
        ids.dedup();
        self.drop_unreferenced(&ids)
    }

    fn pending_rows(
        &mut self,
        mailbox: &Mailbox,
        after: u64,
        limit: u32,
        now: UnixSeconds,
    ) -> Result<Vec<Row>, StoreError> {
        let (after, limit, now) = (as_i64(after), i64::from(limit), as_i64(now));
        match mailbox {
            Mailbox::Account(account) => self.query(
                "SELECT seq, arrived, payload FROM mailbox
                 WHERE recipient = $1 AND seq > $2 AND expires > $4 ORDER BY seq LIMIT $3",
                &[&&account.0[..], &after, &limit, &now],
            ),
            Mailbox::Queue(queue) => self.query(
                "SELECT e.seq, e.arrived, COALESCE(e.data, p.data)
                 FROM queue_entries e LEFT JOIN payloads p ON p.id = e.payload
                 WHERE e.queue = $1 AND e.seq > $2 AND e.expires > $4 ORDER BY e.seq LIMIT $3",
                &[&&queue.0[..], &after, &limit, &now],
            ),
        }
    }

    /// Deletes expired payloads with their entries (keeping each queue's
    /// counters), spent tokens of past days, queues unused for
    /// [`QUEUE_IDLE_DAYS`] and old reports; answers how many entries went.
    fn purge(&mut self, now: UnixSeconds) -> Result<u64, StoreError> {
        // One relay of a cluster purges at a time; the others skip.
        let ours = self
            .query_opt("SELECT pg_try_advisory_xact_lock($1)", &[&PURGE_LOCK])?
            .map(|row| row.try_get::<_, bool>(0))
            .transpose()?
            .unwrap_or(false);
        if !ours {
            return Ok(0);
        }
        let now_i = as_i64(now);
        let mailbox = self.execute("DELETE FROM mailbox WHERE expires <= $1", &[&now_i])?;
        self.execute("DELETE FROM group_commits WHERE expires <= $1", &[&now_i])?;
        self.execute("DELETE FROM key_packages WHERE expires <= $1", &[&now_i])?;
        let entries: i64 = self
            .query_opt(
                "WITH gone AS (DELETE FROM queue_entries WHERE expires <= $1 RETURNING queue, len),
                 counted AS (SELECT queue, count(*) AS n, sum(len) AS b FROM gone GROUP BY queue),
                 updated AS (
                     UPDATE queues q SET entries = q.entries - c.n, bytes = q.bytes - c.b
                     FROM counted c WHERE q.id = c.queue RETURNING c.n)
                 SELECT COALESCE(sum(n), 0)::bigint FROM updated",
                &[&now_i],
            )?
            .map(|row| row.try_get(0))
            .transpose()?
            .unwrap_or(0);
        self.execute("DELETE FROM payloads WHERE expires <= $1", &[&now_i])?;
        // A token is good on its day and the next.
        self.execute("DELETE FROM spent_tokens WHERE day < $1", &[&(day(now) - 1)])?;
        // Idle queues: the row goes only if it is still idle when deleted
        // (another relay may have just proved it), then its entries.
        let idle = self.query(
            "DELETE FROM queues WHERE used_day < $1 RETURNING id",
            &[&(day(now) - as_i64(QUEUE_IDLE_DAYS))],
        )?;
        for row in idle {
            if let Some(id) = bytes(row.try_get(0)?) {
                self.delete_entries(&QueueId(id))?;
            }
        }
        let cutoff = as_i64(now.saturating_sub(REPORT_DAYS * 24 * 3600));
        self.execute("DELETE FROM reports WHERE received < $1", &[&cutoff])?;
        Ok(mailbox + as_u64(entries))
    }

    /// Rows in `table` (for tests).
    #[cfg(test)]
    pub(crate) fn count(&mut self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        self.client().and_then(|client| Ok(client.query_one(&sql, &[])?.try_get(0)?)).unwrap_or(-1)
    }

    /// A queue's entry and byte counters (for tests).
    #[cfg(test)]
    pub(crate) fn queue_counters_raw(&mut self, queue: &QueueId) -> Result<(i64, i64), StoreError> {
        let row =
            self.client()?.query_one("SELECT entries, bytes FROM queues WHERE id = $1", &[&&queue.0[..]])?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Runs SQL directly (tests that set counters up).
    #[cfg(test)]
    pub(crate) fn execute_raw(&mut self, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
        self.client()?.execute(sql, params)
    }
}

impl Operations for PostgresStore {
    /// Pipelines the writes (see [`PostgresStore::pipeline`]) inside a
    /// batch, where a failed one fails the batch anyway; each alone
    /// otherwise.
    fn write_each(&mut self, writes: &[&Write]) -> Vec<Result<Written, StoreError>> {
        if !self.in_batch || writes.len() < 2 {
            return writes.iter().map(|write| write.run(self)).collect();
        }
        if self.aborted {
            return writes.iter().map(|_| Err(self.failed())).collect();
        }
        let noted = self.notes.len();
        match self.pipeline(writes) {
            Ok(written) => written.into_iter().map(Ok).collect(),
            Err(error) => {
                self.notes.truncate(noted);
                self.aborted = true;
                self.retryable_abort |= error.is_unavailable();
                let mut failed: Vec<_> = writes.iter().skip(1).map(|_| Err(self.failed())).collect();
                failed.insert(0, Err(error));
                failed
            }
        }
    }

    fn register(
        &mut self,
        invite_hash: &[u8; 32],
        identity_key: &IdentityKey,
        wipe_hash: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<AccountId, StoreError> {
        self.atomic(|store| {
            let account = identity_key.account();
            let inserted = store.execute(
                "INSERT INTO accounts (id, identity_key, created, wipe_hash) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&&account.0[..], &&identity_key.0[..], &as_i64(now), &&wipe_hash[..]],
            )?;
            if inserted == 0 {
                return Err(StoreError::AlreadyRegistered);
            }
            let used = store.query_opt(
                "UPDATE invites SET uses_left = uses_left - 1
                 WHERE code_hash = $1 AND uses_left > 0 AND expires > $2 RETURNING uses_left",
                &[&&invite_hash[..], &as_i64(now)],
            )?;
            let Some(row) = used else { return Err(StoreError::BadInvite) };
            if row.try_get::<_, i32>(0)? <= 0 {
                store.execute("DELETE FROM invites WHERE code_hash = $1", &[&&invite_hash[..]])?;
            }
            Ok(account)
        })
    }

    fn remote_wipe(
        &mut self,
        account: &AccountId,
        secret: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<Vec<QueueId>, StoreError> {
        self.atomic(|store| {
            let stored =
                store.query_opt("SELECT wipe_hash FROM accounts WHERE id = $1", &[&&account.0[..]])?;
            let stored: Option<Vec<u8>> = stored.map(|row| row.try_get(0)).transpose()?;
            let presented = Sha256::digest(secret);
            if !stored.is_some_and(|hash| bool::from(hash.as_slice().ct_eq(presented.as_slice()))) {
                return Err(StoreError::BadWipeCode);
            }
            store.execute(
                "INSERT INTO wipe_orders (account, secret, created) VALUES ($1, $2, $3)
                 ON CONFLICT (account) DO UPDATE SET secret = excluded.secret, created = excluded.created",
                &[&&account.0[..], &&secret[..], &as_i64(now)],
            )?;
            store.deactivate_in_place(account, now)?;
            store.notes.push(crate::cluster::Note::Wipe(*account));
            // The device's queues, tagged with its wipe secret, go with it.
            let tagged = store.query("SELECT id, wipe_tag FROM queues WHERE wipe_tag IS NOT NULL", &[])?;
            let mut deleted = Vec::new();
            for row in tagged {
                let (Some(id), tag) =
                    (bytes::<{ QueueId::LEN }>(row.try_get(0)?), row.try_get::<_, Vec<u8>>(1)?)
                else {
                    continue;
                };
                let queue = QueueId(id);
                if bool::from(tag.as_slice().ct_eq(&hush_proto::wipe_tag(secret, &queue)[..])) {
                    store.delete_queue_in_place(&queue)?;
                    // Their connections at other relays are closed.
                    store.notes.push(crate::cluster::Note::Gone(queue));
                    deleted.push(queue);
                }
            }
            Ok(deleted)
        })
    }

    fn account(&mut self, account: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        self.account_record(account)
    }

    fn add_key_packages(
        &mut self,
        account: &AccountId,
        one_time: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        expires: UnixSeconds,
        now: UnixSeconds,
    ) -> Result<u32, StoreError> {
        self.atomic(|store| {
            store.require_active(account)?;
            let id = &account.0[..];
            let insert =
                "INSERT INTO key_packages (account, last_resort, data, expires) VALUES ($1, $2, $3, $4)";
            for package in one_time {
                store.execute(insert, &[&id, &false, &&package[..], &as_i64(expires)])?;
            }
            if let Some(package) = last_resort {
                store.execute("DELETE FROM key_packages WHERE account = $1 AND last_resort", &[&id])?;
                store.execute(insert, &[&id, &true, &package, &as_i64(expires)])?;
            }
            store.count_key_packages(account, now)
        })
    }

    fn count_key_packages(&mut self, account: &AccountId, now: UnixSeconds) -> Result<u32, StoreError> {
        let row = self.query_opt(
            "SELECT COUNT(*) FROM key_packages WHERE account = $1 AND NOT last_resort
             AND (expires IS NULL OR expires > $2)",
            &[&&account.0[..], &as_i64(now)],
        )?;
        let count: i64 = row.map(|row| row.try_get(0)).transpose()?.unwrap_or(0);
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    fn take_key_package(&mut self, account: &AccountId, now: UnixSeconds) -> Result<Vec<u8>, StoreError> {
        self.atomic(|store| {
            store.require_active(account)?;
            let params: Params<'_> = &[&&account.0[..], &as_i64(now)];
            // A one-time package, taken by one relay only (SKIP LOCKED:
            // two relays handing out packages at once take different
            // ones); else the last-resort one, which is shared.
            let one_time = store.query_opt(
                "DELETE FROM key_packages WHERE seq = (
                     SELECT seq FROM key_packages
                     WHERE account = $1 AND NOT last_resort AND (expires IS NULL OR expires > $2)
                     ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING data",
                params,
            )?;
            if let Some(row) = one_time {
                return Ok(row.try_get(0)?);
            }
            let last_resort = store.query_opt(
                "SELECT data FROM key_packages
                 WHERE account = $1 AND last_resort AND (expires IS NULL OR expires > $2)
                 ORDER BY seq DESC LIMIT 1",
                params,
            )?;
            Ok(last_resort.ok_or(StoreError::NoKeyPackage)?.try_get(0)?)
        })
    }

    fn create_queue(
        &mut self,
        id: &QueueId,
        owner_key: &[u8; 32],
        write_hash: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        self.atomic(|store| {
            let inserted = store.execute(
                "INSERT INTO queues (id, owner_key, write_hash, next_seq, entries, bytes, used_day)
                 VALUES ($1, $2, $3, 1, 0, 0, $4) ON CONFLICT (id) DO NOTHING",
                &[&&id.0[..], &&owner_key[..], &&write_hash[..], &day(now)],
            )?;
            if inserted == 0 {
                return Err(StoreError::QueueIdTaken);
            }
            Ok(())
        })
    }

    fn queue_owner(&mut self, queue: &QueueId) -> Result<Option<[u8; 32]>, StoreError> {
        let row = self.query_opt("SELECT owner_key FROM queues WHERE id = $1", &[&&queue.0[..]])?;
        Ok(row.map(|row| row.try_get::<_, Vec<u8>>(0)).transpose()?.and_then(bytes))
    }

    fn touch_queues(&mut self, queues: &[QueueId], now: UnixSeconds) -> Result<(), StoreError> {
        self.atomic(|store| {
            for queue in queues {
                store.execute(
                    "UPDATE queues SET used_day = $2 WHERE id = $1 AND used_day < $2",
                    &[&&queue.0[..], &day(now)],
                )?;
            }
            Ok(())
        })
    }

    fn enqueue_sealed(
        &mut self,
        targets: &[Capability],
        payload: &Arc<[u8]>,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> Result<Enqueued, StoreError> {
        if let [target] = targets {
            // The common case, one queue: one statement, one round trip.
            return self.single(|store| store.write_to_queue(target, payload, now, expires));
        }
        self.atomic(|store| {
            let mut out = Enqueued::default();
            out.refused = store.write_to_queues(targets, payload, now, expires, &mut out)?;
            Ok(out)
        })
    }

    fn commit_sealed(
        &mut self,
        request: &SealedCommitRequest,
        now: UnixSeconds,
        expires: UnixSeconds,
    ) -> Result<CommitOutcome, StoreError> {
        self.atomic(|store| {
            let commit = &request.commit;
            if let Some(outcome) = store.order_commit(commit, expires)? {
                return Ok(outcome);
            }
            let mut out = Enqueued::default();
            out.refused = store.write_to_queues(&request.targets, &commit.payload, now, expires, &mut out)?;
            if let Some(welcome) = &commit.welcome {
                let welcome_targets = request.welcome_targets();
                for (account, index) in &welcome_targets.accounts {
                    if !store.introduce(account, welcome, now, expires, &mut out)? {
                        out.refused.push(*index);
                    }
                }
                let mut welcomed = Enqueued::default();
                let refused =
                    store.write_to_queues(&welcome_targets.queues, welcome, now, expires, &mut welcomed)?;
                out.refused.extend(refused.iter().map(|i| welcome_targets.queue_indexes[*i as usize]));
                out.queued.extend(welcomed.queued);
            }
            for (index, (capability, next_hash)) in request.rotations() {
                let rotated = store.execute(
                    "UPDATE queues SET write_hash = $3 WHERE id = $1 AND write_hash = $2",
                    &[&&capability.queue.0[..], &&capability.write_hash()[..], &&next_hash[..]],
                )?;
                if rotated == 0 {
                    out.refused.push(index);
                }
            }
            out.refused.sort_unstable();
            out.queued.sort_by_key(|queued| queued.id);
            Ok(CommitOutcome::Accepted(out))
        })
    }

    fn ack_queue(&mut self, queue: &QueueId, seqs: &[u64]) -> Result<u64, StoreError> {
        let seqs: Vec<i64> = seqs.iter().map(|seq| as_i64(*seq)).collect();
        // Three statements however many entries (a failure loses the
        // batch's transaction: acknowledgements are sent again).
        self.single(|store| {
            let row = store.query_opt(ACK_ENTRIES, &[&&queue.0[..], &seqs])?;
            let (deleted, payloads) = acked(row)?;
            store.drop_unreferenced(&payloads)?;
            Ok(deleted)
        })
    }

    fn rekey_queue(
        &mut self,
        queue: &QueueId,
        owner_key: &[u8; 32],
        wipe_tag: &[u8; 32],
    ) -> Result<bool, StoreError> {
        self.atomic(|store| {
            let changed = store.execute(
                "UPDATE queues SET owner_key = $2, wipe_tag = $3 WHERE id = $1",
                &[&&queue.0[..], &&owner_key[..], &&wipe_tag[..]],
            )?;
            Ok(changed == 1)
        })
    }

    fn delete_queue(&mut self, queue: &QueueId) -> Result<bool, StoreError> {
        self.atomic(|store| store.delete_queue_in_place(queue))
    }

    fn add_report(
        &mut self,
        account: &AccountId,
        content: &[u8],
        signature: &[u8; 64],
        reason: &str,
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        self.atomic(|store| {
            // Reports are rare: one table lock keeps the caps exact when
            // several relays take reports at once.
            store.simple("LOCK TABLE reports IN SHARE ROW EXCLUSIVE MODE")?;
            // The same message reported again (by another member, or
            // twice) is one report.
            let digest = super::report_digest(account, content);
            if store.query_opt("SELECT 1 FROM reports WHERE digest = $1", &[&&digest[..]])?.is_some() {
                return Ok(());
            }
            let row = store
                .query_opt("SELECT COUNT(*), MIN(id) FROM reports WHERE account = $1", &[&&account.0[..]])?;
            let (about, oldest): (i64, Option<i64>) = match row {
                Some(row) => (row.try_get(0)?, row.try_get(1)?),
                None => (0, None),
            };
            if let (true, Some(oldest)) = (as_u64(about) >= MAX_REPORTS_PER_ACCOUNT, oldest) {
                store.execute("UPDATE reports SET more = more + 1 WHERE id = $1", &[&oldest])?;
                return Ok(());
            }
            let row = store.query_opt(
                "SELECT COUNT(*), COALESCE(SUM(octet_length(content)), 0)::bigint FROM reports",
                &[],
            )?;
            let (held, held_bytes): (i64, i64) = match row {
                Some(row) => (row.try_get(0)?, row.try_get(1)?),
                None => (0, 0),
            };
            if as_u64(held) >= MAX_REPORTS
                || as_u64(held_bytes).saturating_add(content.len() as u64) > MAX_REPORT_BYTES
            {
                return Err(StoreError::Full);
            }
            store.execute(
                "INSERT INTO reports (account, digest, content, signature, reason, received)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&&account.0[..], &&digest[..], &content, &&signature[..], &reason, &as_i64(hour(now))],
            )?;
            Ok(())
        })
    }

    fn spend_token(&mut self, token_day: u64, nonce: &[u8; 32]) -> Result<bool, StoreError> {
        self.single(|store| {
            let inserted = store.query_opt(SPEND_TOKEN, &[&&nonce[..], &as_i64(token_day)])?;
            Ok(inserted.is_some())
        })
    }

    fn pending(
        &mut self,
        mailbox: &Mailbox,
        after: u64,
        limit: u32,
        now: UnixSeconds,
    ) -> Result<Vec<Queued>, StoreError> {
        let rows = self.pending_rows(mailbox, after, limit, now)?;
        let mut page = Vec::new();
        let mut total = 0;
        for row in rows {
            let payload: Vec<u8> = row.try_get(2)?;
            total += payload.len();
            if !page.is_empty() && total > super::PAGE_BYTES {
                break;
            }
            page.push(Queued {
                id: as_u64(row.try_get(0)?),
                to: *mailbox,
                arrived_at: as_u64(row.try_get(1)?),
                payload: Arc::from(payload),
            });
        }
        Ok(page)
    }

    fn ack(&mut self, account: &AccountId, ids: &[u64]) -> Result<u64, StoreError> {
        let ids: Vec<i64> = ids.iter().map(|id| as_i64(*id)).collect();
        self.atomic(|store| {
            store.execute(
                "DELETE FROM mailbox WHERE recipient = $1 AND seq = ANY($2)",
                &[&&account.0[..], &ids],
            )
        })
    }

    fn purge_expired(&mut self, now: UnixSeconds) -> Result<u64, StoreError> {
        self.atomic(|store| store.purge(now))
    }
}

impl RelayStore for PostgresStore {
    fn batch(&mut self, work: &mut dyn FnMut(&mut dyn Operations)) -> Result<(), StoreError> {
        self.aborted = false;
        self.retryable_abort = false;
        self.notes.clear();
        self.begin()?;
        self.in_batch = true;
        work(self);
        self.in_batch = false;
        if std::mem::take(&mut self.aborted) {
            self.notes.clear();
            let failed = self.failed();
            self.rollback();
            return Err(failed);
        }
        let committed = self.send_notes().and_then(|()| self.commit());
        if let Err(error) = committed {
            if self.in_transaction {
                self.rollback();
            }
            return Err(error);
        }
        Ok(())
    }
}

impl Admin for PostgresStore {
    fn add_invite(
        &mut self,
        code_hash: &[u8; 32],
        uses: u32,
        expires: UnixSeconds,
    ) -> Result<(), StoreError> {
        let uses = i32::try_from(uses).unwrap_or(i32::MAX);
        self.atomic(|store| {
            store.execute(
                "INSERT INTO invites (code_hash, uses_left, expires) VALUES ($1, $2, $3)",
                &[&&code_hash[..], &uses, &as_i64(expires)],
            )
        })?;
        Ok(())
    }

    fn deactivate(&mut self, account: &AccountId, now: UnixSeconds) -> Result<bool, StoreError> {
        self.atomic(|store| {
            store.notes.push(crate::cluster::Note::Close(*account));
            store.deactivate_in_place(account, now)
        })
        .map(|changed| changed > 0)
    }

    fn provision(
        &mut self,
        accounts: &[(IdentityKey, [u8; 32])],
        now: UnixSeconds,
    ) -> Result<usize, StoreError> {
        self.atomic(|store| {
            let mut added = 0;
            for (key, wipe_hash) in accounts {
                let id = key.account();
                added += store.execute(
                    "INSERT INTO accounts (id, identity_key, created, wipe_hash) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[&&id.0[..], &&key.0[..], &as_i64(now), &&wipe_hash[..]],
                )? as usize;
            }
            Ok(added)
        })
    }

    fn stats(&mut self) -> Result<Stats, StoreError> {
        let row = self.query_opt(
            "SELECT (SELECT COUNT(*) FROM accounts),
                    (SELECT COUNT(*) FROM accounts WHERE deactivated IS NULL),
                    (SELECT COUNT(*) FROM mailbox) + (SELECT COUNT(*) FROM queue_entries),
                    ((SELECT COALESCE(SUM(octet_length(payload)), 0) FROM mailbox)
                      + (SELECT COALESCE(SUM(octet_length(data)), 0) FROM payloads)
                      + (SELECT COALESCE(SUM(octet_length(data)), 0) FROM queue_entries))::bigint,
                    (SELECT COUNT(*) FROM queues)",
            &[],
        )?;
        let Some(row) = row else { return Ok(Stats::default()) };
        let count = |index: usize| -> Result<u64, StoreError> { Ok(as_u64(row.try_get(index)?)) };
        Ok(Stats {
            accounts: count(0)?,
            active_accounts: count(1)?,
            queued_messages: count(2)?,
            queued_bytes: count(3)?,
            queues: count(4)?,
        })
    }

    fn reports(&mut self) -> Result<Vec<Report>, StoreError> {
        let rows = self.query(
            "SELECT id, account, content, signature, reason, received, more FROM reports ORDER BY id",
            &[],
        )?;
        let mut reports = Vec::new();
        for row in rows {
            let (Some(account), Some(signature)) = (bytes(row.try_get(1)?), bytes(row.try_get(3)?)) else {
                continue;
            };
            reports.push(Report {
                id: as_u64(row.try_get(0)?),
                account: AccountId(account),
                content: row.try_get(2)?,
                signature,
                reason: row.try_get(4)?,
                received: as_u64(row.try_get(5)?),
                more: as_u64(row.try_get(6)?),
            });
        }
        Ok(reports)
    }

    fn dismiss_report(&mut self, id: u64) -> Result<bool, StoreError> {
        self.atomic(|store| store.execute("DELETE FROM reports WHERE id = $1", &[&as_i64(id)])).map(|n| n > 0)
    }
}

#[cfg(test)]
mod tests;
