//! The process exit codes: a contract with the scripts that drive the importer.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every row imported |
//! | 1 | finished, but some rows are invalid, duplicate, failed or held back |
//! | 2 | usage, configuration or input error; nothing was sent |
//! | 3 | stopped by a fatal API condition (bad key, wrong region, missing role); resumable |
//! | 4 | stopped because the error budget was exhausted; resumable |
//! | 3 | also: the API is unreachable, redirects, or its lookup route cannot be proven; resumable |
//! | 5 | stopped because the checkpoint could not be written (disk full, read-only); resumable |
//! | 70 | internal error (a bug, e.g. a panicked worker); every row's state is kept; resumable |
//! | 130 | interrupted (Ctrl-C, SIGTERM); resumable |

/// Why the process ends, as the exit status scripts see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success,
    Incomplete,
    Usage,
    ApiFatal,
    ErrorBudget,
    Storage,
    Internal,
    Interrupted,
}

impl ExitCode {
    pub fn code(self) -> u8 {
        match self {
            ExitCode::Success => 0,
            ExitCode::Incomplete => 1,
            ExitCode::Usage => 2,
            ExitCode::ApiFatal => 3,
            ExitCode::ErrorBudget => 4,
            ExitCode::Storage => 5,
            ExitCode::Internal => 70,
            ExitCode::Interrupted => 130,
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_documented_contract() {
        let table = [
            (ExitCode::Success, 0),
            (ExitCode::Incomplete, 1),
            (ExitCode::Usage, 2),
            (ExitCode::ApiFatal, 3),
            (ExitCode::ErrorBudget, 4),
            (ExitCode::Storage, 5),
            (ExitCode::Internal, 70),
            (ExitCode::Interrupted, 130),
        ];
        for (exit, code) in table {
            assert_eq!(exit.code(), code, "{exit:?}");
        }
    }
}
