//! Schema migrations for `records` (contract: "Resource: a record"). `aside migrate` and `aside serve`
//! both call [`run`]; on Postgres it holds an advisory lock on a dedicated connection so two replicas
//! starting at once apply each migration exactly once.

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};
use sea_orm_migration::prelude::*;

use crate::config::{Config, DatabaseKind};

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
    // A pool of one connection: the advisory lock is per session, so lock, migrate and unlock must
    // all happen on the same connection.
    let mut opts = ConnectOptions::new(config.database_url.clone());
    opts.max_connections(1).min_connections(1).sqlx_logging(false);
    let db: DatabaseConnection = Database::connect(opts).await?;
    let postgres = config.database_kind() == DatabaseKind::Postgres;
    if postgres {
        db.execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_ID})")).await?;
    }
    let result = Migrator::up(&db, None).await;
    if postgres {
        // Closing the connection would release the lock too; unlock explicitly to be prompt.
        let _ = db.execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})")).await;
    }
    let _ = db.close().await;
    result
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
