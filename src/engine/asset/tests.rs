use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn event(key: Option<&str>) -> NewEvent {
    NewEvent {
        source: "task".into(),
        key: key.map(str::to_string),
        ..Default::default()
    }
}

/// An asset status whose events have the given sequence numbers and times.
fn status(events: &[(u64, &str)]) -> AssetStatus {
    let mut s = AssetStatus::default();
    for &(sequence, time) in events {
        s.sequence = sequence;
        s.last_update_time = Some(Time(ts(time)));
        s.events.push(AssetEvent {
            sequence,
            time: Time(ts(time)),
            source: "task".into(),
            extra: BTreeMap::from([("n".to_string(), sequence.to_string())]),
            ..Default::default()
        });
    }
    s
}

fn seq(asset: &str, sequence: u64) -> AssetSequence {
    AssetSequence {
        asset: asset.into(),
        sequence,
    }
}

#[test]
fn object_names_are_dns_labels_and_tell_apart_names_that_read_alike() {
    let cases = [
        "warehouse/sales/daily",
        "Warehouse/Sales/Daily",
        "warehouse-sales-daily",
        "a",
        "9",
        "x.y_z",
        &"n/".repeat(120),
    ];
    let mut seen = std::collections::HashSet::new();
    for name in cases {
        let object = object_name(name);
        assert!(names::is_dns_label(&object), "{name} -> {object}");
        assert!(seen.insert(object.clone()), "{name} -> {object} twice");
        assert_eq!(object, object_name(name), "deterministic");
    }
    assert!(object_name("warehouse/sales/daily").starts_with("warehouse-sales-daily-"));
}

#[test]
fn asset_names_are_checked() {
    for good in ["warehouse/sales/daily", "a", "S3.bucket_x-1"] {
        assert_eq!(check_name(good), Ok(()), "{good}");
    }
    for bad in ["", "/leading", "has space", "ünïcode", &"a".repeat(254)] {
        let err = check_name(bad).unwrap_err();
        assert!(err.contains("is not an asset name"), "{bad}: {err}");
    }
}

#[test]
fn events_get_growing_sequence_numbers_and_the_history_is_bounded() {
    let mut s = AssetStatus::default();
    for i in 1..=(MAX_EVENTS as u64 + 5) {
        match record(&s, event(Some(&format!("k{i}"))), ts("2024-03-01T00:00:00Z")) {
            Recorded::Added(next, sequence) => {
                assert_eq!(sequence, i);
                s = next;
            }
            other => panic!("event {i}: {other:?}"),
        }
    }
    assert_eq!(s.sequence, MAX_EVENTS as u64 + 5);
    assert_eq!(s.events.len(), MAX_EVENTS);
    assert_eq!(s.events[0].sequence, 6, "the oldest are dropped");
}

#[test]
fn an_event_whose_key_is_known_is_not_recorded_twice() {
    let Recorded::Added(s, 1) = record(
        &AssetStatus::default(),
        event(Some("tr-uid/1")),
        ts("2024-03-01T00:00:00Z"),
    ) else {
        panic!("first event not added")
    };
    assert_eq!(
        record(&s, event(Some("tr-uid/1")), ts("2024-03-01T01:00:00Z")),
        Recorded::Already(1)
    );
    assert!(matches!(
        record(&s, event(Some("tr-uid/2")), ts("2024-03-01T01:00:00Z")),
        Recorded::Added(_, 2)
    ));
    assert!(matches!(
        record(&s, event(None), ts("2024-03-01T01:00:00Z")),
        Recorded::Added(_, 2)
    ));
}

#[test]
fn extra_values_are_bounded() {
    let ok = BTreeMap::from([("date".to_string(), "2024-03-01".to_string())]);
    assert_eq!(check_extra(&ok), Ok(()));
    let bad_key = BTreeMap::from([("no spaces".to_string(), String::new())]);
    assert!(check_extra(&bad_key).unwrap_err().contains("extra key"));
    let long = BTreeMap::from([("k".to_string(), "x".repeat(MAX_EXTRA_VALUE + 1))]);
    assert!(check_extra(&long).unwrap_err().contains("more than the 1024"));
}

struct Case {
    trigger: AssetTrigger,
    consumed: Vec<AssetSequence>,
    assets: BTreeMap<String, AssetStatus>,
    unfinished: u32,
    max: Option<u32>,
}

impl Case {
    fn plan(&self, now: &str) -> Result<AssetRun, Hold> {
        plan_asset_run(&TriggerInput {
            trigger: &self.trigger,
            consumed: &self.consumed,
            assets: &self.assets,
            created: ts("2024-03-01T00:00:00Z"),
            unfinished: self.unfinished,
            max_active_runs: self.max,
            now: ts(now),
        })
    }
}

fn case(all: &[&str], any: &[&str], assets: &[(&str, AssetStatus)]) -> Case {
    Case {
        trigger: AssetTrigger {
            all: all.iter().map(|s| s.to_string()).collect(),
            any: any.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        consumed: Vec::new(),
        assets: assets.iter().map(|(n, s)| (n.to_string(), s.clone())).collect(),
        unfinished: 0,
        max: None,
    }
}

#[test]
fn all_of_waits_for_every_asset_then_takes_every_new_event() {
    let now = "2024-03-02T00:00:00Z";
    let sales = status(&[(1, "2024-03-01T01:00:00Z"), (2, "2024-03-01T02:00:00Z")]);
    let mut c = case(&["sales", "fx"], &[], &[("sales", sales.clone())]);
    assert_eq!(c.plan(now), Err(Hold::Waiting(vec!["fx".into()])));
    c.assets
        .insert("fx".into(), status(&[(7, "2024-03-01T03:00:00Z")]));
    let run = c.plan(now).expect("a run");
    let got: Vec<(Option<&str>, u64)> = run
        .events
        .iter()
        .map(|e| (e.asset.as_deref(), e.sequence))
        .collect();
    assert_eq!(got, [(Some("sales"), 1), (Some("sales"), 2), (Some("fx"), 7)]);
    assert_eq!(run.consumed, [seq("sales", 2), seq("fx", 7)]);
    assert_eq!(run.interval_start, ts("2024-03-01T01:00:00Z"));
    assert_eq!(run.interval_end, ts("2024-03-01T03:00:00Z"));
    // Logical dates, when events have them, win over the times the events were recorded.
    let mut dated = c.assets["fx"].clone();
    dated.events[0].logical_date = Some(Time(ts("2024-02-29T00:00:00Z")));
    c.assets.insert("fx".into(), dated);
    let run2 = c.plan(now).unwrap();
    assert_eq!(
        (run2.interval_start, run2.interval_end),
        (ts("2024-02-29T00:00:00Z"), ts("2024-02-29T00:00:00Z"))
    );
    // Once consumed, both must move again.
    c.consumed = run.consumed;
    assert_eq!(c.plan(now), Err(Hold::Waiting(vec!["sales".into(), "fx".into()])));
}

#[test]
fn any_of_runs_on_the_first_and_consumes_what_the_others_had() {
    let now = "2024-03-02T00:00:00Z";
    let mut c = case(&[], &["a", "b"], &[("a", status(&[(1, "2024-03-01T01:00:00Z")]))]);
    let run = c.plan(now).expect("a run");
    assert_eq!(run.consumed, [seq("a", 1)]);
    c.consumed = run.consumed;
    assert!(matches!(c.plan(now), Err(Hold::Waiting(_))));
    c.assets
        .insert("b".into(), status(&[(3, "2024-03-01T05:00:00Z")]));
    let run = c.plan(now).expect("b makes a run");
    assert_eq!(run.events.len(), 1);
    assert_eq!(run.events[0].asset.as_deref(), Some("b"));
}

#[test]
fn an_event_in_the_second_the_pipeline_was_created_counts() {
    // Kubernetes stores both times in whole seconds.
    let c = case(&["a"], &[], &[("a", status(&[(1, "2024-03-01T00:00:00Z")]))]);
    assert!(c.plan("2024-03-01T00:00:00Z").is_ok());
}

#[test]
fn events_before_the_pipeline_or_outside_the_window_do_not_count() {
    let old = status(&[(1, "2024-02-01T00:00:00Z")]);
    let c = case(&["a"], &[], &[("a", old)]);
    assert!(matches!(c.plan("2024-03-02T00:00:00Z"), Err(Hold::Waiting(_))));
    let mut c = case(
        &["a", "b"],
        &[],
        &[
            ("a", status(&[(1, "2024-03-01T01:00:00Z")])),
            ("b", status(&[(1, "2024-03-03T01:00:00Z")])),
        ],
    );
    c.trigger.within = Some("24h".into());
    assert_eq!(
        c.plan("2024-03-03T02:00:00Z"),
        Err(Hold::Waiting(vec!["a".into()]))
    );
    c.trigger.within = Some("72h".into());
    assert!(c.plan("2024-03-03T02:00:00Z").is_ok());
}

#[test]
fn suspended_or_full_pipelines_keep_counting_and_run_once_for_everything_later() {
    let now = "2024-03-02T00:00:00Z";
    let mut c = case(
        &["a"],
        &[],
        &[(
            "a",
            status(&[(1, "2024-03-01T01:00:00Z"), (2, "2024-03-01T02:00:00Z")]),
        )],
    );
    c.trigger.suspend = true;
    assert_eq!(c.plan(now), Err(Hold::Suspended));
    c.trigger.suspend = false;
    (c.unfinished, c.max) = (2, Some(2));
    assert_eq!(c.plan(now), Err(Hold::MaxActiveRuns));
    c.unfinished = 1;
    let run = c.plan(now).expect("one run for both events");
    assert_eq!(run.events.len(), 2);
}

#[test]
fn a_run_copies_at_most_its_share_of_events_the_newest() {
    let times: Vec<(u64, String)> = (1..=30)
        .map(|i| (i, format!("2024-03-01T{:02}:{:02}:00Z", i / 60, i % 60)))
        .collect();
    let events: Vec<(u64, &str)> = times.iter().map(|(i, t)| (*i, t.as_str())).collect();
    let c = case(&["a"], &[], &[("a", status(&events))]);
    let run = c.plan("2024-03-02T00:00:00Z").unwrap();
    assert_eq!(run.events.len(), MAX_RUN_EVENTS_PER_ASSET);
    assert_eq!(run.events.last().unwrap().sequence, 30);
    assert_eq!(run.consumed, [seq("a", 30)]);
}

#[test]
fn run_names_depend_on_what_was_consumed_before_not_on_newer_events() {
    let before = [seq("b", 3), seq("a", 1)];
    let name = run_name("report", "uid-1", &before);
    assert!(name.starts_with("report-asset-"), "{name}");
    assert_eq!(
        name,
        run_name("report", "uid-1", &[seq("a", 1), seq("b", 3)]),
        "order does not matter"
    );
    assert_ne!(name, run_name("report", "uid-1", &[seq("a", 2), seq("b", 3)]));
    assert_ne!(
        name,
        run_name("report", "uid-2", &before),
        "a recreated pipeline starts afresh"
    );
    assert!(names::is_dns_label(&run_name(&"p".repeat(253), "u", &before)));
}

#[test]
fn consumed_numbers_only_move_forward() {
    let now = [seq("a", 5), seq("b", 2)];
    let run = [seq("a", 4), seq("c", 1)];
    assert_eq!(advance(&now, &run), [seq("a", 5), seq("b", 2), seq("c", 1)]);
}

#[test]
fn triggers_name_their_assets_one_way() {
    let t = |all: &[&str], any: &[&str], within: Option<&str>| AssetTrigger {
        all: all.iter().map(|s| s.to_string()).collect(),
        any: any.iter().map(|s| s.to_string()).collect(),
        within: within.map(str::to_string),
        suspend: false,
    };
    assert!(check_trigger(&t(&["a"], &[], Some("1h"))).is_empty());
    let errors = |t: AssetTrigger| {
        check_trigger(&t)
            .into_iter()
            .map(|(f, m)| format!("{f}: {m}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        errors(t(&[], &[], None)),
        ["assets: name the assets in `all` or `any`"]
    );
    assert_eq!(
        errors(t(&["a"], &["b"], None)),
        ["assets: set either `all` or `any`, not both"]
    );
    let bad = errors(t(&["ok", "bad name"], &[], Some("soon")));
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad[0].starts_with("assets.all[1]: "), "{bad:?}");
    assert!(bad[1].starts_with("assets.within: "), "{bad:?}");
}
