//! Number formatting and escaping shared by validation messages and reports.

/// Text from the input or the API, safe to print: control characters and bidi overrides are
/// shown as `\u{..}` escapes instead of steering the terminal.
pub fn escape_for_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}');
        if c.is_control() || bidi {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `1234567` as `1,234,567`.
pub fn thousands(number: u64) -> String {
    let digits = number.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// A duration for people: `45s`, `3m 05s`, `2h 07m`.
pub fn duration(span: std::time::Duration) -> String {
    let secs = span.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3_600, secs % 3_600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::{duration, thousands};
    use std::time::Duration;

    #[test]
    fn durations_for_people() {
        assert_eq!(duration(Duration::from_millis(45_900)), "45s");
        assert_eq!(duration(Duration::from_secs(185)), "3m 05s");
        assert_eq!(duration(Duration::from_secs(7_620)), "2h 07m");
    }

    #[test]
    fn controls_and_bidi_overrides_are_escaped() {
        assert_eq!(
            super::escape_for_terminal("a\u{1b}[31mb\0c\u{202E}d é"),
            "a\\u{1b}[31mb\\u{0}c\\u{202e}d é"
        );
    }

    #[test]
    fn groups_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(10_240), "10,240");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
