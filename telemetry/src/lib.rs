#![warn(missing_docs)]
//! seedq-telemetry: both binaries' logs, human-readable text or one JSON object per line on
//! stderr (`--log-format`, `SEEDQ_LOG_FORMAT`), filtered by `RUST_LOG` (each binary gives its
//! default), with the broker and Redis passwords scrubbed from every line whatever logged it,
//! and the one URL redaction every message that names a URL uses ([`redact`]).
//!
//! JSON lines come from tracing-subscriber's json formatter with the event's fields flattened
//! to the top level (`{"timestamp":..,"level":"INFO","message":"chunk done","job":..,"chunk":..,
//! "slot":..,"target":..}`), so `jq 'select(.job == "...")'` or a log shipper reads them without
//! knowing seedq. Text stays the default: it is what a person at a terminal or in `journalctl`
//! reads; JSON is for machines and only when asked.
//!
//! Why scrub at the writer and not only at the call sites: the URLs are redacted wherever seedq
//! formats them ([`redact`]), but libraries (lapin, redis) format their own errors, and a
//! password that reaches one of their messages must still not reach a log file. The writer sees
//! each formatted event whole (tracing-subscriber writes one event per `write_all`), so a plain
//! substring replacement is enough.

use std::io::{IsTerminal as _, Write};
use std::sync::Arc;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (colours only on a terminal).
    Text,
    /// One JSON object per line, event fields at the top level.
    Json,
}

/// Passwords shorter than this are not scrubbed: replacing every "abc" in every line would make
/// the logs unreadable, and such a password protects nothing anyway.
const MIN_SECRET_LEN: usize = 4;

/// The strings no log line may contain: each URL's password as written (percent-encoded), decoded,
/// and as the JSON and Debug formatters escape them.
#[derive(Debug, Clone, Default)]
pub struct Secrets(Arc<[String]>);

impl Secrets {
    /// The secrets of these URLs (those without a password contribute none).
    pub fn from_urls(urls: &[&str]) -> Secrets {
        let mut all: Vec<String> = Vec::new();
        for password in urls.iter().filter_map(|u| url_password(u)) {
            for form in [password.to_string(), percent_decode(password)] {
                let escaped = form
                    .chars()
                    .flat_map(char::escape_default)
                    .collect::<String>();
                for variant in [form, escaped] {
                    if variant.len() >= MIN_SECRET_LEN && !all.contains(&variant) {
                        all.push(variant);
                    }
                }
            }
        }
        // Longest first: a secret that contains another is replaced whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Secrets(all.into())
    }

    /// These secrets and `extra` (e.g. the job key) as they are written and escaped.
    pub fn with(self, extra: &[&str]) -> Secrets {
        let mut all: Vec<String> = self.0.iter().cloned().collect();
        for secret in extra {
            let escaped = secret
                .chars()
                .flat_map(char::escape_default)
                .collect::<String>();
            for variant in [secret.to_string(), escaped] {
                if variant.len() >= MIN_SECRET_LEN && !all.contains(&variant) {
                    all.push(variant);
                }
            }
        }
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Secrets(all.into())
    }

    /// `text` with every secret replaced by `***`.
    pub fn scrub<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.0.iter().any(|s| text.contains(s.as_str())) {
            return std::borrow::Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for secret in self.0.iter() {
            out = out.replace(secret.as_str(), "***");
        }
        std::borrow::Cow::Owned(out)
    }
}

/// stderr, through [`Secrets::scrub`].
struct ScrubbingWriter {
    secrets: Secrets,
}

impl Write for ScrubbingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        match std::str::from_utf8(buf) {
            Ok(text) => err.write_all(self.secrets.scrub(text).as_bytes())?,
            // Not text (never seen from the formatters): nothing to match a password against
            // reliably, so write it lossily decoded and scrubbed rather than raw.
            Err(_) => {
                let text = String::from_utf8_lossy(buf);
                err.write_all(self.secrets.scrub(&text).as_bytes())?
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Installs the global subscriber. In JSON mode panics are logged as JSON events too (the
/// default hook would print plain text into a stream that promises one JSON object per line).
/// `default_filter` applies when `RUST_LOG` is unset (e.g. `info,lapin=warn`).
pub fn init(format: LogFormat, secrets: Secrets, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let writer = move || ScrubbingWriter {
        secrets: secrets.clone(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder
            // Escape codes belong on a terminal, not in journald or a log file.
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        LogFormat::Json => {
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .init();
            std::panic::set_hook(Box::new(|info| {
                let backtrace = std::backtrace::Backtrace::capture();
                tracing::error!(panic = %info, backtrace = %backtrace, "panicked");
            }));
        }
    }
}

/// The password part of `scheme://user:password@host...`, if any.
fn url_password(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    // The LAST '@' ends the user info: a password may contain an unencoded '@', a host never.
    let (userinfo, _) = rest.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password).filter(|p| !p.is_empty())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `scheme://user:secret@host` -> `scheme://user:***@host`, for messages that name a URL.
/// Total: the LAST `@` ends the user info (a password may hold `@` and `:` unencoded), and a
/// value without `scheme://` that holds an `@` loses everything before it.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_string(),
        };
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://{userinfo}@{host}"),
    }
}

/// Refuses a URL the AMQP/Redis clients would echo back whole in their parse errors (lapin's
/// "Invalid URL: '<the url>'" for anything without `scheme://`), which would put a password in
/// the log before the writer could know it was one.
pub fn check_url(flag: &'static str, url: &str) -> Result<(), BadUrl> {
    if url.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
    }) {
        Ok(())
    } else {
        Err(BadUrl { flag })
    }
}

/// A URL flag whose value is not `scheme://...` (the value is never shown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{flag} must look like scheme://[user:password@]host[:port][/path] \
     (the value is not shown: it may hold a password)"
)]
pub struct BadUrl {
    /// The flag that carried the URL.
    pub flag: &'static str,
}

/// The secrets a process may take from a file instead of its environment, as docker and
/// systemd mount them: `<NAME>_FILE` names a file whose content (without the final newline) is
/// the value of `<NAME>`.
pub const SECRET_VARIABLES: &[&str] = &["SEEDQ_AMQP_URL", "SEEDQ_REDIS_URL", "SEEDQ_JOB_KEY"];

/// A `<NAME>_FILE` that could not be used (the file's content is never shown).
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// Both the variable and its file variable are set: which one wins would be a guess.
    #[error("both {name} and {name}_FILE are set: unset one of them")]
    Both {
        /// The variable.
        name: &'static str,
    },
    /// The file cannot be read.
    #[error("{name}_FILE names {path}, which cannot be read ({source}): check the path and that this user may read it")]
    Unreadable {
        /// The variable.
        name: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("{name}_FILE names {path}, which is empty")]
    Empty {
        /// The variable.
        name: &'static str,
        /// The file.
        path: String,
    },
}

/// Optional settings read from the environment for which an empty value means "not set" (a
/// deployment's env file or compose `${VAR:-}` writes `VAR=` for an unused one).
pub const OPTIONAL_VARIABLES: &[&str] = &["SEEDQ_TLS_CA_FILE"];

/// For each of [`SECRET_VARIABLES`] whose `_FILE` variable is set, reads the file and sets the
/// variable itself from it, so that the command line parser (which reads the environment) sees
/// it like any other; and unsets each of [`OPTIONAL_VARIABLES`] that is empty. Call first thing
/// in `main`, before any other thread exists (setting the environment is not thread-safe).
pub fn load_secret_files() -> Result<(), SecretFileError> {
    for &name in OPTIONAL_VARIABLES {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(name);
        }
    }
    for &name in SECRET_VARIABLES {
        let file_var = format!("{name}_FILE");
        let Some(path) = std::env::var_os(&file_var) else {
            continue;
        };
        if std::env::var_os(name).is_some() {
            return Err(SecretFileError::Both { name });
        }
        let shown = path.to_string_lossy().into_owned();
        let text =
            std::fs::read_to_string(&path).map_err(|source| SecretFileError::Unreadable {
                name,
                path: shown.clone(),
                source,
            })?;
        let value = text.trim();
        if value.is_empty() {
            return Err(SecretFileError::Empty { name, path: shown });
        }
        std::env::set_var(name, value);
        std::env::remove_var(&file_var);
    }
    Ok(())
}

/// Redacts every URL-looking word of a command line (job labels keep the producer's command).
pub fn redact_args(line: &str) -> String {
    line.split(' ')
        .map(|w| {
            if w.contains("://") {
                redact(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("amqp://seedq:s3cret@rabbit:5672/%2f"),
            "amqp://seedq:***@rabbit:5672/%2f"
        );
        assert_eq!(
            redact("redis://:pw@redis:6379/"),
            "redis://:***@redis:6379/"
        );
        assert_eq!(redact("redis://redis:6379/"), "redis://redis:6379/");
        // The TLS schemes are URLs like any other.
        assert_eq!(
            redact("amqps://seedq:s3cret@rabbit:5671/%2f"),
            "amqps://seedq:***@rabbit:5671/%2f"
        );
        assert_eq!(
            redact("rediss://default:p@ss:w@redis:6379/"),
            "rediss://default:***@redis:6379/"
        );
        assert_eq!(
            redact_args("seedq-producer --redis-url rediss://u:hunter22@h/ status"),
            "seedq-producer --redis-url rediss://u:***@h/ status"
        );
        assert_eq!(redact("amqp://user@h/"), "amqp://user@h/");
        // An unencoded '@' in the password must not leave its tail visible.
        assert_eq!(redact("amqp://u:p@ss@h/"), "amqp://u:***@h/");
        // ':' and '@' together, and more than one of each.
        assert_eq!(
            redact("amqp://seedq:p@ss:w0rd@x:y@rabbit:5672/%2f"),
            "amqp://seedq:***@rabbit:5672/%2f"
        );
        assert_eq!(
            redact("redis://default:a:b:c@h:6379/"),
            "redis://default:***@h:6379/"
        );
        // Malformed: no scheme, a port that is not one, a whole list in one string.
        assert_eq!(redact("seedq:hunter22@rabbit:5672"), "***@rabbit:5672");
        assert_eq!(
            redact("redis://default:hunter22@h:notaport/"),
            "redis://default:***@h:notaport/"
        );
        let list = redact("amqp://a:hunter22@h1/%2f,amqp://b:hunter33@h2/%2f");
        assert!(!list.contains("hunter"), "{list}");
        assert_eq!(
            redact_args("seedq-producer --amqp-url amqp://u:hunter22@h/ sieve"),
            "seedq-producer --amqp-url amqp://u:***@h/ sieve"
        );
    }

    #[test]
    fn error_chains_are_scrubbed_of_every_password_shape() {
        let secrets = Secrets::from_urls(&[
            "amqp://seedq:p@ss:w0rd-1@rabbit/%2f",
            "redis://default:r3dis%3Apw%40x@127.0.0.1:6379/",
        ])
        .with(&["job-key-0123456789abcdef"]);
        let chain = anyhow_like_chain(&[
            "connecting to RabbitMQ at amqp://seedq:***@rabbit/%2f",
            "Invalid URL: 'amqp://seedq:p@ss:w0rd-1@rabbit/%2f'",
            "AUTH failed: WRONGPASS r3dis:pw@x",
            "signing with job-key-0123456789abcdef",
            r#"{"detail":"p@ss:w0rd-1 "r3dis:pw@x""}"#,
        ]);
        let scrubbed = secrets.scrub(&chain);
        for secret in [
            "p@ss:w0rd-1",
            "r3dis:pw@x",
            "r3dis%3Apw%40x",
            "job-key-0123456789abcdef",
        ] {
            assert!(!scrubbed.contains(secret), "{secret} in {scrubbed}");
        }
        assert!(scrubbed.contains("connecting to RabbitMQ"), "{scrubbed}");
    }

    /// `{e:#}` of an anyhow chain: the messages joined by ": ".
    fn anyhow_like_chain(parts: &[&str]) -> String {
        parts.join(": ")
    }

    #[test]
    fn secrets_cover_encoded_decoded_and_escaped_forms() {
        let secrets = Secrets::from_urls(&[
            "amqps://seedq:tls-pw-amqps@rabbit:5671/%2f",
            "rediss://default:tls-pw-rediss@redis:6379/",
            "amqp://seedq:pa%40ss%22word@rabbit:5672/%2f",
            "redis://default:r3dis-pw@127.0.0.1:6379/",
            "redis://127.0.0.1:6379/",
            "amqp://u:abc@h/",
        ]);
        for line in [
            "url amqp://seedq:pa%40ss%22word@rabbit",
            "decoded pa@ss\"word here",
            r#"{"error":"auth pa@ss\"word failed"}"#,
            "redis r3dis-pw",
            "invalid peer certificate at amqps://seedq:tls-pw-amqps@rabbit",
            "WRONGPASS tls-pw-rediss",
        ] {
            let scrubbed = secrets.scrub(line);
            assert!(scrubbed.contains("***"), "{line} -> {scrubbed}");
            for forbidden in [
                "pa%40ss",
                "pa@ss",
                "r3dis-pw",
                "tls-pw-amqps",
                "tls-pw-rediss",
            ] {
                assert!(!scrubbed.contains(forbidden), "{line} -> {scrubbed}");
            }
        }
        // Too short to scrub (see MIN_SECRET_LEN), and lines without secrets are untouched.
        assert_eq!(secrets.scrub("abc def"), "abc def");
        assert!(matches!(
            secrets.scrub("nothing to hide"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn urls_without_a_scheme_are_refused_without_being_echoed() {
        assert!(check_url("--amqp-url", "amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        assert!(check_url("--redis-url", "redis+unix:///run/redis.sock").is_ok());
        let err = check_url("--amqp-url", "amqp:seedq:hunter22@rabbit").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("--amqp-url"), "{text}");
        assert!(!text.contains("hunter22"), "{text}");
        assert!(check_url("--redis-url", "://x").is_err());
    }
}
