//! kustomer-import: resumable, ordered, rate-aware import of historical messages into Kustomer.
//!
//! Data flows one way: `cli` flags become a validated `config`; `input` readers stream raw
//! records; `row` validates and stamps them; `checkpoint` stores every row's fate; `scheduler`
//! sends through `client` with `retry`; `report` reads the checkpoint back. `app` wires the
//! commands together and `exit_codes` maps outcomes to the process exit status.

pub mod checkpoint;
pub mod input;
pub mod row;
pub mod sandbox;
