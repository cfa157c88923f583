//! Reading Weir manifests from YAML files (several documents per file allowed), and the
//! offline validation behind `weir validate`.

use crate::api::{Pipeline, PipelineRun};
use crate::engine::validate;
use std::path::{Path, PathBuf};

/// A Weir object read from a file.
#[derive(Debug)]
pub enum Manifest {
    Pipeline(Box<Pipeline>),
    PipelineRun(Box<PipelineRun>),
    /// Some other kind, left alone.
    Other {
        kind: String,
    },
}

/// Parses every document of a YAML text. A document that is not a Weir kind is returned as
/// `Other`; a Weir kind that does not match its schema is an error naming the document.
pub fn parse(text: &str) -> Result<Vec<Manifest>, String> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let kind = doc
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let api_version = doc.get("apiVersion").and_then(|k| k.as_str()).unwrap_or_default();
        let is_weir = api_version.starts_with(&format!("{}/", crate::api::GROUP));
        let name = doc
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or("<unnamed>")
            .to_string();
        let context = |e: serde_json::Error| format!("document {} ({kind} {name}): {e}", i + 1);
        out.push(match (is_weir, kind.as_str()) {
            (true, "Pipeline") => Manifest::Pipeline(Box::new(serde_json::from_value(doc).map_err(context)?)),
            (true, "PipelineRun") => {
                Manifest::PipelineRun(Box::new(serde_json::from_value(doc).map_err(context)?))
            }
            _ => Manifest::Other { kind },
        });
    }
    Ok(out)
}

/// The outcome of validating files: one line per problem (and per valid object).
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub problems: usize,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems == 0
    }
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for entry in entries {
            if entry.is_dir() || entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                collect_files(&entry, out);
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
}

/// Validates every Pipeline and PipelineRun (inline spec) in the files and directories.
pub fn validate_paths(paths: &[PathBuf]) -> Report {
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files);
    }
    let mut report = Report::default();
    for file in files {
        let shown = file.display();
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                report.problems += 1;
                report.lines.push(format!("{shown}: cannot read: {e}"));
                continue;
            }
        };
        let manifests = match parse(&text) {
            Ok(m) => m,
            Err(e) => {
                report.problems += 1;
                report.lines.push(format!("{shown}: {e}"));
                continue;
            }
        };
        for m in manifests {
            let (what, spec) = match &m {
                Manifest::Pipeline(p) => (
                    format!("Pipeline {}", p.metadata.name.clone().unwrap_or_default()),
                    Some(&p.spec),
                ),
                Manifest::PipelineRun(r) => (
                    format!("PipelineRun {}", r.metadata.name.clone().unwrap_or_default()),
                    r.spec.pipeline_spec.as_ref(),
                ),
                Manifest::Other { .. } => continue,
            };
            match spec.map(validate) {
                Some(Err(errors)) => {
                    for e in errors.0 {
                        report.problems += 1;
                        report.lines.push(format!("{shown}: {what}: {e}"));
                    }
                }
                _ => report.lines.push(format!("{shown}: {what}: valid")),
            }
        }
    }
    report
}
