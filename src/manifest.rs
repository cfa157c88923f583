//! Reading Weir manifests from YAML files (several documents per file allowed), and the
//! offline checks behind `weir validate`, `weir run` and `weir graph`: YAML syntax, the CRD
//! schema the API server enforces, and engine validation, every problem with its file, line
//! and column.

pub mod schema;
pub mod yaml;

use crate::api::{Pipeline, PipelineRun, PipelineSpec, Pool};
use crate::engine::quote::{cut, q};
use crate::engine::{ValidationError, duration, run_source, validate};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use std::fmt;
use std::path::{Path, PathBuf};
use yaml::{Loc, Node, PathSegment, parse_path};

/// A Weir object read from a file.
#[derive(Debug)]
pub enum Manifest {
    Pipeline(Box<Pipeline>),
    PipelineRun(Box<PipelineRun>),
    Pool(Box<Pool>),
    /// Some other kind, left alone.
    Other {
        kind: String,
    },
}

/// Which check found a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The file could not be read.
    Io,
    /// YAML syntax.
    Yaml,
    /// The CRD schema (what the API server would refuse).
    Schema,
    /// Engine validation (what the operator would report on the resource).
    Engine,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Io => "io",
            Source::Yaml => "yaml",
            Source::Schema => "schema",
            Source::Engine => "engine",
        }
    }
}

/// One problem in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub loc: Loc,
    /// 1-based index of the (non-empty) YAML document.
    pub document: Option<usize>,
    /// `Pipeline etl`, when the problem is in an object.
    pub object: Option<ObjectId>,
    /// Field path from the object's root, for example `spec.tasks[0].dependsOn`.
    pub path: Option<String>,
    /// The task the problem is in, when engine validation names one.
    pub task: Option<String>,
    pub message: String,
    pub source: Source,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.loc.is_known() {
            write!(f, ":{}:{}", self.loc.line, self.loc.column)?;
        }
        f.write_str(": ")?;
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if let Some(path) = self.path.as_deref().filter(|p| !p.is_empty()) {
            write!(f, "{path}: ")?;
        }
        if let Some(task) = &self.task {
            write!(f, "task {}: ", q(task))?;
        }
        f.write_str(&self.message)
    }
}

impl Problem {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.file,
            "line": self.loc.is_known().then_some(self.loc.line),
            "column": self.loc.is_known().then_some(self.loc.column),
            "document": self.document,
            "kind": self.object.as_ref().map(|o| &o.kind),
            "name": self.object.as_ref().map(|o| &o.name),
            "source": self.source.as_str(),
            "path": self.path,
            "task": self.task,
            "message": self.message,
        })
    }
}

/// Kind and name of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectId {
    pub kind: String,
    pub name: String,
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", cut(&self.kind), cut(&self.name))
    }
}

/// A Weir object found in a file.
#[derive(Debug)]
pub struct Object {
    pub id: ObjectId,
    pub document: usize,
    pub loc: Loc,
    /// The object read into its type: `None` when problems kept it from being read.
    pub manifest: Option<Manifest>,
    /// Whether the object has no problem at all.
    pub valid: bool,
}

/// What was found in one file.
#[derive(Debug, Default)]
pub struct FileReport {
    pub file: String,
    pub objects: Vec<Object>,
    pub problems: Vec<Problem>,
    /// Documents that are not Weir objects (left alone).
    pub skipped: usize,
}

impl FileReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn pipeline_objects(&self) -> impl Iterator<Item = &Pipeline> {
        self.objects.iter().filter_map(|o| match &o.manifest {
            Some(Manifest::Pipeline(p)) => Some(&**p),
            _ => None,
        })
    }

    fn run_objects(&self) -> impl Iterator<Item = &PipelineRun> {
        self.objects.iter().filter_map(|o| match &o.manifest {
            Some(Manifest::PipelineRun(r)) => Some(&**r),
            _ => None,
        })
    }

    /// The Pools of the file, by name: their slots.
    pub fn pools(&self) -> std::collections::BTreeMap<String, u32> {
        self.objects
            .iter()
            .filter_map(|o| match &o.manifest {
                Some(Manifest::Pool(p)) => Some((name_of(&p.metadata), p.spec.slots)),
                _ => None,
            })
            .collect()
    }

    fn select_run<'a>(&'a self, run: &'a PipelineRun) -> Result<Selected<'a>, String> {
        let run_name = name_of(&run.metadata);
        if let Some(spec) = &run.spec.pipeline_spec {
            return Ok(Selected {
                pipeline_name: run_name,
                spec,
                run: Some(run),
            });
        }
        let wanted = run
            .spec
            .pipeline_ref
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let pipeline = self
            .pipeline_objects()
            .find(|p| name_of(&p.metadata) == wanted)
            .ok_or_else(|| {
                format!(
                    "PipelineRun {run_name} runs Pipeline {wanted}, which is not in {}",
                    self.file
                )
            })?;
        Ok(Selected {
            pipeline_name: wanted,
            spec: &pipeline.spec,
            run: Some(run),
        })
    }

    /// The pipeline a command acts on: the one named `wanted` (a Pipeline, or a PipelineRun
    /// and the pipeline it runs), else the file's only PipelineRun, else its only Pipeline.
    pub fn select(&self, wanted: Option<&str>) -> Result<Selected<'_>, String> {
        let of_run = |run| self.select_run(run);
        let choices = || {
            self.objects
                .iter()
                .filter(|o| matches!(o.manifest, Some(Manifest::Pipeline(_) | Manifest::PipelineRun(_))))
                .map(|o| o.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(wanted) = wanted {
            if let Some(p) = self.pipeline_objects().find(|p| name_of(&p.metadata) == wanted) {
                return Ok(Selected {
                    pipeline_name: wanted.to_string(),
                    spec: &p.spec,
                    run: None,
                });
            }
            if let Some(r) = self.run_objects().find(|r| name_of(&r.metadata) == wanted) {
                return of_run(r);
            }
            return Err(format!(
                "{} has no Pipeline or PipelineRun named {} (it has: {})",
                self.file,
                q(wanted),
                choices()
            ));
        }
        let runs: Vec<&PipelineRun> = self.run_objects().collect();
        let pipelines: Vec<&Pipeline> = self.pipeline_objects().collect();
        match (runs.as_slice(), pipelines.as_slice()) {
            ([run], _) => of_run(run),
            ([], [p]) => Ok(Selected {
                pipeline_name: name_of(&p.metadata),
                spec: &p.spec,
                run: None,
            }),
            ([], []) => Err(format!("{} holds no Pipeline or PipelineRun", self.file)),
            _ => Err(format!(
                "{} holds several pipelines and runs ({}): choose one with --pipeline NAME",
                self.file,
                choices()
            )),
        }
    }
}

fn name_of(meta: &kube::api::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

/// The pipeline a command acts on (see [`FileReport::select`]).
#[derive(Clone, Debug)]
pub struct Selected<'a> {
    /// Name of the Pipeline (or of the PipelineRun that holds it inline).
    pub pipeline_name: String,
    pub spec: &'a PipelineSpec,
    /// The PipelineRun chosen, if any: its timeout (and parameters) apply.
    pub run: Option<&'a PipelineRun>,
}

/// The schemas of Weir's kinds, taken from the generated CRDs: exactly what the API server
/// enforces.
pub struct Schemas {
    kinds: Vec<(String, JSONSchemaProps)>,
    checker: schema::Checker,
}

impl Default for Schemas {
    fn default() -> Self {
        Schemas::new()
    }
}

impl Schemas {
    pub fn new() -> Schemas {
        let kinds = crate::crd::all()
            .into_iter()
            .filter_map(|crd| {
                let kind = crd.spec.names.kind.clone();
                let version = crd
                    .spec
                    .versions
                    .into_iter()
                    .find(|v| v.name == crate::api::VERSION)?;
                Some((kind, version.schema?.open_api_v3_schema?))
            })
            .collect();
        Schemas {
            kinds,
            checker: schema::Checker::new(),
        }
    }

    fn get(&self, kind: &str) -> Option<&JSONSchemaProps> {
        self.kinds.iter().find(|(k, _)| k == kind).map(|(_, s)| s)
    }

    fn kind_names(&self) -> impl Iterator<Item = &str> + Clone {
        self.kinds.iter().map(|(k, _)| k.as_str())
    }
}

/// Reads and checks one file.
pub fn check_file(path: &Path, schemas: &Schemas) -> FileReport {
    let shown = path.display().to_string();
    match read(path) {
        Ok(text) => check_text(&text, &shown, schemas),
        Err(message) => FileReport {
            file: shown.clone(),
            problems: vec![Problem {
                file: shown,
                loc: Loc::default(),
                document: None,
                object: None,
                path: None,
                task: None,
                message,
                source: Source::Io,
            }],
            ..Default::default()
        },
    }
}

/// Reads a manifest file: no more than [`yaml::limits::FILE_BYTES`] of it, as UTF-8, or as
/// UTF-16 when it starts with a byte-order mark (what Windows editors and PowerShell's `>`
/// write; YAML allows both).
fn read(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let limit = yaml::limits::FILE_BYTES;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > limit {
        return Err(format!(
            "the file is more than {limit} bytes (4 MiB), the limit for a manifest file: split it"
        ));
    }
    let utf16 = match bytes.get(..2) {
        Some([0xff, 0xfe]) => Some(u16::from_le_bytes as fn([u8; 2]) -> u16),
        Some([0xfe, 0xff]) => Some(u16::from_be_bytes as fn([u8; 2]) -> u16),
        _ => None,
    };
    if let Some(unit) = utf16 {
        let units: Vec<u16> = bytes[2..]
            .chunks(2)
            .map(|c| unit([c[0], *c.get(1).unwrap_or(&0)]))
            .collect();
        return String::from_utf16(&units).map_err(|_| {
            "the file starts with a UTF-16 byte-order mark but is not UTF-16 text: save it as UTF-8"
                .to_string()
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        format!(
            "the file is not UTF-8 text (byte {at}, on line {line}, is not valid UTF-8): save it as UTF-8"
        )
    })
}

/// Checks every document of a YAML text (`file` is how the file is named in problems).
pub fn check_text(text: &str, file: &str, schemas: &Schemas) -> FileReport {
    let mut report = FileReport {
        file: file.to_string(),
        ..Default::default()
    };
    let docs = match yaml::parse_documents(text) {
        Ok(docs) => docs,
        Err(e) => {
            report.problems.push(Problem {
                file: file.to_string(),
                loc: e.loc,
                document: None,
                object: None,
                path: None,
                task: None,
                message: match e.limit {
                    Some(_) => e.message,
                    None => format!("invalid YAML: {}", e.message),
                },
                source: Source::Yaml,
            });
            return report;
        }
    };
    for (i, doc) in docs.iter().enumerate() {
        check_document(doc, i + 1, schemas, &mut report);
    }
    // In the order of the file, as an editor shows them.
    report.problems.sort_by_key(|p| (p.loc.line, p.loc.column));
    report
}

fn check_document(doc: &Node, document: usize, schemas: &Schemas, report: &mut FileReport) {
    let file = report.file.clone();
    let problem = |loc, object: Option<ObjectId>, path: Option<String>, message: String, source| Problem {
        file: file.clone(),
        loc,
        document: Some(document),
        object,
        path,
        task: None,
        message,
        source,
    };
    let api_version = doc.get_str("apiVersion").unwrap_or_default();
    let Some(version) = api_version.strip_prefix(&format!("{}/", crate::api::GROUP)) else {
        report.skipped += 1;
        return;
    };
    let name = doc
        .get("metadata")
        .and_then(|m| m.get_str("name").or(m.get_str("generateName")))
        .unwrap_or("<unnamed>");
    let kind = doc.get_str("kind").unwrap_or_default();
    let id = ObjectId {
        kind: if kind.is_empty() {
            "object".into()
        } else {
            kind.into()
        },
        name: name.into(),
    };
    let before = report.problems.len();
    if version != crate::api::VERSION {
        let loc = doc.get("apiVersion").map_or(doc.loc, |n| n.loc);
        let message = format!(
            "unknown apiVersion {}: Weir serves {}/{}",
            q(api_version),
            crate::api::GROUP,
            crate::api::VERSION
        );
        report.problems.push(problem(
            loc,
            Some(id.clone()),
            Some("apiVersion".into()),
            message,
            Source::Schema,
        ));
    }
    let Some(schema) = schemas.get(kind) else {
        let loc = doc.get("kind").map_or(doc.loc, |n| n.loc);
        let message = if kind.is_empty() {
            "missing kind".to_string()
        } else {
            let hint = schema::closest(kind, schemas.kind_names())
                .map(|k| format!(" (did you mean {k:?}?)"))
                .unwrap_or_default();
            let kinds: Vec<&str> = schemas.kind_names().collect();
            format!(
                "unknown kind {}{hint}: Weir's kinds are {}",
                q(kind),
                kinds.join(", ")
            )
        };
        report.problems.push(problem(
            loc,
            Some(id),
            Some("kind".into()),
            message,
            Source::Schema,
        ));
        return;
    };

    // 1. The schema, as the API server would check it.
    let mut schema_problems = Vec::new();
    let stored = schemas.checker.check_object(doc, schema, &mut schema_problems);

    // 2. Weir's own rules, on the object read into its type.
    let mut engine_problems: Vec<Problem> = Vec::new();
    let mut engine = |loc, path: String, task: Option<String>, message: String| {
        engine_problems.push(Problem {
            task,
            ..problem(loc, Some(id.clone()), Some(path), message, Source::Engine)
        })
    };
    match doc.get("metadata") {
        Some(meta) => {
            if let Some(n) = meta.get("name").filter(|n| n.as_str().is_some()) {
                let name = n.as_str().unwrap_or_default();
                if let Err(message) = check_object_name(name) {
                    engine(n.loc, "metadata.name".into(), None, message);
                }
            } else if meta.get("generateName").is_none() {
                engine(meta.loc, "metadata.name".into(), None, "missing name".into());
            }
        }
        None => engine(
            doc.loc,
            "metadata.name".into(),
            None,
            "missing metadata.name".into(),
        ),
    }
    let manifest = match kind {
        "Pipeline" => serde_json::from_value::<Pipeline>(stored)
            .map(|p| Manifest::Pipeline(Box::new(p)))
            .map_err(|e| e.to_string()),
        "PipelineRun" => serde_json::from_value::<PipelineRun>(stored)
            .map(|r| Manifest::PipelineRun(Box::new(r)))
            .map_err(|e| e.to_string()),
        "Pool" => serde_json::from_value::<Pool>(stored)
            .map(|p| Manifest::Pool(Box::new(p)))
            .map_err(|e| e.to_string()),
        other => Ok(Manifest::Other { kind: other.into() }),
    };
    let manifest = match manifest {
        Ok(m) => Some(m),
        Err(e) => {
            // The schema check explains why whenever it found something; otherwise the
            // types are stricter than the schema, and this is the only word on it.
            if schema_problems.is_empty() {
                engine(doc.loc, String::new(), None, e);
            }
            None
        }
    };
    let spec_at =
        |prefix: &str, spec: &PipelineSpec, engine: &mut dyn FnMut(Loc, String, Option<String>, String)| {
            if let Err(errors) = validate(spec) {
                for e in errors.0 {
                    let path = format!("{prefix}.{}", e.field);
                    engine(locate_engine_error(doc, &path, &e), path, e.task, e.message);
                }
            }
        };
    match &manifest {
        Some(Manifest::Pipeline(p)) => spec_at("spec", &p.spec, &mut engine),
        Some(Manifest::PipelineRun(r)) => {
            let spec_loc = doc.get("spec").map_or(doc.loc, |n| n.loc);
            if let Err(e) = run_source(&r.spec) {
                engine(spec_loc, e.field, None, e.message);
            }
            if let Some(Err(e)) = r.spec.timeout.as_deref().map(duration::parse) {
                let loc = doc.locate(&parse_path("spec.timeout"));
                engine(loc, "spec.timeout".into(), None, e);
            }
            if let Some(spec) = &r.spec.pipeline_spec {
                spec_at("spec.pipelineSpec", spec, &mut engine);
            }
        }
        _ => {}
    }

    // Where engine validation says the same thing better, its message is kept.
    schema_problems.retain(|s| {
        !(s.rule.is_refinable() && engine_problems.iter().any(|e| e.path.as_deref() == Some(&s.path)))
    });
    for s in schema_problems {
        report.problems.push(problem(
            s.loc,
            Some(id.clone()),
            Some(s.path),
            s.message,
            Source::Schema,
        ));
    }
    report.problems.extend(engine_problems);
    let valid = report.problems.len() == before;
    report.objects.push(Object {
        id,
        document,
        loc: doc.loc,
        manifest,
        valid,
    });
}

/// Names of Weir objects become parts of other objects' names and label values: a lowercase
/// RFC 1123 subdomain.
fn check_object_name(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!(
            "name is {} characters; at most 253 fit in a Kubernetes name",
            name.len()
        ));
    }
    let valid = !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{} is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
            q(name)
        ))
    }
}

/// Where an engine error points: the field, or for a dependency the very list item it names.
fn locate_engine_error(doc: &Node, path: &str, error: &ValidationError) -> Loc {
    let segments = parse_path(path);
    if let Some(list) = doc.at(&segments)
        && let yaml::Value::Seq(items) = &list.value
        && let Some(item) = items.iter().find(|i| {
            i.as_str()
                .is_some_and(|s| error.message.contains(&q(s).to_string()))
        })
    {
        return item.loc;
    }
    // A missing field (no image, say) is reported where its task starts.
    let mut segments = segments;
    while !segments.is_empty() && doc.at(&segments).is_none() {
        segments.pop();
    }
    if matches!(segments.last(), Some(PathSegment::Index(_)))
        && let Some(task) = doc.at(&segments)
    {
        return task.loc;
    }
    doc.locate(&segments)
}

/// The outcome of checking files.
#[derive(Debug, Default)]
pub struct Report {
    pub files: Vec<FileReport>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.files.iter().all(FileReport::ok)
    }

    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.files.iter().flat_map(|f| &f.problems)
    }

    pub fn object_count(&self) -> usize {
        self.files.iter().map(|f| f.objects.len()).sum()
    }

    /// One line per problem, then a summary line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for p in self.problems() {
            out.push_str(&p.to_string());
            out.push('\n');
        }
        let problems = self.problems().count();
        let bad_files = self.files.iter().filter(|f| !f.ok()).count();
        let checked = format!(
            "{} file{}, {} object{}",
            self.files.len(),
            plural(self.files.len()),
            self.object_count(),
            plural(self.object_count())
        );
        if problems == 0 {
            out.push_str(&format!("{checked}: all valid\n"));
        } else {
            out.push_str(&format!(
                "{checked}: {problems} problem{} in {bad_files} file{}\n",
                plural(problems),
                plural(bad_files)
            ));
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "valid": self.ok(),
            "files": self.files.iter().map(|f| serde_json::json!({
                "file": f.file,
                "valid": f.ok(),
                "objects": f.objects.iter().map(|o| serde_json::json!({
                    "kind": o.id.kind,
                    "name": o.id.name,
                    "document": o.document,
                    "line": o.loc.line,
                    "valid": o.valid,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "problems": self.problems().map(Problem::to_json).collect::<Vec<_>>(),
        })
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The files to check: files as given, directories searched for `*.yaml` / `*.yml`
/// (hidden directories skipped).
pub fn collect_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for entry in entries {
            let hidden = entry
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if entry.is_dir() {
                if !hidden {
                    walk(&entry, out);
                }
            } else if entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(entry);
            }
        }
    }
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut out);
        } else {
            out.push(path.clone());
        }
    }
    out
}

/// Checks every Pipeline and PipelineRun in the files and directories.
pub fn validate_paths(paths: &[PathBuf]) -> Report {
    let schemas = Schemas::new();
    let mut report = Report {
        files: collect_files(paths)
            .iter()
            .map(|f| check_file(f, &schemas))
            .collect(),
    };
    check_pool_sizes(&mut report);
    report
}

/// Tasks taking more slots than a Pool of the files has: in a cluster they would wait until
/// the pool is made larger. What a cluster's pools are is not known offline; the ones given
/// alongside the pipelines are.
fn check_pool_sizes(report: &mut Report) {
    let pools: std::collections::BTreeMap<String, u32> =
        report.files.iter().flat_map(FileReport::pools).collect();
    for file in &mut report.files {
        let mut found = Vec::new();
        for object in &file.objects {
            let Some(Manifest::Pipeline(p)) = &object.manifest else {
                continue;
            };
            let default_pool = p.spec.defaults.as_ref().and_then(|d| d.pool.as_ref());
            let tasks = p.spec.tasks.iter().map(|t| ("tasks", t));
            let finally = p.spec.finally.iter().map(|t| ("finally", t));
            for (i, (list, task)) in tasks.chain(finally).enumerate() {
                let index = if list == "tasks" {
                    i
                } else {
                    i - p.spec.tasks.len()
                };
                let (Some(pool), Some(need)) = (task.pool.as_ref().or(default_pool), task.pool_slots) else {
                    continue;
                };
                if let Some(&slots) = pools.get(pool).filter(|&&slots| need > slots) {
                    found.push(Problem {
                        file: file.file.clone(),
                        loc: object.loc,
                        document: Some(object.document),
                        object: Some(object.id.clone()),
                        path: Some(format!("spec.{list}[{index}].poolSlots")),
                        task: Some(task.name.clone()),
                        message: format!(
                            "takes {need} slot(s) of pool {}, which has only {slots}: it would wait until the pool is made larger",
                            q(pool)
                        ),
                        source: Source::Engine,
                    });
                }
            }
        }
        file.problems.extend(found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Vec<String> {
        check_text(yaml, "p.yaml", &Schemas::new())
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn schema_and_engine_problems_are_reported_together_with_lines() {
        let yaml = "\
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata:
  name: etl
spec:
  defaults:
    image: busybox
  tasks:
    - name: a
      dependsOn: [c]
    - name: b
      dependOn: [a]
      timeout: 5d
    - name: c
      dependsOn: [a, nope]
";
        assert_eq!(
            check(yaml),
            vec![
                "p.yaml:10:18: Pipeline etl: spec.tasks[0].dependsOn: task \"a\": dependency cycle: a -> c -> a",
                "p.yaml:12:7: Pipeline etl: spec.tasks[1].dependOn: unknown field \"dependOn\" (did you mean \"dependsOn\"?)",
                "p.yaml:13:16: Pipeline etl: spec.tasks[1].timeout: task \"b\": \"5d\" is not a duration: unknown unit \"d\" (use ms, s, m or h)",
                "p.yaml:15:22: Pipeline etl: spec.tasks[2].dependsOn: task \"c\": unknown task \"nope\"",
            ]
        );
    }

    #[test]
    fn other_documents_are_skipped_and_weir_kinds_checked() {
        let yaml = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
---
apiVersion: weir.dev/v1alpha1
kind: Pipline
metadata: {name: x}
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: Run_1}
spec: {timeout: 1d}
";
        let report = check_text(yaml, "p.yaml", &Schemas::new());
        assert_eq!(report.skipped, 1);
        let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            vec![
                "p.yaml:6:7: Pipline x: kind: unknown kind \"Pipline\" (did you mean \"Pipeline\"?): Weir's kinds are Pipeline, PipelineRun, TaskRun, Pool, PipelineRevision, Asset, Approval",
                "p.yaml:11:18: PipelineRun Run_1: metadata.name: \"Run_1\" is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
                "p.yaml:12:7: PipelineRun Run_1: spec: pipelineRef or pipelineSpec is required",
                // The engine's word on a duration replaces the schema's pattern.
                "p.yaml:12:17: PipelineRun Run_1: spec.timeout: \"1d\" is not a duration: unknown unit \"d\" (use ms, s, m or h)",
            ]
        );
    }

    fn read_bytes(name: &str, bytes: &[u8]) -> FileReport {
        let dir = std::env::temp_dir().join(format!("weir-manifest-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.yaml");
        std::fs::write(&path, bytes).unwrap();
        let report = check_file(&path, &Schemas::new());
        std::fs::remove_dir_all(&dir).unwrap();
        report
    }

    const VALID: &str = "apiVersion: weir.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n  tasks: [{name: a, image: busybox}]\n";

    #[test]
    fn utf16_files_with_a_byte_order_mark_are_read() {
        for big_endian in [false, true] {
            let mut bytes = if big_endian {
                vec![0xfe, 0xff]
            } else {
                vec![0xff, 0xfe]
            };
            for unit in VALID.encode_utf16() {
                bytes.extend(if big_endian {
                    unit.to_be_bytes()
                } else {
                    unit.to_le_bytes()
                });
            }
            let report = read_bytes(&format!("utf16-{big_endian}"), &bytes);
            assert!(report.ok(), "{:?}", report.problems);
            assert_eq!(report.objects.len(), 1);
        }
    }

    #[test]
    fn files_that_are_not_text_or_too_large_are_refused_before_parsing() {
        let mut bytes = VALID.as_bytes().to_vec();
        bytes.insert(VALID.find("busybox").unwrap(), 0xff);
        let report = read_bytes("latin1", &bytes);
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].source, Source::Io);
        assert_eq!(
            report.problems[0].message,
            "the file is not UTF-8 text (byte 98, on line 5, is not valid UTF-8): save it as UTF-8"
        );
        let report = read_bytes("huge", &vec![b'#'; yaml::limits::FILE_BYTES + 1]);
        assert_eq!(
            report.problems[0].message,
            "the file is more than 4194304 bytes (4 MiB), the limit for a manifest file: split it"
        );
        assert!(read_bytes("at-limit", &vec![b'#'; yaml::limits::FILE_BYTES]).ok());
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "x".repeat(100_000);
        let yaml = format!(
            "apiVersion: weir.dev/v1alpha1\nkind: Pipeline\nmetadata: {{name: p}}\nspec:\n  tasks:\n    - name: a\n      image: busybox\n      timeout: {long}\n      dependsOn: [{long}]\n"
        );
        let problems = check(&yaml);
        assert_eq!(problems.len(), 2, "{problems:?}");
        for p in &problems {
            assert!(p.len() < 400, "{p}");
            assert!(p.contains("(100000 characters)"), "{p}");
        }
    }

    #[test]
    fn yaml_errors_name_the_position() {
        assert_eq!(
            check("a: [1, 2\nb: 3\n"),
            vec!["p.yaml:2:2: invalid YAML: illegal placement of ':' indicator"]
        );
    }
}
