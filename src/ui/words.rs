//! A cron expression in words, for the pipelines page: `0 2 * * *` is "every day at 02:00".
//! Only the shapes people write most are put in words; anything else is shown as the
//! expression itself (never a wrong sentence).

/// The schedule in words, or `cron: <expression>` when it is not one of the common shapes.
pub fn cron_in_words(expression: &str) -> String {
    describe(expression.trim()).unwrap_or_else(|| format!("cron: {}", expression.trim()))
}

fn describe(expression: &str) -> Option<String> {
    match expression {
        "@yearly" | "@annually" => return Some("every year on 1 January at 00:00".into()),
        "@monthly" => return Some("on day 1 of every month at 00:00".into()),
        "@weekly" => return Some("every Sunday at 00:00".into()),
        "@daily" | "@midnight" => return Some("every day at 00:00".into()),
        "@hourly" => return Some("every hour at minute 0".into()),
        _ => {}
    }
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let [minute, hour, day, month, weekday] = fields.as_slice() else {
        return None;
    };
    if *month != "*" {
        return None;
    }
    if let Some(text) = frequent(minute, hour, day, weekday) {
        return Some(text);
    }
    let at = format!("at {:02}:{:02}", number(hour, 23)?, number(minute, 59)?);
    match (*day, *weekday) {
        ("*", "*") => Some(format!("every day {at}")),
        ("*", days) => Some(format!("{} {at}", weekdays(days)?)),
        (d, "*") => Some(format!(
            "on day {} of every month {at}",
            number(d, 31).filter(|d| *d >= 1)?
        )),
        _ => None,
    }
}

/// Every minute, every N minutes, hourly at a minute, every N hours.
fn frequent(minute: &str, hour: &str, day: &str, weekday: &str) -> Option<String> {
    if day != "*" || weekday != "*" {
        return None;
    }
    match (minute, hour) {
        ("*", "*") => Some("every minute".into()),
        (m, "*") => match m.strip_prefix("*/") {
            Some(step) => Some(format!("every {} minutes", number(step, 59).filter(|n| *n >= 1)?)),
            None => Some(format!("every hour at minute {}", number(m, 59)?)),
        },
        (m, h) => {
            let step = number(h.strip_prefix("*/")?, 23).filter(|n| *n >= 1)?;
            Some(format!("every {step} hours at minute {}", number(m, 59)?))
        }
    }
}

fn number(text: &str, max: u32) -> Option<u32> {
    text.parse::<u32>().ok().filter(|n| *n <= max)
}

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

fn weekday(text: &str) -> Option<usize> {
    if let Ok(n) = text.parse::<usize>() {
        return (n <= 7).then_some(n % 7);
    }
    let lower = text.to_ascii_lowercase();
    DAYS.iter().position(|d| d[..3].eq_ignore_ascii_case(&lower))
}

/// `1-5` is "on weekdays", `0,6` "on Saturday and Sunday", `1` "every Monday".
fn weekdays(field: &str) -> Option<String> {
    if let Some((a, b)) = field.split_once('-') {
        let (a, b) = (weekday(a)?, weekday(b)?);
        if (a, b) == (1, 5) {
            return Some("on weekdays (Monday to Friday)".into());
        }
        return (a < b).then(|| format!("every {} to {}", DAYS[a], DAYS[b]));
    }
    let days: Vec<usize> = field.split(',').map(weekday).collect::<Option<_>>()?;
    match days.as_slice() {
        [one] => Some(format!("every {}", DAYS[*one])),
        many => {
            let names: Vec<&str> = many.iter().map(|d| DAYS[*d]).collect();
            let (last, rest) = names.split_last()?;
            Some(format!("on {} and {last}", rest.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cron_in_words;

    #[test]
    fn common_shapes_read_as_sentences() {
        for (cron, words) in [
            ("0 2 * * *", "every day at 02:00"),
            ("30 6 * * 1-5", "on weekdays (Monday to Friday) at 06:30"),
            ("0 9 * * MON", "every Monday at 09:00"),
            ("0 9 * * 0,6", "on Sunday and Saturday at 09:00"),
            ("15 3 1 * *", "on day 1 of every month at 03:15"),
            ("*/5 * * * *", "every 5 minutes"),
            ("7 * * * *", "every hour at minute 7"),
            ("0 */6 * * *", "every 6 hours at minute 0"),
            ("* * * * *", "every minute"),
            ("@daily", "every day at 00:00"),
        ] {
            assert_eq!(cron_in_words(cron), words, "{cron}");
        }
    }

    #[test]
    fn anything_else_is_shown_as_the_expression() {
        for cron in [
            "0 2 * 3 *",
            "0 2 1 * 1",
            "0 25 * * *",
            "1,2 3 * * *",
            "nonsense",
            "0 2 * * 9",
        ] {
            assert_eq!(cron_in_words(cron), format!("cron: {cron}"), "{cron}");
        }
    }
}
