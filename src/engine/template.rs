//! Templates in task fields: `{{ params.region }}`, `{{ run.name }}`,
//! `{{ run.logicalDate }}`, `{{ tasks.extract.outputs.rows }}`, `{{ item }}`,
//! `{{ item.region }}`. Parsed once for validation (every reference checked before anything
//! runs) and rendered when a task starts, with the values known by then.

use super::quote::q;
use serde_json::Value;
use std::fmt;

/// Most bytes one template may render to. A short template can repeat a large value many
/// times (`{{ params.big }}` a thousand times over), so rendering stops with an error as soon
/// as the text would pass this, before it is built. (A task's whole resolved spec is held to
/// less; this bounds the memory spent finding that out.)
pub const MAX_RENDERED_BYTES: usize = 1 << 20;

/// What a `{{ ... }}` refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    /// `params.<name>`
    Param(String),
    /// `run.<field>`: name, namespace, uid, logicalDate, dataIntervalStart, dataIntervalEnd
    Run(RunField),
    /// `tasks.<task>.outputs.<key>`
    Output { task: String, key: String },
    /// `item` (a `forEach.items` element) or `item.<key>` (a `forEach.matrix` dimension)
    Item(Option<String>),
    /// `assetEvents`: the events that started an asset-triggered run, as a JSON list
    AssetEvents,
    /// `assetEvent.<field>` or `assetEvent.extra.<key>`: of the newest event that started
    /// the run (for `extra`, the newest that has the key)
    AssetEvent(AssetEventField),
    /// `notification.<field>`: only in a notification's message.
    Notification(NoticeField),
}

/// What `assetEvent.` reads of a triggering event.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AssetEventField {
    Asset,
    Sequence,
    Time,
    LogicalDate,
    PipelineRun,
    Source,
    Extra(String),
}

impl AssetEventField {
    const NAMED: [(&'static str, AssetEventField); 6] = [
        ("asset", AssetEventField::Asset),
        ("sequence", AssetEventField::Sequence),
        ("time", AssetEventField::Time),
        ("logicalDate", AssetEventField::LogicalDate),
        ("pipelineRun", AssetEventField::PipelineRun),
        ("source", AssetEventField::Source),
    ];

    fn parse(parts: &[&str]) -> Result<AssetEventField, String> {
        match parts {
            ["extra", key] if is_ident(key) => Ok(AssetEventField::Extra(key.to_string())),
            [field] => AssetEventField::NAMED
                .iter()
                .find(|(n, _)| n == field)
                .map(|(_, f)| f.clone())
                .ok_or_else(|| {
                    let known: Vec<&str> = AssetEventField::NAMED.iter().map(|(n, _)| *n).collect();
                    format!(
                        "unknown assetEvent field {} (known: {}, extra.KEY)",
                        q(field),
                        known.join(", ")
                    )
                }),
            _ => Err(format!(
                "{} is not a known reference (use assetEvent.FIELD or assetEvent.extra.KEY)",
                q(&format!("assetEvent.{}", parts.join(".")))
            )),
        }
    }
}

/// What a notification's message can read of the event it tells about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoticeField {
    Event,
    Task,
    Reason,
    Message,
    Link,
    Logs,
}

impl NoticeField {
    const ALL: [(&'static str, NoticeField); 6] = [
        ("event", NoticeField::Event),
        ("task", NoticeField::Task),
        ("reason", NoticeField::Reason),
        ("message", NoticeField::Message),
        ("link", NoticeField::Link),
        ("logs", NoticeField::Logs),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, f)| *f == self).map_or("?", |(n, _)| n)
    }
}

/// The run fields templates can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunField {
    Name,
    Namespace,
    Uid,
    Pipeline,
    LogicalDate,
    DataIntervalStart,
    DataIntervalEnd,
}

impl RunField {
    const ALL: [(&'static str, RunField); 7] = [
        ("name", RunField::Name),
        ("namespace", RunField::Namespace),
        ("uid", RunField::Uid),
        ("pipeline", RunField::Pipeline),
        ("logicalDate", RunField::LogicalDate),
        ("dataIntervalStart", RunField::DataIntervalStart),
        ("dataIntervalEnd", RunField::DataIntervalEnd),
    ];
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Param(p) => write!(f, "params.{p}"),
            Reference::Run(field) => {
                let name = RunField::ALL
                    .iter()
                    .find(|(_, v)| v == field)
                    .map_or("?", |(n, _)| n);
                write!(f, "run.{name}")
            }
            Reference::Output { task, key } => write!(f, "tasks.{task}.outputs.{key}"),
            Reference::Item(None) => f.write_str("item"),
            Reference::Item(Some(k)) => write!(f, "item.{k}"),
            Reference::AssetEvents => f.write_str("assetEvents"),
            Reference::AssetEvent(AssetEventField::Extra(k)) => write!(f, "assetEvent.extra.{k}"),
            Reference::AssetEvent(field) => {
                let name = AssetEventField::NAMED
                    .iter()
                    .find(|(_, v)| v == field)
                    .map_or("?", |(n, _)| n);
                write!(f, "assetEvent.{name}")
            }
            Reference::Notification(field) => write!(f, "notification.{}", field.name()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Text(String),
    Ref(Reference),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(Vec<Segment>);

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn parse_reference(expr: &str) -> Result<Reference, String> {
    let parts: Vec<&str> = expr.split('.').collect();
    match parts.as_slice() {
        ["params", name] if is_ident(name) => Ok(Reference::Param(name.to_string())),
        ["run", field] => RunField::ALL
            .iter()
            .find(|(n, _)| n == field)
            .map(|(_, f)| Reference::Run(*f))
            .ok_or_else(|| {
                let known: Vec<&str> = RunField::ALL.iter().map(|(n, _)| *n).collect();
                format!("unknown run field {} (known: {})", q(field), known.join(", "))
            }),
        ["tasks", task, "outputs", key] if is_ident(task) && is_ident(key) => Ok(Reference::Output {
            task: task.to_string(),
            key: key.to_string(),
        }),
        ["notification", field] => NoticeField::ALL
            .iter()
            .find(|(n, _)| n == field)
            .map(|(_, f)| Reference::Notification(*f))
            .ok_or_else(|| {
                let known: Vec<&str> = NoticeField::ALL.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown notification field {} (known: {})",
                    q(field),
                    known.join(", ")
                )
            }),
        ["item"] => Ok(Reference::Item(None)),
        ["item", key] if is_ident(key) => Ok(Reference::Item(Some(key.to_string()))),
        ["assetEvents"] => Ok(Reference::AssetEvents),
        ["assetEvent", rest @ ..] => AssetEventField::parse(rest).map(Reference::AssetEvent),
        _ => Err(format!(
            "{} is not a known reference (use params.NAME, run.FIELD, tasks.TASK.outputs.KEY, item, item.KEY, assetEvents or assetEvent.FIELD)",
            q(expr)
        )),
    }
}

impl Template {
    /// Parses `text`. `{{` without a matching `}}`, or an unknown reference, is an error.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                segments.push(Segment::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed \"{{{{\" in {}", q(text)))?;
            let expr = after[..close].trim();
            if expr.is_empty() {
                return Err(format!("empty \"{{{{ }}}}\" in {}", q(text)));
            }
            segments.push(Segment::Ref(parse_reference(expr)?));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_string()));
        }
        Ok(Template(segments))
    }

    /// Every reference in the template.
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.0.iter().filter_map(|s| match s {
            Segment::Ref(r) => Some(r),
            Segment::Text(_) => None,
        })
    }

    /// True when the template is exactly one reference (`"{{ params.list }}"`), whose value
    /// may then be a list rather than text.
    pub fn single_reference(&self) -> Option<&Reference> {
        match self.0.as_slice() {
            [Segment::Ref(r)] => Some(r),
            _ => None,
        }
    }

    /// Renders the template; a list or object value is written as JSON. Text that would
    /// pass [`MAX_RENDERED_BYTES`] is an error.
    pub fn render(&self, values: &dyn Values) -> Result<String, String> {
        let mut out = String::new();
        for segment in &self.0 {
            let value;
            let piece = match segment {
                Segment::Text(t) => t.as_str(),
                Segment::Ref(r) => {
                    value = match values.get(r)? {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    value.as_str()
                }
            };
            if out.len() + piece.len() > MAX_RENDERED_BYTES {
                return Err(format!(
                    "renders to more than {MAX_RENDERED_BYTES} bytes (1 MiB), the limit for one field: pass large values by reference, for example a storage path"
                ));
            }
            out.push_str(piece);
        }
        Ok(out)
    }
}

/// Where rendered values come from.
pub trait Values {
    /// The value of a reference, or why it has none.
    fn get(&self, reference: &Reference) -> Result<Value, String>;
}

/// Renders `text` in one step (parse + render).
pub fn render(text: &str, values: &dyn Values) -> Result<String, String> {
    Template::parse(text)?.render(values)
}

/// The value of a string that may be a whole-value template of a list: `"{{ params.xs }}"`
/// gives the list itself, anything else renders to a string.
pub fn render_value(text: &str, values: &dyn Values) -> Result<Value, String> {
    let template = Template::parse(text)?;
    match template.single_reference() {
        Some(r) => {
            let value = values.get(r)?;
            // An output is text; a JSON list in it is a list.
            if let Value::String(s) = &value
                && let Ok(list @ Value::Array(_)) = serde_json::from_str::<Value>(s)
            {
                return Ok(list);
            }
            Ok(value)
        }
        None => template.render(values).map(Value::String),
    }
}

/// Condition operators of `when`.
pub fn holds(op: crate::api::WhenOperator, input: &str, values: &[String]) -> bool {
    use crate::api::WhenOperator::*;
    match op {
        Equals => values.first().is_some_and(|v| v == input),
        NotEquals => values.first().is_none_or(|v| v != input),
        In => values.iter().any(|v| v == input),
        NotIn => values.iter().all(|v| v != input),
    }
}

/// Every template of a task, with the field it is in, for validation.
pub fn templates_of(task: &crate::api::TaskSpec) -> Vec<(String, Result<Template, String>)> {
    let mut out = Vec::new();
    let mut add = |field: String, text: &str| {
        if text.contains("{{") {
            out.push((field, Template::parse(text)));
        }
    };
    for (i, c) in task.command.iter().enumerate() {
        add(format!("command[{i}]"), c);
    }
    for (i, a) in task.args.iter().enumerate() {
        add(format!("args[{i}]"), a);
    }
    for (i, var) in task.env.iter().enumerate() {
        if let Some(v) = &var.value {
            add(format!("env[{i}].value"), v);
        }
    }
    for (i, a) in task.artifacts.iter().enumerate() {
        add(format!("artifacts[{i}].path"), &a.path);
    }
    for (i, input) in task.inputs.iter().enumerate() {
        add(format!("inputs[{i}].path"), &input.path);
    }
    for (i, w) in task.when.iter().enumerate() {
        add(format!("when[{i}].input"), &w.input);
        for (j, v) in w.values.iter().enumerate() {
            add(format!("when[{i}].values[{j}]"), v);
        }
    }
    if let Some(wait) = &task.wait {
        if let Some(other) = &wait.pipeline_run {
            add("wait.pipelineRun.pipeline".into(), &other.pipeline);
            if let Some(t) = &other.task {
                add("wait.pipelineRun.task".into(), t);
            }
        }
        if let Some(object) = &wait.object {
            add("wait.object.name".into(), &object.name);
            if let Some(f) = &object.field {
                add("wait.object.field.value".into(), &f.value);
            }
        }
        if let Some(asset) = &wait.asset {
            add("wait.asset.name".into(), &asset.name);
        }
    }
    if let Some(fe) = &task.for_each {
        if let Some(Value::String(s)) = &fe.items {
            add("forEach.items".into(), s);
        }
        for (name, v) in &fe.matrix {
            if let Value::String(s) = v {
                add(format!("forEach.matrix.{name}"), s);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<String, Value>);

    impl Values for Map {
        fn get(&self, r: &Reference) -> Result<Value, String> {
            self.0
                .get(&r.to_string())
                .cloned()
                .ok_or_else(|| format!("no value for {r}"))
        }
    }

    fn values() -> Map {
        Map(HashMap::from([
            ("params.region".to_string(), Value::String("eu-west".into())),
            ("params.parts".to_string(), serde_json::json!(["a", "b"])),
            ("run.name".to_string(), Value::String("etl-1".into())),
            (
                "tasks.list.outputs.files".to_string(),
                Value::String(r#"["x.csv","y.csv"]"#.into()),
            ),
            ("item".to_string(), Value::String("a".into())),
        ]))
    }

    #[test]
    fn renders_references_and_text() {
        let out = render(
            "load {{params.region}} for {{ run.name }} item={{ item }}",
            &values(),
        )
        .unwrap();
        assert_eq!(out, "load eu-west for etl-1 item=a");
        assert_eq!(render("no templates", &values()).unwrap(), "no templates");
        assert_eq!(render("{{ params.parts }}", &values()).unwrap(), r#"["a","b"]"#);
    }

    #[test]
    fn whole_value_templates_keep_lists() {
        assert_eq!(
            render_value("{{ params.parts }}", &values()).unwrap(),
            serde_json::json!(["a", "b"])
        );
        assert_eq!(
            render_value("{{ tasks.list.outputs.files }}", &values()).unwrap(),
            serde_json::json!(["x.csv", "y.csv"])
        );
        assert_eq!(
            render_value("p-{{ params.region }}", &values()).unwrap(),
            Value::String("p-eu-west".into())
        );
    }

    #[test]
    fn parse_errors_name_the_problem() {
        assert!(Template::parse("{{ params.x").unwrap_err().contains("unclosed"));
        assert!(Template::parse("{{ }}").unwrap_err().contains("empty"));
        assert!(
            Template::parse("{{ run.date }}")
                .unwrap_err()
                .contains("unknown run field \"date\"")
        );
        assert!(
            Template::parse("{{ tasks.a.result }}")
                .unwrap_err()
                .contains("not a known reference")
        );
        assert!(
            render("{{ params.missing }}", &values())
                .unwrap_err()
                .contains("params.missing")
        );
    }

    #[test]
    fn rendering_stops_at_the_limit() {
        struct Big;
        impl Values for Big {
            fn get(&self, _: &Reference) -> Result<Value, String> {
                Ok(Value::String("x".repeat(100_000)))
            }
        }
        let ten = "{{ params.p }}".repeat(10);
        assert_eq!(render(&ten, &Big).unwrap().len(), 1_000_000);
        let eleven = "{{ params.p }}".repeat(11);
        let err = render(&eleven, &Big).unwrap_err();
        assert!(err.contains("more than 1048576 bytes"), "{err}");
    }

    #[test]
    fn references_are_listed() {
        let t = Template::parse("{{ params.a }}-{{ tasks.t.outputs.k }}-{{ item.region }}").unwrap();
        let refs: Vec<String> = t.references().map(|r| r.to_string()).collect();
        assert_eq!(refs, vec!["params.a", "tasks.t.outputs.k", "item.region"]);
    }

    #[test]
    fn when_operators() {
        use crate::api::WhenOperator::*;
        let vals = vec!["ok".to_string(), "warn".to_string()];
        assert!(holds(In, "ok", &vals));
        assert!(!holds(NotIn, "warn", &vals));
        assert!(holds(Equals, "ok", &vals[..1]));
        assert!(holds(NotEquals, "bad", &vals[..1]));
    }
}
