//! Email notifications: one message sent over SMTP with `lettre` (tokio, rustls with the
//! system's roots). The message's first line is the subject, the whole text the body, and its
//! `Message-ID` comes from the idempotency key, the same on every try.

use crate::api::{EmailTarget, SmtpTls};
use crate::engine::notify::{self, TryOutcome};
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

/// The port when none is given: 587 (submission) with STARTTLS, 465 with TLS, 25 without.
pub fn default_port(tls: SmtpTls) -> u16 {
    match tls {
        SmtpTls::StartTls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    }
}

/// Builds the email: a permanent failure when an address does not parse.
fn build(email: &EmailTarget, text: &str, key: &str) -> Result<Message, TryOutcome> {
    let permanent = |e: String| TryOutcome::Permanent(e);
    let (subject, body) = notify::email_parts(text);
    let mut builder = Message::builder()
        .from(notify::check_mailbox(&email.from).map_err(permanent)?)
        .subject(subject)
        .message_id(Some(notify::message_id(key)))
        .header(ContentType::TEXT_PLAIN)
        .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")).to_string());
    for to in &email.to {
        builder = builder.to(notify::check_mailbox(to).map_err(permanent)?);
    }
    builder
        .body(body)
        .map_err(|e| TryOutcome::Permanent(format!("the email cannot be built: {e}")))
}

/// Sends the email once. A 5xx answer (or a TLS setup the server refuses) is permanent;
/// a connection error, a timeout or a 4xx answer is tried again.
pub async fn send(
    email: &EmailTarget,
    credentials: Option<Credentials>,
    text: &str,
    key: &str,
    timeout: Duration,
) -> TryOutcome {
    let message = match build(email, text, key) {
        Ok(m) => m,
        Err(outcome) => return outcome,
    };
    let tls = email.smtp.tls.unwrap_or_default();
    let host = email.smtp.host.trim();
    let server = format!("smtp://{host}:{}", email.smtp.port.unwrap_or(default_port(tls)));
    let builder = match tls {
        SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)),
        SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
    };
    let mut builder = match builder {
        Ok(b) => b
            .port(email.smtp.port.unwrap_or(default_port(tls)))
            .timeout(Some(timeout)),
        Err(e) => return TryOutcome::Permanent(format!("{server}: TLS setup: {e}")),
    };
    if let Some(c) = credentials {
        builder = builder.credentials(c);
    }
    let mailer = builder.build();
    match tokio::time::timeout(timeout * 2, mailer.send(message)).await {
        Err(_) => TryOutcome::Transient(format!("{server} did not answer within {timeout:?}")),
        Ok(Ok(_)) => TryOutcome::Sent,
        Ok(Err(e)) if e.is_permanent() => TryOutcome::Permanent(format!("{server}: {e}")),
        Ok(Err(e)) => TryOutcome::Transient(format!("{server}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SmtpServer;

    fn target(to: &str) -> EmailTarget {
        EmailTarget {
            to: vec![to.into()],
            from: "Weir <weir@example.com>".into(),
            smtp: SmtpServer {
                host: "127.0.0.1".into(),
                port: None,
                tls: None,
            },
            credentials_secret: None,
        }
    }

    #[test]
    fn the_email_has_the_first_line_as_subject_and_a_stable_message_id() {
        let m = build(
            &target("oncall@example.com"),
            "nightly Failed\nlast lines",
            "u/oncall/Failed/0",
        )
        .unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(raw.contains("Subject: nightly Failed\r\n"), "{raw}");
        assert!(
            raw.contains("Message-ID: <u/oncall/Failed/0@weir.dev>\r\n"),
            "{raw}"
        );
        assert!(raw.contains("To: oncall@example.com\r\n"), "{raw}");
        assert!(raw.ends_with("nightly Failed\r\nlast lines"), "{raw}");
        assert!(matches!(
            build(&target("nobody"), "x", "k"),
            Err(TryOutcome::Permanent(e)) if e.contains("not an email address")
        ));
        assert_eq!(default_port(SmtpTls::default()), 587);
    }
}
