//! The end-to-end suite: one test binary (linking axum, reqwest, rusqlite and jsonschema once),
//! one module per area. Every test drives the compiled `kustomer-import` binary; servers listen
//! on 127.0.0.1 only.

mod bulk;
mod common;
mod concurrency;
mod exactly_once;
mod failure_paths;
mod hostile;
mod pacing;
mod person;
mod pipeline;
mod plan;
mod readers_proptest;
mod report;
mod resilience;
mod resolve;
mod sandbox_bulk;
mod sandbox_customers;
