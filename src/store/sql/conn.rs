//! [`SqlConn`]: the few typed queries the generic SQL store issues itself, implemented once for
//! every sqlx connection type whose database can encode and decode the values involved
//! (PostgreSQL and MySQL/MariaDB).
//!
//! The long list of sqlx trait bounds lives on the one blanket `impl` below, so that the generic
//! store needs only `Connection: SqlConn` and the dialects stay free of them.

use futures::future::BoxFuture;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use crate::store::clock::WallClock;
use crate::store::StoredDeadLetter;

/// One column of a table, as the database's catalogue describes it.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    /// Lower-case column name.
    pub name: String,
    /// The declared type (PostgreSQL: `data_type`; MySQL: `column_type`, e.g. `varchar(15)`).
    pub ty: String,
    /// Character length of a `VARCHAR`, if it is one.
    pub max_len: Option<i64>,
    /// Whether the column accepts NULL.
    pub nullable: bool,
    /// Its comment, where an `ALTER` must restate it to keep it (MySQL); empty is `None`.
    pub comment: Option<String>,
}

/// One non-primary index of a table.
#[derive(Debug, Clone)]
pub struct IndexInfo {
    /// The index name.
    pub name: String,
    /// Its columns in key order, lower case, comma-separated.
    pub columns: String,
    /// Whether it is unique.
    pub unique: bool,
    /// The constraint backing it, where the database has such a thing (PostgreSQL).
    pub constraint: Option<String>,
    /// Its comment (MySQL); empty is `None`.
    pub comment: Option<String>,
}

/// A row of `(text, text, count)`, as [`SqlConn::text_pair_counts`] returns them.
pub type TextPairCount = (String, String, i64);

/// The generic store's queries on one connection.
pub trait SqlConn: Send {
    /// Runs `sql` without parameters (DDL, session settings, several statements).
    fn run<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, Result<(), sqlx::Error>>;

    /// Rows of `(text, count)`.
    fn text_counts<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, i64)>, sqlx::Error>>;

    /// The first column of every row, as text.
    fn texts<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, Result<Vec<String>, sqlx::Error>>;

    /// Rows of `(text, text, count)`.
    fn text_pair_counts<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> BoxFuture<'a, Result<Vec<TextPairCount>, sqlx::Error>>;

    /// Executes `sql` with the text and number parameters given, in order; returns rows affected.
    fn execute_with<'a>(
        &'a mut self,
        sql: &'a str,
        texts: &'a [&'a str],
        numbers: &'a [i64],
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>>;

    /// A page of dead letters: `sql` binds `before` and `limit` and returns `id, source, reason,
    /// detail, raw, rejected_at` (`rejected_at` as text of `clock`'s wall-clock).
    fn dead_letters<'a>(
        &'a mut self,
        sql: &'a str,
        before: i64,
        limit: i64,
        clock: WallClock,
    ) -> BoxFuture<'a, Result<Vec<StoredDeadLetter>, sqlx::Error>>;

    /// The columns of `table`: `sql` binds the table name and returns `name, type, max length,
    /// nullable ('YES'/'NO'), comment`.
    fn columns<'a>(
        &'a mut self,
        sql: &'a str,
        table: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ColumnInfo>, sqlx::Error>>;

    /// The indexes of `table`: `sql` binds the table name and returns `name, columns, unique
    /// (1/0), constraint, comment`.
    fn indexes<'a>(
        &'a mut self,
        sql: &'a str,
        table: &'a str,
    ) -> BoxFuture<'a, Result<Vec<IndexInfo>, sqlx::Error>>;
}

impl<C, DB> SqlConn for C
where
    C: sqlx::Connection<Database = DB>,
    DB: Database,
    for<'c> &'c mut C: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Decode<'r, DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> Option<i64>: Decode<'r, DB>,
    for<'q> i64: Encode<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<<DB as Database>::Row>,
    <DB as Database>::QueryResult: Affected,
{
    fn run<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move { self.execute(sql).await.map(|_| ()) })
    }

    fn text_counts<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, i64)>, sqlx::Error>> {
        Box::pin(async move {
            sqlx::query(sql)
                .fetch_all(self)
                .await?
                .iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
                .collect()
        })
    }

    fn texts<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, Result<Vec<String>, sqlx::Error>> {
        Box::pin(async move {
            sqlx::query(sql)
                .fetch_all(self)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect()
        })
    }

    fn text_pair_counts<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> BoxFuture<'a, Result<Vec<TextPairCount>, sqlx::Error>> {
        Box::pin(async move {
            sqlx::query(sql)
                .fetch_all(self)
                .await?
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get::<String, _>(0)?,
                        r.try_get::<String, _>(1)?,
                        r.try_get::<i64, _>(2)?,
                    ))
                })
                .collect()
        })
    }

    fn execute_with<'a>(
        &'a mut self,
        sql: &'a str,
        texts: &'a [&'a str],
        numbers: &'a [i64],
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
        Box::pin(async move {
            let mut q = sqlx::query(sql);
            for t in texts {
                q = q.bind(*t);
            }
            for n in numbers {
                q = q.bind(*n);
            }
            let done = q.execute(self).await?;
            Ok(done.affected())
        })
    }

    fn dead_letters<'a>(
        &'a mut self,
        sql: &'a str,
        before: i64,
        limit: i64,
        clock: WallClock,
    ) -> BoxFuture<'a, Result<Vec<StoredDeadLetter>, sqlx::Error>> {
        Box::pin(async move {
            sqlx::query(sql)
                .bind(before)
                .bind(limit)
                .fetch_all(self)
                .await?
                .iter()
                .map(|r| {
                    let reason: String = r.try_get(2)?;
                    let at: Option<String> = r.try_get(5)?;
                    Ok(StoredDeadLetter::from_columns(
                        r.try_get(0)?,
                        r.try_get(1)?,
                        &reason,
                        r.try_get(3)?,
                        r.try_get(4)?,
                        at.and_then(|t| clock.parse(&t)),
                    ))
                })
                .collect()
        })
    }

    fn columns<'a>(
        &'a mut self,
        sql: &'a str,
        table: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ColumnInfo>, sqlx::Error>> {
        Box::pin(async move {
            sqlx::query(sql)
                .bind(table)
                .fetch_all(self)
                .await?
                .iter()
                .map(|r| {
                    Ok(ColumnInfo {
                        name: r.try_get::<String, _>(0)?.to_ascii_lowercase(),
                        ty: r.try_get(1)?,
                        max_len: r.try_get(2)?,
                        nullable: r.try_get::<String, _>(3)? == "YES",
                        comment: r.try_get::<Option<String>, _>(4)?.filter(|c| !c.is_empty()),
                    })
                })
                .collect()
        })
    }

    fn indexes<'a>(
        &'a mut self,
        sql: &'a str,
        table: &'a str,
    ) -> BoxFuture<'a, Result<Vec<IndexInfo>, sqlx::Error>> {
        Box::pin(async move {
            sqlx::query(sql)
                .bind(table)
                .fetch_all(self)
                .await?
                .iter()
                .map(|r| {
                    Ok(IndexInfo {
                        name: r.try_get(0)?,
                        columns: r.try_get::<String, _>(1)?.to_ascii_lowercase(),
                        unique: r.try_get::<i64, _>(2)? != 0,
                        constraint: r.try_get(3)?,
                        comment: r.try_get::<Option<String>, _>(4)?.filter(|c| !c.is_empty()),
                    })
                })
                .collect()
        })
    }
}

/// Rows a statement changed, for the database result types that report it.
pub trait Affected {
    /// Rows inserted, updated or deleted.
    fn affected(&self) -> u64;
}

impl Affected for sqlx::postgres::PgQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl Affected for sqlx::mysql::MySqlQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}
