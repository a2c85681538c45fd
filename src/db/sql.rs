//! The record statements' SQL, rendered once per backend by SeaORM from the entity (`record`), and
//! the order of each statement's values. Operations send this text with their values as placeholders;
//! nothing renders SQL per request but a grouped insert, whose row count varies.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, DbBackend, EntityTrait, Iterable, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    sea_query::{Expr, OnConflict, Query, ReturningClause},
};
use serde_json::Value;

use super::record::{ActiveModel, Column, Entity};

/// The statements of one backend; each line says its placeholders, in order.
pub(super) struct Sql {
    /// id, limit (always 1)
    pub get: Arc<str>,
    /// after (id >), limit
    pub list: Arc<str>,
    /// after (id >), key, limit
    pub list_by_key: Arc<str>,
    /// key, value, created_at, updated_at; returns the row
    pub insert: Arc<str>,
    /// value, updated_at, id; returns the row
    pub update: Arc<str>,
    /// id
    pub delete: Arc<str>,
    backend: DbBackend,
}

/// A row to render a statement with: SeaORM needs values, the text does not depend on them.
fn row(key: &str, value: &Value, at: DateTime<Utc>) -> ActiveModel {
    ActiveModel {
        key: Set(key.to_owned()),
        value: Set(value.clone()),
        created_at: Set(at),
        updated_at: Set(at),
        ..Default::default()
    }
}

/// The entity's columns, by name: rows decode by name, and `*` would follow the table instead.
fn returning() -> ReturningClause {
    Query::returning().columns(Column::iter())
}

impl Sql {
    pub fn new(backend: DbBackend) -> Self {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let list = Entity::find().filter(Column::Id.gt(0i64)).order_by_asc(Column::Id).limit(1);
        let list_by_key =
            Entity::find().filter(Column::Id.gt(0i64)).filter(Column::Key.eq("")).order_by_asc(Column::Id).limit(1);
        let mut insert = Entity::insert(row("", &Value::Null, at));
        insert.query().returning(returning());
        let mut update = Entity::update_many()
            .col_expr(Column::Value, Expr::value(sea_orm::Value::Json(Some(Box::new(Value::Null)))))
            .col_expr(Column::UpdatedAt, Expr::value(at))
            .filter(Column::Id.eq(0i64));
        QueryTrait::query(&mut update).returning(returning());
        let text = |s: sea_orm::Statement| Arc::<str>::from(s.sql);
        Self {
            get: text(Entity::find_by_id(0i64).limit(1).build(backend)),
            list: text(list.build(backend)),
            list_by_key: text(list_by_key.build(backend)),
            insert: text(insert.build(backend)),
            update: text(update.build(backend)),
            delete: text(Entity::delete_by_id(0i64).build(backend)),
            backend,
        }
    }

    /// `rows` rows of (key, value, created_at, updated_at), `ON CONFLICT (key) DO NOTHING`, returning
    /// the rows that went in (a grouped POST: `batch`).
    pub fn insert_many(&self, rows: usize) -> Arc<str> {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let mut q = Entity::insert_many((0..rows).map(|_| row("", &Value::Null, at)))
            .on_conflict(OnConflict::column(Column::Key).do_nothing().to_owned());
        q.query().returning(returning());
        q.build(self.backend).sql.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &str =
        r#""records"."id", "records"."key", "records"."value", "records"."created_at", "records"."updated_at""#;
    const RETURNING: &str = r#"RETURNING "id", "key", "value", "created_at", "updated_at""#;

    /// The exact text Postgres prepares: a change here changes every connection's statement cache and
    /// the order operations bind their values in, so it is a reviewed change, not a side effect.
    #[test]
    fn postgres_statements_are_exactly_these() {
        let sql = Sql::new(DbBackend::Postgres);
        let want = [
            (&sql.get, format!(r#"SELECT {COLUMNS} FROM "records" WHERE "records"."id" = $1 LIMIT $2"#)),
            (
                &sql.list,
                format!(
                    r#"SELECT {COLUMNS} FROM "records" WHERE "records"."id" > $1 ORDER BY "records"."id" ASC LIMIT $2"#
                ),
            ),
            (
                &sql.list_by_key,
                format!(
                    r#"SELECT {COLUMNS} FROM "records" WHERE "records"."id" > $1 AND "records"."key" = $2 ORDER BY "records"."id" ASC LIMIT $3"#
                ),
            ),
            (
                &sql.insert,
                format!(
                    r#"INSERT INTO "records" ("key", "value", "created_at", "updated_at") VALUES ($1, $2, $3, $4) {RETURNING}"#
                ),
            ),
            (
                &sql.update,
                format!(
                    r#"UPDATE "records" SET "value" = $1, "updated_at" = $2 WHERE "records"."id" = $3 {RETURNING}"#
                ),
            ),
            (&sql.delete, r#"DELETE FROM "records" WHERE "records"."id" = $1"#.to_owned()),
        ];
        for (got, want) in want {
            assert_eq!(got.as_ref(), want);
        }
        assert_eq!(
            sql.insert_many(2).as_ref(),
            format!(
                r#"INSERT INTO "records" ("key", "value", "created_at", "updated_at") VALUES ($1, $2, $3, $4), ($5, $6, $7, $8) ON CONFLICT ("key") DO NOTHING {RETURNING}"#
            )
        );
    }

    /// SQLite gets the same statements with its own placeholders.
    #[test]
    fn sqlite_statements_differ_only_in_placeholders() {
        let (pg, lite) = (Sql::new(DbBackend::Postgres), Sql::new(DbBackend::Sqlite));
        let unnumbered = |s: &str| {
            let mut out = String::new();
            let mut chars = s.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '$' {
                    while chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                    out.push('?');
                } else {
                    out.push(c);
                }
            }
            out
        };
        for (p, l) in [(&pg.get, &lite.get), (&pg.list_by_key, &lite.list_by_key), (&pg.update, &lite.update)] {
            assert_eq!(unnumbered(p), l.as_ref());
        }
        assert_eq!(unnumbered(&pg.insert_many(3)), lite.insert_many(3).as_ref());
    }
}
