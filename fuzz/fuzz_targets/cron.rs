//! A cron expression and a time zone (the first line and the second), and the cron times
//! around instants taken from the rest.
#![no_main]

use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use weir::engine::schedule::CronSchedule;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let expression = lines.next().unwrap_or_default();
    let tz = lines.next().filter(|t| !t.is_empty());
    let Ok(cron) = CronSchedule::parse(expression, tz) else {
        return;
    };
    let seed = lines
        .next()
        .unwrap_or_default()
        .bytes()
        .fold(0i64, |a, b| a.wrapping_mul(31).wrapping_add(i64::from(b)));
    let span = Timestamp::MAX.as_second() - Timestamp::MIN.as_second();
    for t in [
        Timestamp::MIN,
        Timestamp::MAX,
        Timestamp::UNIX_EPOCH,
        Timestamp::from_second(Timestamp::MIN.as_second() + seed.rem_euclid(span)).unwrap(),
    ] {
        if let Some(next) = cron.next_after(t) {
            assert!(next > t);
        }
        if let Some(prev) = cron.at_or_before(t) {
            assert!(prev <= t);
        }
        let _ = cron.count_between(t, Timestamp::MAX);
    }
});
