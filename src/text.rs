//! Text for people: number formatting shared by validation messages and reports, and the
//! escaping every string from the input or the API goes through on its way to a terminal or a
//! page. The checkpoint keeps such strings untouched; escaping happens on output only.

use std::borrow::Cow;

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

/// Characters that must not reach a terminal or a page as they are: C0 and C1 controls (escape
/// sequences, NUL, line breaks inside a one-line value), DEL, and the Unicode marks that reorder
/// the text around them (bidi embeddings, overrides and isolates, the directional marks).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `text` with every [`is_unsafe_char`] written as `\u{1b}`-style escape, so that it is shown
/// rather than obeyed. Borrowed when nothing needs escaping (the common case).
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe_char(c) {
            escaped.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// JSON text with every [`is_unsafe_char`] left raw by the serializer (DEL, C1 controls, bidi
/// marks; serde_json already escapes C0) written as a `\uXXXX` escape. Outside strings JSON
/// has only ASCII and its whitespace, so such characters only occur inside strings, where the
/// escape means the same.
pub fn json_escape_unsafe(json: &str) -> Cow<'_, str> {
    let unsafe_in_json = |c: char| is_unsafe_char(c) && !matches!(c, '\n' | '\r' | '\t');
    if !json.chars().any(unsafe_in_json) {
        return Cow::Borrowed(json);
    }
    let mut escaped = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if unsafe_in_json(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                escaped.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// [`escape_control`] for a message of several lines: its line breaks stay, everything else that
/// could drive a terminal is escaped.
pub fn escape_lines(text: &str) -> String {
    text.split('\n')
        .map(escape_control)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The inverse of [`escape_control`]: `\u{1b}` becomes the character it names (an invalid one
/// stays as written). Lets a command-line argument carry characters argv cannot, such as NUL.
pub fn unescape_code_points(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\\u{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let decoded = after.find('}').and_then(|end| {
            let c = u32::from_str_radix(&after[..end], 16)
                .ok()
                .and_then(char::from_u32)?;
            Some((c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("\\u{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// An error message with what varies from row to row (ids, numbers, quoted values) replaced by
/// placeholders, so that "Conversation 5f3a… not found" on 88 rows is one group, not 88.
pub fn normalise_message(message: &str) -> String {
    let mut normal = String::with_capacity(message.len());
    let mut chars = message.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            let mut end = start + c.len_utf8();
            while let Some(&(at, next)) = chars.peek() {
                if next.is_alphanumeric() || matches!(next, '_' | '-') {
                    end = at + next.len_utf8();
                    chars.next();
                } else if matches!(next, '.' | ',') && word_continues(message, at + 1) {
                    // 10,240 and 1.5 are one number; "found 3, expected" is not.
                    end = at + 1;
                    chars.next();
                } else {
                    break;
                }
            }
            let word = &message[start..end];
            if word
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | ','))
            {
                normal.push_str("<n>");
            } else if word.chars().any(|c| c.is_ascii_digit()) {
                normal.push_str("<id>");
            } else {
                normal.push_str(word);
            }
        } else {
            normal.push(c);
        }
    }
    normal
}

/// True when the byte at `at` starts a digit (the tail of a number such as `10,240`).
fn word_continues(text: &str, at: usize) -> bool {
    text.as_bytes().get(at).is_some_and(u8::is_ascii_digit)
}

/// A duration for people, in whole seconds (cut, not rounded): `45s`, `3m 05s`, `2h 07m 00s`.
/// The one duration format of the tool; a figure in fractional seconds goes through
/// [`whole_seconds`] first.
pub fn duration(span: std::time::Duration) -> String {
    let secs = span.as_secs();
    let (hours, minutes, seconds) = (secs / 3_600, secs / 60 % 60, secs % 60);
    if hours > 0 {
        format!("{hours}h {minutes:02}m {seconds:02}s")
    } else if minutes > 0 {
        format!("{minutes}m {seconds:02}s")
    } else {
        format!("{seconds}s")
    }
}

/// Seconds (an estimate, an average) rounded to the nearest whole second, for [`duration`];
/// negative and NaN count as zero, and a figure too large saturates.
pub fn whole_seconds(seconds: f64) -> std::time::Duration {
    std::time::Duration::from_secs(seconds.max(0.0).round() as u64)
}

/// A path as a shell argument the user can paste.
pub fn shell_quoted(path: &std::path::Path) -> String {
    let text = path.to_string_lossy();
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c));
    if plain && !text.is_empty() {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people() {
        use std::time::Duration;
        assert_eq!(duration(Duration::from_millis(45_900)), "45s");
        assert_eq!(duration(Duration::from_secs(185)), "3m 05s");
        // Hours keep their seconds (before one formatter served both, the progress line and the
        // yielded time showed `2h 07m`).
        assert_eq!(duration(Duration::from_secs(7_620)), "2h 07m 00s");
        assert_eq!(duration(whole_seconds(9.4)), "9s");
        assert_eq!(duration(whole_seconds(243.0)), "4m 03s");
        assert_eq!(duration(whole_seconds(7509.0)), "2h 05m 09s");
        assert_eq!(duration(whole_seconds(-3.0)), "0s");
        assert_eq!(duration(whole_seconds(f64::NAN)), "0s");
        assert_eq!(
            shell_quoted(std::path::Path::new("/tmp/cp.db")),
            "/tmp/cp.db"
        );
        assert_eq!(
            shell_quoted(std::path::Path::new("/tmp/my cp's.db")),
            r"'/tmp/my cp'\''s.db'"
        );
    }

    #[test]
    fn groups_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(10_240), "10,240");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn controls_and_bidi_overrides_are_shown_not_obeyed() {
        assert!(matches!(
            escape_control("plain (line 5) ✓"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_control("\u{1b}[31mred\u{0}\u{202e}(line 5)"),
            "\\u{1b}[31mred\\u{0}\\u{202e}(line 5)"
        );
        assert_eq!(
            escape_control("a\nb\tc\u{7f}\u{9b}"),
            "a\\u{a}b\\u{9}c\\u{7f}\\u{9b}"
        );
        assert_eq!(escape_control("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
    }

    #[test]
    fn json_keeps_its_meaning_without_raw_bidi_or_controls() {
        let value = serde_json::json!({"message": "a\u{202e}b\u{1b}c\u{7f}\u{9b} ✓"});
        let json = serde_json::to_string_pretty(&value).unwrap();
        let safe = json_escape_unsafe(&json);
        assert!(
            !safe.chars().any(|c| is_unsafe_char(c) && c != '\n'),
            "{safe}"
        );
        assert!(safe.contains("\\u202e"), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn multi_line_messages_keep_their_lines() {
        assert_eq!(
            escape_lines("fields:\n  \"a\u{202e}\" (line 1)\n\u{1b}[2J"),
            "fields:\n  \"a\\u{202e}\" (line 1)\n\\u{1b}[2J"
        );
    }

    #[test]
    fn escaped_text_unescapes_to_the_original() {
        let original = "\u{1b}[31mred\u{0} \u{202e}(line 5) ✓";
        assert_eq!(unescape_code_points(&escape_control(original)), original);
        assert_eq!(unescape_code_points("a\\u{zz}b\\u{"), "a\\u{zz}b\\u{");
    }

    #[test]
    fn messages_are_normalised_for_grouping() {
        assert_eq!(
            normalise_message("Conversation dead00000000000000000001 not found"),
            "Conversation <id> not found"
        );
        assert_eq!(
            normalise_message("Conversation 5f3a00000000000000000002 not found"),
            "Conversation <id> not found"
        );
        assert_eq!(
            normalise_message("preview: at most 10,240 characters (found 12001)"),
            "preview: at most <n> characters (found <n>)"
        );
        assert_eq!(
            normalise_message("has 7 fields, 6 expected"),
            "has <n> fields, <n> expected"
        );
        assert_eq!(
            normalise_message("sentAt: not a date"),
            "sentAt: not a date"
        );
        assert_eq!(
            normalise_message("id 123e4567-e89b-12d3-a456-426614174000 gone"),
            "id <id> gone"
        );
    }
}
