//! One way to issue a write's statements on either backend.
//!
//! Writes are written once against [`Tx`]: `execute` and `query` with `$N` placeholders and
//! typed [`Param`]s, rows back as [`Row`]s. Two connections implement it:
//!
//! - SQLite: a `rusqlite` connection owned by the writer's own thread. Every statement of a
//!   batch runs there, prepared once and cached, without leaving the thread. (Through sqlx,
//!   each statement was a round trip to sqlx's per-connection worker thread and back: two
//!   thread wake-ups per statement, which was a quarter of the node's CPU time under load.)
//! - PostgreSQL: a sqlx connection, on tokio as everywhere else.
//!
//! Reads keep using the sqlx pool; [`Row::from_any`] turns their rows into the same [`Row`]
//! where a decoder is shared with writes.

use super::Backend;
use crate::run::RunRecord;
use sqlx::{AnyConnection, Row as _, ValueRef as _};
use std::sync::Arc;

/// A statement parameter, typed even when null (PostgreSQL declares parameter types).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    /// An integer (booleans and times are integers).
    Int(Option<i64>),
    /// Text (JSON is text).
    Text(Option<String>),
}

impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Param::Int(Some(v))
    }
}

impl From<Option<i64>> for Param {
    fn from(v: Option<i64>) -> Self {
        Param::Int(v)
    }
}

impl From<String> for Param {
    fn from(v: String) -> Self {
        Param::Text(Some(v))
    }
}

impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Param::Text(Some(v.to_string()))
    }
}

impl From<&String> for Param {
    fn from(v: &String) -> Self {
        Param::Text(Some(v.clone()))
    }
}

impl From<Option<String>> for Param {
    fn from(v: Option<String>) -> Self {
        Param::Text(v)
    }
}

impl From<&Option<String>> for Param {
    fn from(v: &Option<String>) -> Self {
        Param::Text(v.clone())
    }
}

/// The parameters of a statement, each converted with `Param::from`.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        vec![$($crate::store::db::Param::from($p)),*]
    };
}
pub(super) use params;

/// A value read back.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// A row read back: column names and values.
#[derive(Debug, Clone)]
pub(super) struct Row {
    names: Arc<[String]>,
    values: Vec<Val>,
}

/// A column, by position or by name.
pub(super) trait Col: Copy + std::fmt::Display {
    fn index(self, names: &[String]) -> Option<usize>;
}

impl Col for usize {
    fn index(self, names: &[String]) -> Option<usize> {
        (self < names.len()).then_some(self)
    }
}

impl Col for &str {
    fn index(self, names: &[String]) -> Option<usize> {
        names.iter().position(|n| n == self)
    }
}

/// A Rust type a [`Val`] decodes into.
pub(super) trait FromVal: Sized {
    fn from_val(v: &Val) -> Option<Self>;
}

impl FromVal for i64 {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl FromVal for String {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl<T: FromVal> FromVal for Option<T> {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Null => Some(None),
            v => T::from_val(v).map(Some),
        }
    }
}

impl Row {
    /// The value of `col` as `T`; an error names the column when it is missing or of another
    /// type.
    pub(super) fn get<T: FromVal>(&self, col: impl Col) -> Result<T, DbError> {
        let i = col
            .index(&self.names)
            .ok_or_else(|| DbError::Failed(format!("no column `{col}` in the result")))?;
        T::from_val(&self.values[i]).ok_or_else(|| {
            DbError::Failed(format!(
                "column `{col}` holds {:?}, not the type expected",
                self.values[i]
            ))
        })
    }

    /// The same row from a sqlx read.
    pub(super) fn from_any(row: &sqlx::any::AnyRow) -> Result<Row, DbError> {
        use sqlx::Column as _;
        use sqlx::any::AnyTypeInfoKind as K;
        let names: Arc<[String]> = row.columns().iter().map(|c| c.name().to_string()).collect();
        let mut values = Vec::with_capacity(names.len());
        for i in 0..names.len() {
            let raw = row.try_get_raw(i)?;
            let kind = if raw.is_null() {
                K::Null
            } else {
                raw.type_info().kind()
            };
            values.push(match kind {
                K::Null => Val::Null,
                K::Bool => Val::Int(i64::from(row.try_get::<bool, _>(i)?)),
                K::SmallInt | K::Integer | K::BigInt => Val::Int(row.try_get::<i64, _>(i)?),
                K::Real | K::Double => Val::Real(row.try_get::<f64, _>(i)?),
                K::Text => Val::Text(row.try_get::<String, _>(i)?),
                K::Blob => {
                    return Err(DbError::Failed(format!(
                        "column `{}` is a blob, which the store never writes",
                        names[i]
                    )));
                }
            });
        }
        Ok(Row { names, values })
    }
}

/// A statement that failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum DbError {
    /// The connection is gone (a PostgreSQL restart, a network cut): reconnect and retry.
    #[error("{0}")]
    Lost(String),
    /// The statement failed (a constraint, bad SQL, a full disk).
    #[error("{0}")]
    Failed(String),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        if connection_lost(&e) {
            DbError::Lost(e.to_string())
        } else {
            DbError::Failed(e.to_string())
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Failed(e.to_string())
    }
}

/// Whether `e` means the connection is gone (rather than a bad statement).
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL: connection exceptions (08…), operator intervention (57P…, e.g. the
        // server shutting down), and a session ended for idling in a transaction (25P03).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "25P03"),
        _ => false,
    }
}

/// A connection a write issues its statements on.
#[async_trait::async_trait]
pub(super) trait Tx: Send {
    /// Which database this is.
    fn backend(&self) -> Backend;
    /// Run a statement; the rows it changed.
    async fn execute(&mut self, sql: &str, params: Vec<Param>) -> Result<u64, DbError>;
    /// Run a statement; the rows it returned.
    async fn query(&mut self, sql: &str, params: Vec<Param>) -> Result<Vec<Row>, DbError>;

    /// Keep a run this connection has just recorded as queued, so that a claim in a later
    /// write on it can hand the run to a worker without reading it back (see
    /// [`Admitted`]). Only a connection every claim goes through keeps them: SQLite's.
    fn remember(&mut self, _run: RunRecord) {}

    /// A run kept by [`Tx::remember`], as recorded, forgotten as it is handed out.
    fn recall(&mut self, _id: &str) -> Option<RunRecord> {
        None
    }
}

/// Runs the SQLite writer recorded as queued, by id, until a claim takes them.
///
/// On SQLite every admission and every claim is a write of the one writer, so a run the
/// writer admitted a moment earlier needs no reading back when it is claimed: the record
/// it wrote is the record, less what the claim sets. Only a first claim uses it (a run put
/// back in the queue has changed since); a run cancelled while queued is dropped by the
/// write that cancels it, and one claimed elsewhere (another process on the same file) is
/// dropped once a run admitted a minute after it arrives. At most [`Admitted::CAPACITY`]
/// runs: beyond that, a claim reads the row, as without it. A write that rolls back may leave
/// a run that was never stored: it is never claimed, and ages out the same way.
#[derive(Default)]
pub(super) struct Admitted {
    runs: std::collections::BTreeMap<String, RunRecord>,
}

impl Admitted {
    /// Most runs kept (each shares its trigger and parameters with the run's other copies).
    pub(super) const CAPACITY: usize = 2048;
    /// Kept runs older than this (ms since queued) make room for new ones.
    pub(super) const STALE_MS: i64 = 60_000;

    pub(super) fn insert(&mut self, run: RunRecord) {
        // Ids sort by time: the first is the oldest. Runs nobody claimed for a minute (taken
        // by another process, or never stored) make room.
        while self
            .runs
            .first_key_value()
            .is_some_and(|(_, oldest)| run.queued_at - oldest.queued_at > Self::STALE_MS)
        {
            self.runs.pop_first();
        }
        if self.runs.len() < Self::CAPACITY {
            self.runs.insert(run.id.clone(), run);
        }
    }

    pub(super) fn take(&mut self, id: &str) -> Option<RunRecord> {
        self.runs.remove(id)
    }
}

fn bind_any<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    params: Vec<Param>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for p in params {
        q = match p {
            Param::Int(v) => q.bind(v),
            Param::Text(v) => q.bind(v),
        };
    }
    q
}

#[async_trait::async_trait]
impl Tx for AnyConnection {
    fn backend(&self) -> Backend {
        if self.backend_name().eq_ignore_ascii_case("sqlite") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }

    async fn execute(&mut self, sql: &str, params: Vec<Param>) -> Result<u64, DbError> {
        Ok(bind_any(sqlx::query(sql), params)
            .execute(&mut *self)
            .await?
            .rows_affected())
    }

    async fn query(&mut self, sql: &str, params: Vec<Param>) -> Result<Vec<Row>, DbError> {
        bind_any(sqlx::query(sql), params)
            .fetch_all(&mut *self)
            .await?
            .iter()
            .map(Row::from_any)
            .collect()
    }
}

/// The SQLite write connection: statements run on the calling thread (the writer's own).
pub(super) struct Sqlite {
    conn: rusqlite::Connection,
    admitted: Admitted,
}

impl Sqlite {
    /// Open the database file at `path` for writing, set up like the read connections.
    pub(super) fn open(path: &str, sync: &str) -> Result<Sqlite, DbError> {
        let conn = rusqlite::Connection::open(path)?;
        for pragma in super::sqlite_pragmas(sync) {
            // Some answer with a row (the journal mode, the timeout), some with none.
            conn.prepare(&pragma)?.query([])?.next()?;
        }
        // Every statement a write issues, prepared once (log inserts vary in size).
        conn.set_prepared_statement_cache_capacity(256);
        Ok(Sqlite {
            conn,
            admitted: Admitted::default(),
        })
    }

    fn prepare(
        &self,
        sql: &str,
        params: &[Param],
    ) -> Result<rusqlite::CachedStatement<'_>, DbError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        for (i, p) in params.iter().enumerate() {
            match p {
                Param::Int(v) => stmt.raw_bind_parameter(i + 1, v)?,
                Param::Text(v) => stmt.raw_bind_parameter(i + 1, v)?,
            }
        }
        Ok(stmt)
    }
}

#[async_trait::async_trait]
impl Tx for Sqlite {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn remember(&mut self, run: RunRecord) {
        self.admitted.insert(run);
    }

    fn recall(&mut self, id: &str) -> Option<RunRecord> {
        self.admitted.take(id)
    }

    async fn execute(&mut self, sql: &str, params: Vec<Param>) -> Result<u64, DbError> {
        let mut stmt = self.prepare(sql, &params)?;
        let n = stmt.raw_execute()?;
        Ok(n as u64)
    }

    async fn query(&mut self, sql: &str, params: Vec<Param>) -> Result<Vec<Row>, DbError> {
        let mut stmt = self.prepare(sql, &params)?;
        let names: Arc<[String]> = stmt.column_names().iter().map(|n| n.to_string()).collect();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut values = Vec::with_capacity(names.len());
            for i in 0..names.len() {
                values.push(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => Val::Null,
                    rusqlite::types::ValueRef::Integer(v) => Val::Int(v),
                    rusqlite::types::ValueRef::Real(v) => Val::Real(v),
                    rusqlite::types::ValueRef::Text(t) => {
                        Val::Text(String::from_utf8_lossy(t).into_owned())
                    }
                    rusqlite::types::ValueRef::Blob(_) => {
                        return Err(DbError::Failed(format!(
                            "column `{}` is a blob, which the store never writes",
                            names[i]
                        )));
                    }
                });
            }
            out.push(Row {
                names: names.clone(),
                values,
            });
        }
        Ok(out)
    }
}
