//! Schema migrations for `records` (contract: "Resource: a record"). `aside migrate` and `aside serve`
//! both call [`run`]. On Postgres everything happens in one transaction holding a transaction-scoped
//! advisory lock, so two replicas starting at once apply each migration exactly once, directly or
//! through a transaction-pooling PgBouncer (DESIGN.md, "Behind PgBouncer"). A migration that cannot
//! run in a transaction (`CREATE INDEX CONCURRENTLY`) would need another plan.

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbErr, TransactionTrait};
use sea_orm_migration::prelude::*;

use crate::{
    config::{Config, DatabaseKind},
    db,
};

/// All migrations, in order.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateRecords)]
    }
}

/// An arbitrary constant: the advisory-lock id every aside process agrees on.
const MIGRATION_LOCK_ID: i64 = 0x6173_6964_6501;

/// Applies pending migrations.
pub async fn run(config: &Config) -> Result<(), DbErr> {
    // One connection is all a single transaction needs.
    let mut opts = db::connect_options(config);
    opts.max_connections(1).min_connections(1);
    let db: DatabaseConnection = Database::connect(opts).await?;
    let result = match config.database_kind() {
        DatabaseKind::Postgres => migrate_postgres(&db).await,
        DatabaseKind::Sqlite => Migrator::up(&db, None).await,
    };
    let _ = db.close().await;
    result
}

/// Migrates in one transaction under `pg_advisory_xact_lock`. A transaction pooler keeps a transaction
/// on one server connection, and the lock ends with the transaction: it can neither be released on
/// another server connection (as a session lock's unlock could be) nor outlive aside on a pooled one.
async fn migrate_postgres(db: &DatabaseConnection) -> Result<(), DbErr> {
    let txn = db.begin().await?;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")).await?;
    // Left by a failed run (or any sqlx client) on this server connection, they would collide with ours.
    forget_sqlx_statements(&txn).await?;
    // A savepoint: a failed migration still leaves the transaction able to clean up after itself.
    let step = txn.begin().await?;
    if let Err(e) = Migrator::up(&step, None).await {
        let _ = step.rollback().await;
        let _ = forget_sqlx_statements(&txn).await;
        let _ = txn.rollback().await;
        return Err(e);
    }
    step.commit().await?;
    forget_sqlx_statements(&txn).await?;
    txn.commit().await
}

/// Drops the named prepared statements sqlx leaves on the server connection (`sqlx_s_N`, one per
/// statement SeaORM sent). After COMMIT a transaction pooler hands this server connection to other
/// clients, whose own `sqlx_s_N` would then "already exist" or, worse, run ours. One simple-protocol
/// statement, so it prepares nothing itself; names are looked up first because a pooler that tracks
/// prepared statements (PgBouncer >= 1.21) renames them and leaves none of ours here.
async fn forget_sqlx_statements(txn: &DatabaseTransaction) -> Result<(), DbErr> {
    txn.execute_unprepared(
        r"DO $$DECLARE n text; BEGIN
            FOR n IN SELECT name FROM pg_prepared_statements WHERE name LIKE 'sqlx\_s\_%' LOOP
              EXECUTE format('DEALLOCATE %I', n);
            END LOOP;
          END$$",
    )
    .await
    .map(|_| ())
}

#[derive(DeriveIden)]
enum Records {
    Table,
    Id,
    Key,
    Value,
    CreatedAt,
    UpdatedAt,
}

/// m20260101_000001_create_records: the one table.
struct CreateRecords;

impl MigrationName for CreateRecords {
    fn name(&self) -> &str {
        "m20260101_000001_create_records"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateRecords {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Records::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Records::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(Records::Key).text().not_null().unique_key())
                    .col(ColumnDef::new(Records::Value).json_binary().not_null())
                    .col(ColumnDef::new(Records::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Records::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Records::Table).to_owned()).await
    }
}
