//! Unit tests of the HTML page.

use super::charts::*;
use super::data::*;
use super::*;
use crate::checkpoint::LatencyCount;

#[test]
fn escaping_covers_markup_and_quotes() {
    assert_eq!(
        esc(r#"<script>alert("x")</script> & 'y'"#).to_string(),
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
    );
    assert_eq!(esc("plain ünïcödé").to_string(), "plain ünïcödé");
    assert_eq!(clipped("abcdef", 3), "abc…");
    assert_eq!(clipped("ééé", 3), "ééé");
}

#[test]
fn bucket_width_fits_runs_from_milliseconds_to_weeks() {
    assert_eq!(bucket_width(0), 1);
    assert_eq!(bucket_width(59), 1);
    assert_eq!(bucket_width(60), 2);
    assert_eq!(bucket_width(3_000), 100);
    assert_eq!(bucket_width(10 * 60_000), 15_000);
    assert_eq!(bucket_width(3 * 86_400_000), 7_200_000);
    assert_eq!(bucket_width(400 * 86_400_000), 604_800_000);
    assert_eq!(
        bucket_width(4_000 * 86_400_000),
        4_000 * 86_400_000 / 60 + 1
    );
    for span in [
        0,
        1,
        999,
        61_000,
        3_600_000,
        10 * 86_400_000,
        60 * 86_400_000,
    ] {
        assert!(span / bucket_width(span) < MAX_BUCKETS, "span {span}");
    }
}

#[test]
fn latency_percentiles_are_nearest_rank_and_bars_cover_every_value() {
    let values: Vec<LatencyCount> = (1..=100)
        .map(|ms| LatencyCount {
            latency_ms: ms,
            count: 1,
        })
        .collect();
    let latency = latency_from(&values).unwrap();
    assert_eq!(
        (latency.p50, latency.p90, latency.p99, latency.max),
        (50, 90, 99, 100)
    );
    assert_eq!(latency.count, 100);
    assert_eq!(latency.bars.iter().map(|b| b.2).sum::<u64>(), 100);
    assert_eq!(
        latency.bars.first().map(|b| b.0),
        Some(1),
        "leading empty bars dropped"
    );
    let last = latency.bars.last().unwrap();
    assert!(last.0 <= 100 && 100 < last.1, "{last:?}");
    for pair in latency.bars.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "bars are contiguous");
    }

    let skewed = [
        LatencyCount {
            latency_ms: 3,
            count: 98,
        },
        LatencyCount {
            latency_ms: 2_500,
            count: 2,
        },
    ];
    let latency = latency_from(&skewed).unwrap();
    assert_eq!((latency.p50, latency.p90, latency.p99), (3, 3, 2_500));
    assert_eq!(latency_from(&[]), None);
}

#[test]
fn time_labels_suit_the_run_length() {
    let chart = |span_ms: i64, width_ms: i64| Throughput {
        origin_ms: 1_700_000_000_000,
        width_ms,
        span_ms,
        buckets: Vec::new(),
    };
    assert_eq!(time_label(&chart(60, 2), 5), "0.010");
    assert_eq!(time_label(&chart(20_000, 500), 3), "1.5");
    assert_eq!(time_label(&chart(120_000, 2_000), 8), "22:13:36");
    assert_eq!(time_label(&chart(7_200_000, 120_000), 1), "22:15");
    assert_eq!(
        time_label(&chart(3 * 86_400_000, 7_200_000), 1),
        "11-15 00:13"
    );
}

#[test]
fn y_axis_steps_are_round() {
    assert_eq!(nice_step(1), 1);
    assert_eq!(nice_step(7), 2);
    assert_eq!(nice_step(23), 5);
    assert_eq!(nice_step(480), 100);
    assert_eq!(nice_step(1_000_000), 200_000);
}
