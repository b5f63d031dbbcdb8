//! One function per subcommand, a file per family: `job` (run, resume), `status_report`,
//! `validate`, `check`, `plan`, `sandbox`, `demo`. Commands sit on top: they may use every
//! module of the importer; nothing below imports them.

mod check;
mod demo;
mod job;
mod plan;
mod sandbox;
mod status_report;
mod validate;

pub use check::check;
pub use demo::demo;
pub use job::{resume, run};
pub use plan::plan;
pub use sandbox::sandbox;
pub use status_report::{report, status};
pub use validate::validate;
