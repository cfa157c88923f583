//! HTML helpers: escaping, the page frame, state badges (colour AND a shape AND the word),
//! times and links.

use super::error::UiError;
use axum::response::{Html, IntoResponse, Response};
use jiff::Timestamp;

/// Text made safe for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment or query value, percent-encoded.
pub fn enc(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The shape that stands for a state beside its colour, so neither colour nor shape alone
/// carries it (the word is always written too).
pub fn shape(state: &str) -> &'static str {
    match state {
        "Succeeded" => "✓",
        "Failed" | "UpstreamFailed" => "✗",
        "Running" => "●",
        "Retrying" => "↻",
        "Skipped" => "–",
        "Cancelled" => "⊘",
        "Queued" => "…",
        "Waiting" => "⧖",
        _ => "○",
    }
}

/// `<span class="state state-failed" data-state="Failed">✗ Failed</span>`, with
/// `data-testid` when given.
pub fn badge(state: &str, testid: Option<&str>) -> String {
    let testid = testid
        .map(|t| format!(r#" data-testid="{}""#, esc(t)))
        .unwrap_or_default();
    format!(
        r#"<span class="state state-{}" data-state="{}"{testid}><span class="shape" aria-hidden="true">{}</span> <span class="word">{}</span></span>"#,
        esc(&state.to_ascii_lowercase()),
        esc(state),
        shape(state),
        esc(state)
    )
}

pub fn time(t: Option<Timestamp>) -> String {
    match t {
        Some(t) => format!(
            r#"<time datetime="{t}">{}</time>"#,
            t.strftime("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => "–".to_string(),
    }
}

/// `1h 2m 3s`, `45s`.
pub fn seconds(total: i64) -> String {
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

/// Where a page sits: its title, its namespace (for the header's links) and what the
/// frame needs to know of the person.
pub struct Frame<'a> {
    pub title: &'a str,
    pub namespace: &'a str,
    pub csrf: &'a str,
    pub token_mode: bool,
    /// `data-*` attributes of `<main>` that the script reads (the live-updates URL).
    pub main_attrs: String,
    pub scripts: &'a [&'a str],
}

pub fn page(frame: &Frame<'_>, body: &str) -> Html<String> {
    let ns = enc(frame.namespace);
    let logout = if frame.token_mode {
        format!(
            r#"<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="{}"><button type="submit" id="logout">Log out</button></form>"#,
            esc(frame.csrf)
        )
    } else {
        String::new()
    };
    let scripts: String = frame
        .scripts
        .iter()
        .map(|s| format!(r#"<script src="{s}" defer></script>"#))
        .collect();
    Html(format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<title>{title} · Weir</title>
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>{scripts}
</head>
<body>
<header><nav aria-label="main"><a href="/?namespace={ns}" id="nav-pipelines" class="brand">Weir</a> <a href="/?namespace={ns}" id="nav-home">Pipelines</a> <span class="ns">namespace <strong>{ns_text}</strong></span> {logout}</nav></header>
<main id="main"{attrs}>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"#,
        csrf = esc(frame.csrf),
        title = esc(frame.title),
        ns_text = esc(frame.namespace),
        attrs = frame.main_attrs,
    ))
}

/// An error as a page, with Kubernetes' own answer when it refused.
pub fn error_page(error: &UiError) -> Response {
    let kube = error
        .kubernetes
        .as_ref()
        .map(|k| {
            format!(
                r#"<p>Kubernetes answered <strong>{} {}</strong>: <span data-testid="kubernetes-message">{}</span></p>"#,
                k.code,
                esc(&k.reason),
                esc(&k.message)
            )
        })
        .unwrap_or_default();
    let problems = list(&error.problems, "problems");
    let frame = Frame {
        title: "Refused",
        namespace: "",
        csrf: "",
        token_mode: false,
        main_attrs: String::new(),
        scripts: &[],
    };
    let body = format!(
        r#"<div class="error" role="alert" id="error"><p data-testid="error-message">{}</p>{problems}{kube}</div><p><a href="/" id="back">Pipelines</a></p>"#,
        esc(&error.error)
    );
    (error.status, page(&frame, &body)).into_response()
}

/// A `<ul>` of texts (nothing when empty).
pub fn list(items: &[String], testid: &str) -> String {
    if items.is_empty() {
        return String::new();
    }
    let lis: String = items.iter().map(|p| format!("<li>{}</li>", esc(p))).collect();
    format!(r#"<ul data-testid="{testid}">{lis}</ul>"#)
}

/// A hidden CSRF field for a form.
pub fn csrf_field(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_states_carry_shape_and_word() {
        assert_eq!(esc(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(enc("a b/c[1]"), "a%20b%2Fc%5B1%5D");
        let b = badge("Failed", Some("cell"));
        assert!(b.contains(r#"class="state state-failed""#));
        assert!(b.contains("✗"));
        assert!(b.contains(r#"<span class="word">Failed</span>"#));
        assert!(b.contains(r#"data-testid="cell""#));
        assert_eq!(seconds(3725), "1h 2m 5s");
        assert_eq!(seconds(42), "42s");
    }
}
