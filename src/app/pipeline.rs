//! The job's life shared by `run`, `resume` and `demo`: create the job, stage the input, check
//! the key, send, and sum up. Each step has a file of its own beside this one (`new_job`,
//! `input_checks`, `staging`, `send_phase`, `summary`); this facade names them in that order.

pub use super::input_checks::{check_field_names, verify_input_unchanged};
pub use super::new_job::{
    claim_checkpoint, create_job, create_job_interruptible, describe_source, JobRequest,
};
pub use super::send_phase::{print_send_events, send_and_summarise};
pub use super::staging::{stage, staging_settings, StageCounts};
