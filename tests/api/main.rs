//! The contract tests: one integration binary (house style). Each test starts the app in-process on a
//! random port against a fresh Postgres database and a real Redis (both throwaway servers started by
//! scripts/test.sh), or against the embedded configuration where the test says so.

mod cache;
mod connections;
mod data;
mod helpers;
mod ops;
mod outage;
mod pooler;
mod redis_ha;
mod traces;
