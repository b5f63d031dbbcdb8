//! What an input must pass before it becomes a job: field names the API knows, agents the users
//! map names; and, when a resumed staging reads it again, the very file that was surveyed.

use crate::checkpoint::Job;
use crate::config::StagingChoices;
use crate::input::{self, InputSource};
use crate::row::{self, FieldVerdict};

use super::AppError;

/// Every field name the API does not know, or that the importer refuses, stops the run here,
/// each named with its line, so that a typo never drops data silently.
pub fn check_field_names(names: &[(String, u64)], ignore_unknown: bool) -> Result<(), AppError> {
    let mut problems = Vec::new();
    for (name, line) in names {
        match row::classify_field(name) {
            FieldVerdict::Known => {}
            FieldVerdict::Refused(reason) => {
                problems.push(format!("  {name:?} (line {line}): not accepted: {reason}"));
            }
            FieldVerdict::Unknown if ignore_unknown => {}
            FieldVerdict::Unknown => {
                let hint = row::suggest_field(name)
                    .map(|known| format!("; did you mean {known:?}?"))
                    .unwrap_or_default();
                problems.push(format!(
                    "  {name:?} (line {line}): not a Kustomer message attribute{hint}"
                ));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let unknown_hint = if ignore_unknown {
        ""
    } else {
        "\nFix the names, or pass --ignore-unknown to drop columns the API does not know."
    };
    Err(AppError::Fields(format!(
        "the input has fields the importer will not send; nothing was staged:\n{}{unknown_hint}",
        problems.join("\n")
    )))
}

/// Every `createdByEmail` that the users map lacks stops the job before anything is staged or
/// sent, all of them listed, unless `--created-by` is the fallback (or audit fields are off,
/// which sends no createdBy at all).
pub(super) fn refuse_unknown_agents(
    source: &InputSource,
    staging: &StagingChoices,
    field_names: &[(String, u64)],
) -> Result<(), AppError> {
    let named = field_names.iter().any(|(name, _)| name == "createdByEmail");
    if !named || staging.created_by.is_some() || !staging.audit_fields {
        return Ok(());
    }
    let Some(users) = &staging.users else {
        return Err(AppError::Fields(
            "the input names agents by createdByEmail: pass --users-map FILE (CSV email,id, as \
             exported from Kustomer's user list), or --created-by USER_ID as the fallback; \
             nothing was staged"
                .into(),
        ));
    };
    let mut unknown: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for record in input::records_with_field_lines(source, staging.max_field_lines)? {
        let record = record?;
        let Ok(fields) = &record.fields else { continue };
        let Some(email) = fields
            .get("createdByEmail")
            .and_then(serde_json::Value::as_str)
        else {
            continue;
        };
        if users.user_id(email).is_none() {
            let entry = unknown
                .entry(email.to_lowercase())
                .or_insert((record.line, 0));
            entry.1 += 1;
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = unknown
        .iter()
        .map(|(email, (line, rows))| {
            format!(
                "  {} ({rows} rows, first on line {line})",
                crate::text::escape_control(email)
            )
        })
        .collect();
    Err(AppError::Fields(format!(
        "{} agent emails in createdByEmail are not in --users-map ({} users); nothing was staged or sent:\n{}\nAdd them to the map, or pass --created-by USER_ID for rows whose agent is unknown.",
        unknown.len(),
        users.len(),
        listed.join("\n")
    )))
}

/// The resumed job's input must be the very file that was surveyed: same size, same SHA-256.
pub fn verify_input_unchanged(job: &Job) -> Result<InputSource, AppError> {
    let path = &job.input_path;
    if !path.exists() {
        return Err(AppError::InputChanged(format!(
            "staging of this job was interrupted and must read its input again, but {} is gone; \
             put the same file back at that path and resume",
            path.display()
        )));
    }
    let source = InputSource {
        path: path.clone(),
        format: job.format,
        compression: job.compression,
    };
    let survey = input::survey(&source)?;
    if survey.size != job.input_size || survey.sha256 != job.input_sha256 {
        return Err(AppError::InputChanged(format!(
            "staging of this job was interrupted and must read its input again, but {} has \
             changed since the job started (size {} → {}, SHA-256 {} → {}); restore the original \
             file, or start a new job with another --db",
            path.display(),
            job.input_size,
            survey.size,
            short(&job.input_sha256),
            short(&survey.sha256)
        )));
    }
    Ok(source)
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
