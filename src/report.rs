//! TEMPORARY stub until the report branch lands.
use crate::checkpoint::Checkpoint;
#[derive(Debug, thiserror::Error)]
#[error("report")]
pub struct ReportError;
pub enum ReportFormat {
    Text,
    Json,
    Csv,
}
#[derive(serde::Serialize)]
pub struct StatusSummary {}
pub fn status(_: &Checkpoint) -> Result<StatusSummary, ReportError> {
    todo!()
}
pub fn render_status_text(_: &StatusSummary) -> String {
    todo!()
}
pub fn write_report(
    _: &Checkpoint,
    _: ReportFormat,
    _: &mut dyn std::io::Write,
) -> Result<(), ReportError> {
    todo!()
}
pub fn write_problem_rows(
    _: &Checkpoint,
    _: &mut dyn std::io::Write,
    _: usize,
) -> Result<(), ReportError> {
    todo!()
}
