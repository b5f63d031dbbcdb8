//! `validate`: an input parsed and validated, nothing staged or sent.

use std::collections::HashMap;
use std::io::Write;

use crate::cli::ValidateArgs;
use crate::config::{self, InputArg};
use crate::exit_codes::ExitCode;
use crate::input::{self, InputError, InputSource};
use crate::row::{StampOptions, ValidationOptions};
use crate::text::escape_control;

use crate::app::pipeline::{self, StageCounts};
use crate::app::prepare::RowPreparer;
use crate::app::{say, AppError};
use crate::checkpoint::StagedKind;

/// Parses and validates every row of a file, says what is wrong with each, stages nothing.
pub fn validate(args: &ValidateArgs) -> Result<ExitCode, AppError> {
    let path = match InputArg::parse(&args.input) {
        InputArg::File(path) => path,
        InputArg::Stdin => {
            return Err(AppError::Fields(
                "validate reads a file; save stdin to a file first".into(),
            ))
        }
    };
    if !path.exists() {
        return Err(config::ConfigError::InputMissing(path).into());
    }
    if args.max_field_lines == 0 {
        return Err(config::ConfigError::MaxFieldLines.into());
    }
    let Some((source, survey)) = surveyed(&path, args)? else {
        return Ok(ExitCode::Incomplete);
    };
    pipeline::check_field_names(&survey.field_names, args.ignore_unknown)?;
    let (_, timezone) = config::parse_timezone(&args.timezone)?;
    let validation = ValidationOptions {
        timezone,
        ignore_unknown: args.ignore_unknown,
    };
    if let Some(id) = args
        .created_by
        .as_deref()
        .filter(|id| !crate::row::is_object_id(id))
    {
        return Err(config::ConfigError::CreatedBy(id.to_string()).into());
    }
    let stamp = StampOptions {
        imported_at: config::format_utc(jiff::Timestamp::now()),
        audit_fields: true,
        created_by: args.created_by.clone(),
        input_sha256: survey.sha256.clone(),
        users: config::load_users_map(args.users_map.as_deref())?,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // Messages quote the input: escaped, so that a hostile file cannot drive the terminal.
    let mut emit = |text: String| {
        writeln!(out, "{}", escape_control(&text)).map_err(AppError::io("cannot write to stdout"))
    };
    let preparer = RowPreparer {
        format: source.format,
        validation: &validation,
        stamp: &stamp,
    };
    let counts = classify_rows(&source, args.max_field_lines, &preparer, &mut emit)?;
    emit(format!(
        "{}: {} valid, {} invalid, {} duplicate",
        pipeline::describe_source(&source),
        counts.valid,
        counts.invalid,
        counts.duplicate
    ))?;
    out.flush()
        .map_err(AppError::io("cannot write to stdout"))?;
    Ok(if counts.invalid + counts.duplicate > 0 {
        ExitCode::Incomplete
    } else {
        ExitCode::Success
    })
}

/// The input's survey, or None when an unclosed quote makes it unimportable (said already).
fn surveyed(
    path: &std::path::Path,
    args: &ValidateArgs,
) -> Result<Option<(InputSource, input::Survey)>, AppError> {
    let source = InputSource::detect(path, args.format.map(Into::into))?;
    let survey = match input::survey(&source) {
        Ok(survey) => survey,
        // Found by the survey, before any row: the quote merges every row after it.
        Err(InputError::UnclosedQuote { line, .. }) => {
            say!(
                "line {line}: a quoted field opened on line {line} is never closed: it runs to \
                 the end of the input and would swallow every row after it"
            );
            say!(
                "{}: not importable until the quote is closed",
                escape_control(&pipeline::describe_source(&source))
            );
            return Ok(None);
        }
        Err(err) => return Err(err.into()),
    };
    if survey.rows == 0 {
        return Err(InputError::NoRows { path: source.path }.into());
    }
    Ok(Some((source, survey)))
}

/// Every row prepared and checked for a repeated externalId, each problem emitted.
fn classify_rows(
    source: &InputSource,
    max_field_lines: u64,
    preparer: &RowPreparer,
    emit: &mut impl FnMut(String) -> Result<(), AppError>,
) -> Result<StageCounts, AppError> {
    // externalId → first line that used it; validate keeps no checkpoint, so this map is the
    // one thing that grows with the input.
    let mut external_ids: HashMap<String, u64> = HashMap::new();
    // Each ticket's first customer: a row that names another is refused with both lines.
    let mut tickets = crate::row::TicketConsistency::default();
    let mut counts = StageCounts::default();
    for record in input::records_with_field_lines(source, max_field_lines)? {
        let record = record?;
        let kind = match preparer.kind(&record) {
            StagedKind::Valid(valid) => match valid
                .ticket
                .as_ref()
                .and_then(|ticket| tickets.check(record.line, ticket))
            {
                Some(reason) => StagedKind::Invalid {
                    reason,
                    conversation_id: None,
                    external_id: Some(valid.external_id),
                },
                None => StagedKind::Valid(valid),
            },
            invalid => invalid,
        };
        match kind {
            StagedKind::Invalid { reason, .. } => {
                counts.invalid += 1;
                emit(format!("line {}: {reason}", record.line))?;
            }
            StagedKind::Valid(valid) => match external_ids.get(&valid.external_id) {
                Some(first) => {
                    counts.duplicate += 1;
                    emit(format!(
                        "line {}: duplicate: externalId {} already used by line {first}",
                        record.line, valid.external_id
                    ))?;
                }
                None => {
                    counts.valid += 1;
                    external_ids.insert(valid.external_id, record.line);
                }
            },
        }
    }
    Ok(counts)
}
