//! Statements that survive a transaction-pooling PgBouncer (DESIGN.md, "Behind PgBouncer").
//!
//! sqlx 0.9.0 sends every statement that has parameters as a *named* prepared statement (`sqlx_s_N`),
//! even with its statement cache off (then it also never closes them), and even its unnamed statements
//! are parsed in one round trip and bound in the next, with a Sync in between. A transaction pooler may
//! hand the second half to another server connection, where the name is missing, already taken by
//! another client, or means another client's statement. So here a statement's values are written into
//! the SQL as literals, and the text goes out with the simple query protocol: one message, answered on
//! one server connection, nothing left behind on it. Also here: finding out whether such a pooler is
//! in between (`DATABASE_POOLER=auto`).

use std::{fmt::Write, time::Duration};

use chrono::SecondsFormat;
use sea_orm::{
    DbErr, QueryResult, RuntimeErr, Statement,
    sea_query::Value,
    sqlx::{self, AssertSqlSafe, PgPool},
};

/// Runs a statement that returns rows.
pub async fn query_all(conn: &mut sqlx::PgConnection, stmt: &Statement) -> Result<Vec<QueryResult>, DbErr> {
    let sql = inline(stmt)?;
    let rows = sqlx::raw_sql(AssertSqlSafe(sql)).fetch_all(conn).await.map_err(query_err)?;
    Ok(rows.into_iter().map(QueryResult::from).collect())
}

/// Runs a statement for its effect; the number of rows it touched.
pub async fn execute(conn: &mut sqlx::PgConnection, stmt: &Statement) -> Result<u64, DbErr> {
    let sql = inline(stmt)?;
    let done = sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await.map_err(query_err)?;
    Ok(done.rows_affected())
}

/// True when statements of one client connection can be answered by different server connections,
/// i.e. a transaction pooler sits in between (`DATABASE_POOLER=auto`). On Postgres itself a connection
/// is one backend for its whole life: its `pg_backend_pid()` never changes and no other connection
/// shares it, so this never says true there. Behind a pooler each of the three checks below catches
/// a common server-picking policy; the probe sends only simple-protocol statements.
pub async fn statements_move(pool: &PgPool) -> Result<bool, DbErr> {
    let err = |e: sqlx::Error| DbErr::Conn(RuntimeErr::SqlxError(e.into()));
    let (mut a, mut b) = (pool.acquire().await.map_err(err)?, pool.acquire().await.map_err(err)?);
    for _ in 0..3 {
        let first = backend_pid(&mut a).await.map_err(err)?;
        // Round robin: the next statement goes to another server connection.
        if backend_pid(&mut a).await.map_err(err)? != first {
            return Ok(true);
        }
        // LIFO (PgBouncer's default): the server connection `a` just released goes to the next client.
        sqlx::raw_sql("BEGIN").execute(&mut *b).await.map_err(err)?;
        let held = backend_pid(&mut b).await.map_err(err);
        if held.as_ref().is_ok_and(|&pid| pid == first) {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *b).await;
            return Ok(true);
        }
        // While `b` holds a server connection in its transaction, `a` gets another one, or waits for one
        // (only a pooler makes a connection wait for a backend).
        let again = tokio::time::timeout(Duration::from_secs(1), backend_pid(&mut a)).await;
        sqlx::raw_sql("ROLLBACK").execute(&mut *b).await.map_err(err)?;
        held?;
        let Ok(again) = again else {
            // The abandoned statement left `a` mid-protocol: close it rather than pool it.
            drop(a.detach());
            return Ok(true);
        };
        if again.map_err(err)? != first {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn backend_pid(conn: &mut sqlx::PgConnection) -> Result<i32, sqlx::Error> {
    use sqlx::Row;
    sqlx::raw_sql("SELECT pg_backend_pid()").fetch_one(conn).await?.try_get(0)
}

/// Same shape as SeaORM's own errors, so `db::is_unavailable` and `DbErr::sql_err` (409s) work unchanged.
fn query_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(e.into()))
}

/// The statement's SQL with each placeholder `$n` replaced by its value as a literal. Quoted
/// identifiers and literals already in the SQL are copied as they are (a `$1` inside one is text).
pub fn inline(stmt: &Statement) -> Result<String, DbErr> {
    let values = stmt.values.as_ref().map_or(&[][..], |v| &v.0[..]);
    let sql = stmt.sql.as_str();
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 64);
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        match b[i] {
            quote @ (b'\'' | b'"') => {
                // E'…' is the only form in which a backslash escapes the next character.
                let backslash = quote == b'\'' && i > 0 && matches!(b[i - 1], b'E' | b'e');
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(DbErr::Custom("unterminated quote in SQL".into())),
                        Some(b'\\') if backslash => i += 2,
                        Some(&c) if c == quote && b.get(i + 1) == Some(&quote) => i += 2,
                        Some(&c) if c == quote => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            b'$' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let end = i + 1 + b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                let value = sql[i + 1..end]
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|n| values.get(n))
                    .ok_or_else(|| DbErr::Custom(format!("no value for placeholder {}", &sql[i..end])))?;
                out.push_str(&sql[copied..i]);
                write_literal(&mut out, value)?;
                (i, copied) = (end, end);
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// One value as a SQL literal. Only the types the `records` queries bind are supported; anything else
/// is an error rather than a guess. Literals carry no type: Postgres gives them the type of the column
/// or operand they meet, as it does for untyped parameters.
fn write_literal(out: &mut String, v: &Value) -> Result<(), DbErr> {
    match v {
        Value::Bool(Some(b)) => out.push_str(if *b { "TRUE" } else { "FALSE" }),
        Value::TinyInt(Some(n)) => write_int(out, i64::from(*n)),
        Value::SmallInt(Some(n)) => write_int(out, i64::from(*n)),
        Value::Int(Some(n)) => write_int(out, i64::from(*n)),
        Value::BigInt(Some(n)) => write_int(out, *n),
        Value::TinyUnsigned(Some(n)) => write_int(out, i64::from(*n)),
        Value::SmallUnsigned(Some(n)) => write_int(out, i64::from(*n)),
        Value::Unsigned(Some(n)) => write_int(out, i64::from(*n)),
        Value::BigUnsigned(Some(n)) => {
            let _ = write!(out, "{n}");
        }
        Value::String(Some(s)) => write_string(out, s)?,
        Value::Json(Some(j)) => write_string(out, &j.to_string())?,
        // An explicit offset: the literal means the same instant whatever the session's TimeZone.
        Value::ChronoDateTimeUtc(Some(t)) => {
            out.push('\'');
            out.push_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true));
            out.push('\'');
        }
        Value::Bool(None)
        | Value::TinyInt(None)
        | Value::SmallInt(None)
        | Value::Int(None)
        | Value::BigInt(None)
        | Value::TinyUnsigned(None)
        | Value::SmallUnsigned(None)
        | Value::Unsigned(None)
        | Value::BigUnsigned(None)
        | Value::String(None)
        | Value::Json(None)
        | Value::ChronoDateTimeUtc(None) => out.push_str("NULL"),
        other => return Err(DbErr::Custom(format!("cannot inline a {other:?} value"))),
    }
    Ok(())
}

fn write_int(out: &mut String, n: i64) {
    // Parenthesised when negative, so the minus can never meet a minus before the placeholder (`--`
    // starts a comment).
    let _ = if n < 0 { write!(out, "({n})") } else { write!(out, "{n}") };
}

/// `E'…'`: inside it only `\` and `'` are special, whatever `standard_conforming_strings` says; doubling
/// both leaves no way out of the literal. The connection's encoding is UTF-8 (sqlx sets
/// `client_encoding`), so no multi-byte sequence can swallow a quote.
fn write_string(out: &mut String, s: &str) -> Result<(), DbErr> {
    if s.contains('\0') {
        // Postgres cannot store NUL in text; the API already rejects it (`\u0000` is a 400).
        return Err(DbErr::Custom("NUL in a string value".into()));
    }
    out.reserve(s.len() + 3);
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{DbBackend, sea_query::Values};

    fn stmt(sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(DbBackend::Postgres, sql, Values(values))
    }

    #[test]
    fn placeholders_become_literals_and_quoted_text_is_left_alone() {
        let s = stmt(
            r#"SELECT "a$1", 'it''s $2', E'\'$1' FROM "t" WHERE "id" = $1 AND "k" = $2 LIMIT $10"#,
            (1..=10).map(|n| Value::BigInt(Some(n))).collect(),
        );
        assert_eq!(
            inline(&s).expect("inlined"),
            r#"SELECT "a$1", 'it''s $2', E'\'$1' FROM "t" WHERE "id" = 1 AND "k" = 2 LIMIT 10"#
        );
    }

    #[test]
    fn strings_cannot_leave_their_literal() {
        for (raw, lit) in [
            ("plain", "E'plain'"),
            ("it's", "E'it''s'"),
            (r"back\slash", r"E'back\\slash'"),
            (r"\'; DROP TABLE records; --", r"E'\\''; DROP TABLE records; --'"),
            ("new\nline, $1, \"q\", ünï", "E'new\nline, $1, \"q\", ünï'"),
        ] {
            let s = stmt("SELECT $1", vec![Value::String(Some(raw.into()))]);
            assert_eq!(inline(&s).expect("inlined"), format!("SELECT {lit}"), "{raw}");
        }
        let nul = stmt("SELECT $1", vec![Value::String(Some("a\0b".into()))]);
        assert!(inline(&nul).is_err());
    }

    #[test]
    fn json_times_negative_numbers_and_nulls() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z").expect("time").to_utc();
        let s = stmt(
            "VALUES ($1, $2, $3, $4, $5)",
            vec![
                Value::Json(Some(Box::new(serde_json::json!({"q": "it's \\ \"x\""})))),
                Value::ChronoDateTimeUtc(Some(t)),
                Value::BigInt(Some(-5)),
                Value::String(None),
                Value::Bool(Some(true)),
            ],
        );
        assert_eq!(
            inline(&s).expect("inlined"),
            r#"VALUES (E'{"q":"it''s \\\\ \\"x\\""}', '2026-01-02T03:04:05.123456Z', (-5), NULL, TRUE)"#
        );
    }

    #[test]
    fn a_missing_value_or_an_unknown_type_is_an_error() {
        assert!(inline(&stmt("SELECT $2", vec![Value::BigInt(Some(1))])).is_err());
        assert!(inline(&stmt("SELECT $0", vec![Value::BigInt(Some(1))])).is_err());
        assert!(inline(&stmt("SELECT $1", vec![Value::Double(Some(1.5))])).is_err());
        assert!(inline(&stmt("SELECT 'open", vec![])).is_err());
    }
}
