//! One connection of the store: tokio-postgres, driven by a runtime of its
//! own on the store's thread (as the `postgres` crate's blocking client
//! does), so that the store can also send several statements before it
//! reads the first answer (pipelining), which the blocking client cannot.
//! bench/pg-clients measures what that is worth on the relay's writes.

use std::future::Future;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error, Row, Statement, ToStatement};

use crate::store::StoreError;

/// How long connecting may take, if the config does not say.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one call (a statement, a pipeline of them, a commit) may take
/// before the connection is given up: a server that stopped answering
/// without closing the connection (a stopped process, a commit waiting for
/// a synchronous standby that is gone) must not hold a store worker, and
/// every job behind it, for ever. Far above anything a healthy server
/// takes (lock waits end after `lock_timeout`, 5 s).
const CALL_DEADLINE: Duration = Duration::from_secs(120);

/// How long closing waits for the server to hear the goodbye.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Parameters of one statement.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(crate) struct Connection {
    /// A current-thread runtime: it runs the connection's task only while
    /// a call below waits on it, on the calling thread.
    runtime: Runtime,
    /// None only once dropped.
    client: Option<Client>,
    /// The task that drives the connection.
    task: Option<tokio::task::JoinHandle<()>>,
    /// Set when a call ran past [`CALL_DEADLINE`]: the connection is given
    /// up (whatever the server did with that call is unknown).
    broken: bool,
}

impl Connection {
    /// Connects with `config` over `tls` (for TCP hosts).
    pub(super) fn connect(
        config: &tokio_postgres::Config,
        tls: tokio_postgres_rustls::MakeRustlsConnect,
    ) -> Result<Self, ConnectError> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ConnectError::Io)?;
        // The config's timeout covers each socket's connect; this one the
        // whole of it (TLS, start-up, authentication) as well.
        let deadline = config.get_connect_timeout().copied().unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let (client, connection) = runtime
            .block_on(async { tokio::time::timeout(deadline, config.connect(tls)).await })
            .map_err(|_| ConnectError::TimedOut)?
            .map_err(ConnectError::Postgres)?;
        // The connection's end (an error, or the server going away) shows
        // as the client being closed: every later call fails with it.
        let task = runtime.spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { runtime, client: Some(client), task: Some(task), broken: false })
    }

    /// Whether the connection is known to be gone. (The connection's task
    /// runs only during calls: a server that went away between them is
    /// found out by the next call, which fails.)
    pub(crate) fn is_closed(&self) -> bool {
        self.broken || self.client.as_ref().is_none_or(Client::is_closed)
    }

    /// Waits for `call`, at most [`CALL_DEADLINE`].
    fn finish<T>(
        runtime: &Runtime,
        broken: &mut bool,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, StoreError> {
        match runtime.block_on(async { tokio::time::timeout(CALL_DEADLINE, call).await }) {
            Ok(result) => Ok(result?),
            Err(_) => {
                *broken = true;
                Err(StoreError::Unavailable)
            }
        }
    }

    pub(crate) fn prepare(&mut self, sql: &str) -> Result<Statement, StoreError> {
        let client = self.client.as_ref().ok_or(StoreError::Closed)?;
        Self::finish(&self.runtime, &mut self.broken, client.prepare(sql))
    }

    pub(crate) fn execute<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: Params<'_>,
    ) -> Result<u64, StoreError> {
        let client = self.client.as_ref().ok_or(StoreError::Closed)?;
        Self::finish(&self.runtime, &mut self.broken, client.execute(statement, params))
    }

    pub(crate) fn query<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: Params<'_>,
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.client.as_ref().ok_or(StoreError::Closed)?;
        Self::finish(&self.runtime, &mut self.broken, client.query(statement, params))
    }

    pub(crate) fn query_opt<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: Params<'_>,
    ) -> Result<Option<Row>, StoreError> {
        let client = self.client.as_ref().ok_or(StoreError::Closed)?;
        Self::finish(&self.runtime, &mut self.broken, client.query_opt(statement, params))
    }

    pub(crate) fn query_one<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: Params<'_>,
    ) -> Result<Row, StoreError> {
        let client = self.client.as_ref().ok_or(StoreError::Closed)?;
        Self::finish(&self.runtime, &mut self.broken, client.query_one(statement, params))
    }

    /// Runs `sql` (one statement or several, without parameters).
    pub(crate) fn batch_execute(&mut self, sql: &str) -> Result<(), StoreError> {
        let client = self.client.as_ref().ok_or(StoreError::Closed)?;
        Self::finish(&self.runtime, &mut self.broken, client.batch_execute(sql))
    }

    /// Sends every statement of `statements` (each returning at most one
    /// row) before reading any answer, and answers each in order. The
    /// server runs them one after another, as if sent one by one; in a
    /// transaction, one that fails makes every later one fail too.
    pub(crate) fn pipeline(
        &mut self,
        statements: &[(&Statement, Params<'_>)],
    ) -> Result<Vec<Result<Option<Row>, Error>>, StoreError> {
        let client = self.client.as_ref().ok_or(StoreError::Closed)?;
        // join_all polls the futures in order (also past 30 of them, where
        // it keeps them in a FuturesOrdered), and each puts its statement
        // on the connection's queue when first polled, before it awaits
        // anything: they reach the server in order. A test sends more than
        // 30 writes to two queues and checks their order.
        let all = join_all(statements.iter().map(|(statement, params)| client.query_opt(*statement, params)));
        let all = async { Ok::<_, Error>(all.await) };
        Self::finish(&self.runtime, &mut self.broken, all)
    }
}

impl Drop for Connection {
    /// Closes the connection as a client should: dropping the client makes
    /// the connection's task send the server a goodbye (Terminate) and end,
    /// given a moment to run, so the server logs no lost connection.
    fn drop(&mut self) {
        drop(self.client.take());
        if let Some(task) = self.task.take() {
            if !self.broken {
                let _ = self.runtime.block_on(async { tokio::time::timeout(CLOSE_TIMEOUT, task).await });
            }
        }
    }
}

/// Why a connection could not be made.
#[derive(Debug)]
pub(super) enum ConnectError {
    /// The runtime that drives the connection could not be made.
    Io(std::io::Error),
    Postgres(Error),
    /// The server did not finish the start-up in time.
    TimedOut,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(error) => error.fmt(f),
            Self::Postgres(error) => error.fmt(f),
            Self::TimedOut => f.write_str("timed out"),
        }
    }
}
