//! Date-time reading: RFC 3339 with an offset, or a local time read in the job's time zone,
//! always written back as UTC with milliseconds (`2021-03-04T10:00:00.000Z`).

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};
use jiff::Timestamp;

/// A date-time as it will be sent, and as a sortable number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Instant {
    /// UTC, RFC 3339, exactly three fractional digits.
    pub(super) text: String,
    pub(super) micros: i64,
}

/// The pieces of `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM]`.
struct Parts {
    civil: DateTime,
    /// None when the text has no offset.
    offset_seconds: Option<i32>,
}

const EXAMPLES: &str = "2021-03-04T10:00:00Z, 2021-03-04T10:00:00+02:00 or 2021-03-04 10:00:00";

/// Reads `text` as an instant; a time without offset is read in `zone`.
pub(super) fn normalize(text: &str, zone: &TimeZone) -> Result<Instant, String> {
    let quoted = super::schema::quoted(text);
    let parts = split(text)
        .ok_or_else(|| format!("{quoted} is not a date-time; write it like {EXAMPLES}"))??;
    let timestamp = match parts.offset_seconds {
        Some(seconds) => Offset::from_seconds(seconds)
            .and_then(|offset| offset.to_timestamp(parts.civil))
            .map_err(|_| format!("{quoted} is out of range"))?,
        None => local_to_timestamp(&quoted, parts.civil, zone)?,
    };
    let utc_year = timestamp.to_zoned(TimeZone::UTC).year();
    if !(1..=9999).contains(&utc_year) {
        return Err(format!("{quoted} is out of range"));
    }
    Ok(Instant {
        text: format!("{timestamp:.3}"),
        micros: timestamp.as_microsecond(),
    })
}

fn local_to_timestamp(quoted: &str, civil: DateTime, zone: &TimeZone) -> Result<Timestamp, String> {
    let zone_name = zone.iana_name().unwrap_or("the configured time zone");
    match zone.to_ambiguous_timestamp(civil).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset
            .to_timestamp(civil)
            .map_err(|_| format!("{quoted} is out of range")),
        AmbiguousOffset::Gap { .. } => Err(format!(
            "{quoted} does not exist in {zone_name} (the clocks skip it when daylight saving \
             time starts); give the time with an offset such as Z or -05:00"
        )),
        AmbiguousOffset::Fold { before, after } => Err(format!(
            "{quoted} is ambiguous in {zone_name} (it happens twice when daylight saving time \
             ends, at offsets {before} and {after}); give the time with its offset"
        )),
    }
}

/// None when the text does not have the shape at all; Some(Err) when it does but names no
/// real date or time (February 30th, 25 o'clock).
fn split(text: &str) -> Option<Result<Parts, String>> {
    let bytes = text.as_bytes();
    let number = |start: usize, len: usize| -> Option<i32> {
        let digits = bytes.get(start..start + len)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0, |value, digit| value * 10 + i32::from(digit - b'0')),
        )
    };
    let separator_at =
        |index: usize, allowed: &[u8]| bytes.get(index).is_some_and(|byte| allowed.contains(byte));
    let year = number(0, 4)?;
    let month = number(5, 2)?;
    let day = number(8, 2)?;
    let hour = number(11, 2)?;
    let minute = number(14, 2)?;
    let second = number(17, 2)?;
    let separators_ok = separator_at(4, b"-")
        && separator_at(7, b"-")
        && separator_at(10, b"Tt ")
        && separator_at(13, b":")
        && separator_at(16, b":");
    if !separators_ok {
        return None;
    }
    let mut rest = 19;
    let mut nanos = 0;
    if separator_at(rest, b".") {
        let digits = bytes[rest + 1..]
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let fraction = number(rest + 1, digits)?;
        nanos = fraction * 10_i32.pow(9 - digits as u32);
        rest += 1 + digits;
    }
    let offset_seconds = match &bytes[rest..] {
        [] => None,
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let hours = number(rest + 1, 2)?;
            let minutes = number(rest + 4, 2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = hours * 3600 + minutes * 60;
            Some(if *sign == b'-' { -seconds } else { seconds })
        }
        _ => return None,
    };
    // Each component has at most four digits, so these narrowing conversions cannot fail.
    let civil = DateTime::new(
        year as i16,
        month as i8,
        day as i8,
        hour as i8,
        minute as i8,
        second as i8,
        nanos,
    );
    Some(match civil {
        Ok(civil) => Ok(Parts {
            civil,
            offset_seconds,
        }),
        Err(_) => Err(format!(
            "{} is not a real date and time",
            super::schema::quoted(text)
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    fn utc(text: &str) -> Result<String, String> {
        normalize(text, &TimeZone::UTC).map(|instant| instant.text)
    }

    #[test]
    fn offsets_are_converted_to_utc_with_milliseconds() {
        assert_eq!(
            utc("2021-03-04T10:00:00Z").unwrap(),
            "2021-03-04T10:00:00.000Z"
        );
        assert_eq!(
            utc("2021-03-04t10:00:00z").unwrap(),
            "2021-03-04T10:00:00.000Z"
        );
        assert_eq!(
            utc("2021-03-04T10:00:00+02:00").unwrap(),
            "2021-03-04T08:00:00.000Z"
        );
        assert_eq!(
            utc("2021-03-04T22:30:00-05:00").unwrap(),
            "2021-03-05T03:30:00.000Z"
        );
        assert_eq!(
            utc("2021-03-04 10:00:00.5Z").unwrap(),
            "2021-03-04T10:00:00.500Z"
        );
        // Digits past the millisecond are cut, not rounded up into the next millisecond.
        assert_eq!(
            utc("2021-03-04T10:00:00.123999999Z").unwrap(),
            "2021-03-04T10:00:00.123Z"
        );
    }

    #[test]
    fn micros_keep_sub_millisecond_order() {
        let earlier = normalize("2021-03-04T10:00:00.123400Z", &TimeZone::UTC).unwrap();
        let later = normalize("2021-03-04T10:00:00.123500Z", &TimeZone::UTC).unwrap();
        assert_eq!(earlier.text, later.text);
        assert_eq!(earlier.micros, 1_614_852_000_123_400);
        assert!(earlier.micros < later.micros);
    }

    #[test]
    fn a_time_without_offset_is_read_in_the_zone() {
        let new_york = zone("America/New_York");
        // Winter: UTC-5.
        let winter = normalize("2021-03-04T10:00:00", &new_york).unwrap();
        assert_eq!(winter.text, "2021-03-04T15:00:00.000Z");
        // Summer: UTC-4; a space instead of T and a fraction are fine.
        let summer = normalize("2021-07-04 10:00:00.25", &new_york).unwrap();
        assert_eq!(summer.text, "2021-07-04T14:00:00.250Z");
        // An explicit offset wins over the zone.
        let explicit = normalize("2021-07-04T10:00:00Z", &new_york).unwrap();
        assert_eq!(explicit.text, "2021-07-04T10:00:00.000Z");
        let utc_default = utc("2021-07-04T10:00:00").unwrap();
        assert_eq!(utc_default, "2021-07-04T10:00:00.000Z");
    }

    #[test]
    fn a_local_time_in_the_dst_gap_is_refused() {
        let error = normalize("2021-03-14T02:30:00", &zone("America/New_York")).unwrap_err();
        assert_eq!(
            error,
            "\"2021-03-14T02:30:00\" does not exist in America/New_York (the clocks skip it \
             when daylight saving time starts); give the time with an offset such as Z or -05:00"
        );
    }

    #[test]
    fn a_local_time_in_the_dst_overlap_is_refused() {
        let error = normalize("2021-11-07T01:30:00", &zone("America/New_York")).unwrap_err();
        assert_eq!(
            error,
            "\"2021-11-07T01:30:00\" is ambiguous in America/New_York (it happens twice when \
             daylight saving time ends, at offsets -04 and -05); give the time with its offset"
        );
        // With its offset, the same wall time is fine.
        assert_eq!(
            utc("2021-11-07T01:30:00-05:00").unwrap(),
            "2021-11-07T06:30:00.000Z"
        );
    }

    #[test]
    fn malformed_or_impossible_times_are_refused() {
        for text in [
            "",
            "yesterday",
            "2021-03-04",
            "2021-03-04T10:00",
            "2021-03-04T10:00:00+0200",
            "2021-03-04T10:00:00 +02:00",
            "2021/03/04 10:00:00",
            "2021-03-04T10:00:00.Z",
            "2021-03-04T10:00:00.1234567891Z",
            "2021-03-04T10:00:00+24:00",
            "1614852000",
            "２０２１-03-04T10:00:00Z",
        ] {
            let error = utc(text).unwrap_err();
            assert!(error.contains("is not a date-time"), "{text}: {error}");
        }
        for text in [
            "2021-02-30T10:00:00Z",
            "2021-03-04T25:00:00Z",
            "2021-03-04T10:61:00Z",
        ] {
            let error = utc(text).unwrap_err();
            assert!(
                error.ends_with("is not a real date and time"),
                "{text}: {error}"
            );
        }
        assert!(utc("0000-01-01T00:30:00+01:00")
            .unwrap_err()
            .ends_with("is out of range"));
    }
}
