//! The one door to the database for the statements both backends share.
//!
//! A statement is its SQL text and its arguments ([`Stmt`], [`Arg`]); it runs on a connection
//! of either backend ([`Conn`], from a [`Tx`] or a [`Pooled`] connection), and its rows come back
//! as types that derive `sqlx::FromRow` ([`Record`]). What differs between the backends' SQL is a
//! [`Dialect`] value: placeholders of generated lists, row locks, bind limits. Hand-written
//! placeholders are `$N`, which both drivers accept.
//!
//! The SQL is plain text checked at run time, by the tests of both backends (`store_api` and the
//! HTTP tests run every statement on SQLite and on PostgreSQL), not at compile time: sqlx's
//! `query!` macros would need a database of each kind at build time.

use std::borrow::Cow;

use sqlx::database::HasStatementCache;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{
    ColumnIndex, Encode, Executor as _, FromRow, Postgres, Row, Sqlite, Type, ValueRef as _,
};

/// A type that rows of both backends map to: every `#[derive(sqlx::FromRow)]` type, and
/// tuples of column values such as `(i64,)`.
pub trait Record:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> Record for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// Where the backends' SQL differs, apart from the statements each backend keeps to itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Statements with more rows than this are not kept in sqlx's per-connection statement cache
/// (each row count is a distinct statement; big ones would only evict the hot small ones).
const CACHE_MAX_ROWS: usize = 64;

impl Dialect {
    /// Most bind parameters one statement may carry: SQLite allows 32,766, PostgreSQL's
    /// protocol 65,535.
    pub fn max_binds(self) -> usize {
        match self {
            Dialect::Sqlite => 32_000,
            Dialect::Postgres => 65_000,
        }
    }

    /// Appended to a `SELECT` that locks the rows it reads until commit. SQLite's single writer
    /// connection already serializes every write transaction.
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// `rows` cut into pieces of as many rows as one statement may bind (`N` arguments a row).
    pub fn chunks<T, const N: usize>(self, rows: &[[T; N]]) -> std::slice::Chunks<'_, [T; N]> {
        rows.chunks((self.max_binds() / N.max(1)).max(1))
    }
}

/// One argument of a statement. Borrowed: building a statement copies no text or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
    Bytes(Option<&'a [u8]>),
    Bool(bool),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::Text(v.as_deref())
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Bytes(Some(v))
    }
}

impl<'a> From<&'a Vec<u8>> for Arg<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Arg::Bytes(Some(v))
    }
}

/// A statement: SQL text and its arguments, in order.
#[derive(Debug, Clone)]
pub struct Stmt<'a> {
    sql: Cow<'a, str>,
    args: Vec<Arg<'a>>,
    persistent: bool,
}

impl<'a> Stmt<'a> {
    pub fn new(sql: impl Into<Cow<'a, str>>) -> Self {
        Stmt {
            sql: sql.into(),
            args: Vec::new(),
            persistent: true,
        }
    }

    pub fn bind(mut self, arg: impl Into<Arg<'a>>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// How many arguments are bound so far (the number of the last `$N`).
    pub fn arg_count(&self) -> usize {
        self.args.len()
    }

    /// Appends SQL text.
    pub fn push(mut self, sql: &str) -> Self {
        self.sql.to_mut().push_str(sql);
        self
    }

    /// Appends the placeholder of one more argument (`$N`) and binds it.
    pub fn push_bind(mut self, arg: impl Into<Arg<'a>>) -> Self {
        self.args.push(arg.into());
        let n = self.args.len();
        self.sql.to_mut().push_str(&format!("${n}"));
        self
    }

    /// Appends `(..),(..)`, one group of placeholders per row, and binds the rows' arguments.
    /// The row width is the arrays' length, so no column count is kept by hand. Cut `rows`
    /// with [`Dialect::chunks`].
    pub fn values<const N: usize>(mut self, dialect: Dialect, rows: &[[Arg<'a>; N]]) -> Self {
        self.sql.to_mut().reserve(rows.len() * (N * 7 + 3));
        for (r, row) in rows.iter().enumerate() {
            self.sql.to_mut().push_str(if r == 0 { "(" } else { ",(" });
            self.placeholders(dialect, row);
            self.sql.to_mut().push(')');
        }
        self.persistent = rows.len() <= CACHE_MAX_ROWS;
        self
    }

    /// Appends `a,b,..` for an `IN (..)` list and binds `args`.
    pub fn list(mut self, dialect: Dialect, args: &[Arg<'a>]) -> Self {
        self.placeholders(dialect, args);
        self.persistent = args.len() <= CACHE_MAX_ROWS;
        self
    }

    /// Placeholders of generated lists are `$N` on PostgreSQL and anonymous `?` on SQLite
    /// (`sqlite3_bind_parameter_name`, which sqlx calls for every parameter, scans the
    /// statement's named parameters: quadratic for thousands of them; anonymous ones are not in
    /// that list). So on SQLite a statement with a generated list has no `$N` of its own.
    fn placeholders(&mut self, dialect: Dialect, args: &[Arg<'a>]) {
        let sql = self.sql.to_mut();
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            self.args.push(*a);
            match dialect {
                Dialect::Sqlite => sql.push('?'),
                Dialect::Postgres => {
                    sql.push('$');
                    sql.push_str(&self.args.len().to_string());
                }
            }
        }
    }

    /// The statement for backend `DB`, its arguments bound.
    fn query<'q, DB: sqlx::Database + HasStatementCache>(
        &'q self,
    ) -> Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
    where
        Option<i64>: Encode<'q, DB> + Type<DB>,
        Option<&'q str>: Encode<'q, DB> + Type<DB>,
        Option<&'q [u8]>: Encode<'q, DB> + Type<DB>,
        bool: Encode<'q, DB> + Type<DB>,
    {
        let mut q = sqlx::query(&self.sql).persistent(self.persistent);
        for a in &self.args {
            q = match *a {
                Arg::Int(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
                Arg::Bytes(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
            };
        }
        q
    }

    /// Runs the statement; the number of rows it changed.
    pub async fn execute<'c>(&self, on: impl Into<Conn<'c>>) -> Result<u64, sqlx::Error> {
        Ok(match on.into() {
            Conn::Sqlite(c) => c.execute(self.query::<Sqlite>()).await?.rows_affected(),
            Conn::Postgres(c) => c.execute(self.query::<Postgres>()).await?.rows_affected(),
        })
    }

    pub async fn fetch_all<'c, T: Record>(
        &self,
        on: impl Into<Conn<'c>>,
    ) -> Result<Vec<T>, sqlx::Error> {
        match on.into() {
            Conn::Sqlite(c) => records(c.fetch_all(self.query::<Sqlite>()).await?),
            Conn::Postgres(c) => records(c.fetch_all(self.query::<Postgres>()).await?),
        }
    }

    pub async fn fetch_optional<'c, T: Record>(
        &self,
        on: impl Into<Conn<'c>>,
    ) -> Result<Option<T>, sqlx::Error> {
        let first = match on.into() {
            Conn::Sqlite(c) => records(c.fetch_optional(self.query::<Sqlite>()).await?),
            Conn::Postgres(c) => records(c.fetch_optional(self.query::<Postgres>()).await?),
        };
        Ok(first?.pop())
    }

    pub async fn fetch_one<'c, T: Record>(
        &self,
        on: impl Into<Conn<'c>>,
    ) -> Result<T, sqlx::Error> {
        self.fetch_optional(on)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

/// The rows as `T`s.
fn records<R: Row, T: for<'r> FromRow<'r, R>>(
    rows: impl IntoIterator<Item = R>,
) -> Result<Vec<T>, sqlx::Error> {
    rows.into_iter().map(|r| T::from_row(&r)).collect()
}

/// `$start,...,$start+n-1`: numbered placeholders for a list inside a statement whose other
/// placeholders are numbered too.
pub fn numbered(n: usize, start: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A part of a row that an outer join may have left empty (all its columns NULL): None then.
pub struct Maybe<T>(pub Option<T>);

/// The column of a row part that is never NULL when the part is there.
pub trait KeyColumn {
    const KEY: &'static str;
}

impl<'r, R: Row, T> FromRow<'r, R> for Maybe<T>
where
    T: FromRow<'r, R> + KeyColumn,
    &'r str: ColumnIndex<R>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        if row.try_get_raw(T::KEY)?.is_null() {
            return Ok(Maybe(None));
        }
        T::from_row(row).map(|t| Maybe(Some(t)))
    }
}

/// A connection of either backend, borrowed for one statement.
pub enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

/// A write transaction. Rolled back when dropped without [`Tx::commit`].
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

/// What [`Tx::lock`] serializes across processes.
#[derive(Debug, Clone, Copy)]
pub enum Lock {
    /// Feed appends: max(seq)+1 is gap-free and seq order is commit order.
    Feed,
    /// The first start's admin token.
    Bootstrap,
    /// Changes of which gateway relays which sensors.
    Attachments,
    /// Appends to the events for applications: seq order is commit order.
    AppEvents,
}

impl Tx {
    pub fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(_) => Dialect::Sqlite,
            Tx::Postgres(_) => Dialect::Postgres,
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
    }

    /// Held until commit. PostgreSQL: a transaction-scoped advisory lock (several processes
    /// share the database). SQLite: nothing to do, the write transaction (`BEGIN IMMEDIATE`)
    /// already holds the database's one write lock.
    pub async fn lock(&mut self, lock: Lock) -> Result<(), sqlx::Error> {
        /// Advisory lock keys (arbitrary constants, "devid" + purpose).
        const FEED: i64 = 0x6465_7669_6401;
        const BOOTSTRAP: i64 = 0x6465_7669_6402;
        const ATTACHMENTS: i64 = 0x6465_7669_6403;
        const APP_EVENTS: i64 = 0x6465_7669_6404;
        if self.dialect() == Dialect::Postgres {
            let key = match lock {
                Lock::Feed => FEED,
                Lock::Bootstrap => BOOTSTRAP,
                Lock::Attachments => ATTACHMENTS,
                Lock::AppEvents => APP_EVENTS,
            };
            Stmt::new("SELECT pg_advisory_xact_lock($1)")
                .bind(key)
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }

    /// PostgreSQL: NOTIFY `channel` with `payload`, delivered on commit. SQLite has one
    /// process: the server broadcasts in-process.
    pub async fn notify(&mut self, channel: &str, payload: &str) -> Result<(), sqlx::Error> {
        if self.dialect() == Dialect::Postgres {
            Stmt::new("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }
}

impl<'c> From<&'c mut Tx> for Conn<'c> {
    fn from(tx: &'c mut Tx) -> Self {
        match tx {
            Tx::Sqlite(t) => Conn::Sqlite(t),
            Tx::Postgres(t) => Conn::Postgres(t),
        }
    }
}

/// A connection taken from a pool, returned to it when dropped.
pub enum Pooled {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl<'c> From<&'c mut Pooled> for Conn<'c> {
    fn from(c: &'c mut Pooled) -> Self {
        match c {
            Pooled::Sqlite(c) => Conn::Sqlite(c),
            Pooled::Postgres(c) => Conn::Postgres(c),
        }
    }
}

/// The pools of either backend.
pub enum Pools {
    /// One writer connection (SQLite allows one writer at a time anyway; one connection avoids
    /// SQLITE_BUSY between our own connections) and a small read pool.
    Sqlite { write: SqlitePool, read: SqlitePool },
    /// One pool; `url` for the feed listener's own connection.
    Postgres { pool: PgPool, url: String },
}

impl Pools {
    pub fn dialect(&self) -> Dialect {
        match self {
            Pools::Sqlite { .. } => Dialect::Sqlite,
            Pools::Postgres { .. } => Dialect::Postgres,
        }
    }

    /// A connection for reading.
    pub async fn read(&self) -> Result<Pooled, sqlx::Error> {
        Ok(match self {
            Pools::Sqlite { read, .. } => Pooled::Sqlite(read.acquire().await?),
            Pools::Postgres { pool, .. } => Pooled::Postgres(pool.acquire().await?),
        })
    }

    /// A connection for writing outside a transaction (one statement, committed on its own).
    pub async fn write(&self) -> Result<Pooled, sqlx::Error> {
        Ok(match self {
            Pools::Sqlite { write, .. } => Pooled::Sqlite(write.acquire().await?),
            Pools::Postgres { pool, .. } => Pooled::Postgres(pool.acquire().await?),
        })
    }

    /// A write transaction. On SQLite `BEGIN IMMEDIATE` takes the write lock up front, so
    /// another process sharing the file waits (busy_timeout) instead of failing when a read
    /// transaction tries to upgrade.
    pub async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Pools::Sqlite { write, .. } => Tx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?),
            Pools::Postgres { pool, .. } => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Closes the pools (waits for connections in use to come back).
    pub async fn close(&self) {
        match self {
            Pools::Sqlite { write, read } => {
                write.close().await;
                read.close().await;
            }
            Pools::Postgres { pool, .. } => pool.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_placeholders_are_numbered_on_postgres_and_anonymous_on_sqlite() {
        let rows = [[Arg::from(1), Arg::from(2)], [Arg::from(3), Arg::from(4)]];
        let pg = Stmt::new("VALUES ")
            .bind(0)
            .values(Dialect::Postgres, &rows);
        assert_eq!(pg.sql, "VALUES ($2,$3),($4,$5)");
        assert_eq!(pg.args.len(), 5);
        let lite = Stmt::new("VALUES ").values(Dialect::Sqlite, &rows);
        assert_eq!(lite.sql, "VALUES (?,?),(?,?)");
        let list = Stmt::new("x IN (")
            .list(
                Dialect::Postgres,
                &[Arg::from(1), Arg::from(2), Arg::from(3)],
            )
            .push(")");
        assert_eq!(list.sql, "x IN ($1,$2,$3)");
        let list = Stmt::new("x IN (").list(Dialect::Sqlite, &[Arg::from(1), Arg::from(2)]);
        assert_eq!(list.sql, "x IN (?,?");
        assert_eq!(numbered(2, 5), "$5,$6");
    }

    #[test]
    fn chunks_fit_the_bind_limit() {
        let rows = vec![[Arg::from(1); 7]; 10_000];
        let sizes: Vec<usize> = Dialect::Sqlite.chunks(&rows).map(<[_]>::len).collect();
        assert!(sizes.iter().all(|n| n * 7 <= Dialect::Sqlite.max_binds()));
        assert_eq!(sizes.iter().sum::<usize>(), 10_000);
    }
}
