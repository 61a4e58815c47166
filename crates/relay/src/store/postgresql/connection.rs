//! One connection of the store: tokio-postgres, driven by a runtime of its
//! own on the store's thread (as the `postgres` crate's blocking client
//! does), so that the store can also send several statements before it
//! reads the first answer (pipelining), which the blocking client cannot.
//! bench/pg-clients measures what that is worth on the relay's writes.

use futures_util::future::join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row, Statement, ToStatement};

/// How long connecting may take, if the config does not say.
const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Parameters of one statement.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(crate) struct Connection {
    /// A current-thread runtime: it runs the connection's task only while
    /// a call below waits on it, on the calling thread.
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
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
        runtime.spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { runtime, client })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub(crate) fn prepare(&mut self, sql: &str) -> Result<Statement, Error> {
        self.runtime.block_on(self.client.prepare(sql))
    }

    pub(crate) fn execute<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: Params<'_>,
    ) -> Result<u64, Error> {
        self.runtime.block_on(self.client.execute(statement, params))
    }

    pub(crate) fn query<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: Params<'_>,
    ) -> Result<Vec<Row>, Error> {
        self.runtime.block_on(self.client.query(statement, params))
    }

    pub(crate) fn query_opt<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: Params<'_>,
    ) -> Result<Option<Row>, Error> {
        self.runtime.block_on(self.client.query_opt(statement, params))
    }

    pub(crate) fn query_one<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: Params<'_>,
    ) -> Result<Row, Error> {
        self.runtime.block_on(self.client.query_one(statement, params))
    }

    /// Runs `sql` (one statement or several, without parameters).
    pub(crate) fn batch_execute(&mut self, sql: &str) -> Result<(), Error> {
        self.runtime.block_on(self.client.batch_execute(sql))
    }

    /// Sends every statement of `statements` (each returning at most one
    /// row) before reading any answer, and answers each in order. The
    /// server runs them one after another, as if sent one by one; in a
    /// transaction, one that fails makes every later one fail too.
    pub(crate) fn pipeline(
        &mut self,
        statements: &[(&Statement, Params<'_>)],
    ) -> Vec<Result<Option<Row>, Error>> {
        let client = &self.client;
        // join_all polls the futures in order (also past 30 of them, where
        // it keeps them in a FuturesOrdered), and each puts its statement
        // on the connection's queue when first polled, before it awaits
        // anything: they reach the server in order. A test sends more than
        // 30 writes to two queues and checks their order.
        self.runtime.block_on(join_all(
            statements.iter().map(|(statement, params)| client.query_opt(*statement, params)),
        ))
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
