//! Inputs the fuzz targets found a problem with, each kept as a plain test (these run in
//! every `cargo test`), with what was wrong and what fixed it.

use crate::manifest::{Stress, check_manifest, stress_text};

fn ok(text: &str) {
    if let Err(e) = check_manifest(text) {
        panic!("{e}");
    }
}

fn problems(text: &str) -> Vec<String> {
    weir::manifest::check_text(text, "f.yaml", &weir::manifest::Schemas::new())
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Found: with serde-saphyr's default limit of 64 levels, 50 levels of block lists
/// overflowed the stack of a test thread (2 MiB) in the debug build, where each level of
/// YAML nesting costs about 45 KiB of stack. Fixed: manifests nest at most 32 levels
/// (`yaml::limits::DEPTH`), with a message naming the limit.
#[test]
fn nesting_past_the_limit_is_refused_by_name() {
    // The stress manifest puts the nesting 5 levels down (spec.params[0].default).
    for flow in [false, true] {
        for maps in [false, true] {
            ok(&stress_text(&Stress::Nesting {
                depth: 27,
                flow,
                maps,
            }));
            ok(&stress_text(&Stress::Nesting {
                depth: 50,
                flow,
                maps,
            }));
            let text = stress_text(&Stress::Nesting {
                depth: 400,
                flow,
                maps,
            });
            let found = problems(&text);
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(
                found[0]
                    .ends_with("lists and mappings nest more than 32 levels deep, the limit for a manifest"),
                "{found:?}"
            );
        }
    }
}

/// Found: an alias bomb of 1 KB (5 levels of 9 aliases each, in block style) held 76 MiB
/// while checked, more than the ceiling of 64 MiB then set for any small input. It stays
/// under the YAML limits (fewer than 250,000 nodes), so that is what such a file may cost:
/// files with anchors have their own ceiling (`MANIFEST_WITH_ANCHORS`), documented.
#[test]
fn an_alias_bomb_under_the_limits_stays_within_its_ceiling() {
    ok(&stress_text(&Stress::AliasBomb {
        levels: 5,
        fanout: 9,
        flow: false,
    }));
    let bomb = stress_text(&Stress::AliasBomb {
        levels: 9,
        fanout: 9,
        flow: true,
    });
    ok(&bomb);
    let found = problems(&bomb);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("more than 250000 values, lists and mappings (each copy an alias makes counted)"),
        "{found:?}"
    );
}

/// Found: a message quoted a whole value: `parameter "p": expected a string, got` and then
/// the alias bomb's every element (2,319 bytes for a 1 KB file, and it grows with the
/// value). Fixed: messages quote values through `engine::quote`, which shortens them.
#[test]
fn messages_do_not_repeat_whole_values() {
    let text = stress_text(&Stress::AliasBomb {
        levels: 2,
        fanout: 6,
        flow: true,
    });
    let found = problems(&text);
    assert!(
        found.iter().any(|p| p.contains("expected a string, got {\"l0\"")),
        "{found:?}"
    );
    assert!(found.iter().all(|p| p.len() < 400), "{found:?}");
    ok(&text);
}

/// A 1 MiB value in each field a scalar can be, and as a key: every message stays short.
#[test]
fn huge_scalars_give_short_messages() {
    for field in 0..6 {
        for quoted in [false, true] {
            let text = stress_text(&Stress::Scalar {
                bytes: 1 << 20,
                field,
                quoted,
            });
            ok(&text);
            for p in problems(&text) {
                assert!(p.len() < 600, "field {field}: {p}");
            }
        }
    }
    let over = stress_text(&Stress::Scalar {
        bytes: 4 << 20,
        field: 0,
        quoted: false,
    });
    assert_eq!(
        problems(&over),
        [format!(
            "f.yaml: the file is {} bytes, more than the limit of 4194304 (4 MiB) for a manifest file: split it",
            over.len()
        )]
    );
}

/// A template that repeats a large param: rendering stops at its limit instead of building
/// gigabytes (100 KiB x 20,000 references here).
#[test]
fn a_template_repeating_a_large_value_stops_at_the_limit() {
    let big = "x".repeat(100 << 10);
    let refs = "{{ params.p }}".repeat(20_000);
    let text = format!(
        "apiVersion: weir.dev/v1alpha1\nkind: Pipeline\nmetadata: {{name: p}}\nspec:\n  params: [{{name: p, default: {big}}}]\n  tasks:\n    - name: a\n      image: busybox\n      args: [\"{refs}\"]\n"
    );
    assert!(problems(&text).is_empty());
    ok(&text);
}

/// Found: `weir::manifest::parse`, a second reader of manifest files that nothing used,
/// failed on YAML that `check_text` reads (a null mapping key: `metadata: {: x}` after an
/// edit), so the two disagreed on what a valid file is. Fixed: it is gone; `check_text` is
/// the one reader.
#[test]
fn a_null_key_is_a_schema_problem() {
    let text = "apiVersion: weir.dev/v1alpha1\nkind: Pipeline\nmetadata:\n : naame-too-long\nspec:\n  tasks: [{name: a, image: busybox}]\n";
    ok(text);
    let found = problems(text);
    assert!(
        found
            .iter()
            .any(|p| p.contains("metadata.null: unknown field \"null\"")),
        "{found:?}"
    );
}

/// Odd encodings: a UTF-8 byte-order mark, CR or CRLF line ends, tabs, a NUL, UTF-16 read
/// as if it were UTF-8.
#[test]
fn odd_encodings_are_read_or_named() {
    for kind in 0..6 {
        let text = stress_text(&Stress::Encoding { kind });
        ok(&text);
        let found = problems(&text);
        match kind {
            0..=2 => assert!(found.is_empty(), "{kind}: {found:?}"),
            _ => assert!(
                !found.is_empty() && found.iter().all(|p| p.contains("invalid YAML")),
                "{kind}: {found:?}"
            ),
        }
    }
}

/// Found: a valid pipeline of 1 MB, a `forEach.matrix` of two keys over a param of 100
/// strings of 10 KB, held 310 MiB while its first step was worked out (every one of the
/// 10,000 instances copies its values, then its resolved spec); with 3 keys and longer
/// strings, gigabytes, in the operator as in `weir run`. Fixed: a fan-out's values and
/// resolved specs may hold at most 32 MiB (`resolve::MAX_FAN_OUT_BYTES`), checked before
/// they are built; past it the task fails saying so.
#[test]
fn a_wide_matrix_of_long_values_fails_the_task_within_bounds() {
    ok(&stress_text(&Stress::FanOut {
        items: 100,
        bytes: 10_000,
        keys: 2,
    }));
    ok(&stress_text(&Stress::FanOut {
        items: 21,
        bytes: 190_000,
        keys: 3,
    }));
}

/// Found while writing the many-task stress input: "did you mean" compared every unknown
/// dependency with every task name, so 2,000 tasks each depending on a misspelt name took
/// 39 s of CPU (debug build; 10,000 tasks, the limit, about 16 minutes), and one misspelt
/// name of 20,000 characters beside a task named alike took 8 s. The operator validates a
/// Pipeline at every reconcile. Fixed: a validation suggests for at most 20 unknown
/// dependencies (`validate::MAX_SUGGESTIONS`), names over 100 characters get no suggestion,
/// and one search compares at most 250,000 pairs of characters (`suggest::MAX_WORK`).
#[test]
fn misspelt_dependencies_by_the_thousand_are_reported_quickly() {
    let text = stress_text(&Stress::ManyTasks {
        tasks: 2_000,
        name_len: 8,
    });
    ok(&text);
    let found = problems(&text);
    assert_eq!(found.len(), 2_000);
    assert_eq!(found.iter().filter(|p| p.contains("did you mean")).count(), 20);
    ok(&stress_text(&Stress::ManyTasks {
        tasks: 100,
        name_len: 20_000,
    }));
}
