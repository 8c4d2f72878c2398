//! Why a connection attempt failed, in words that name the fix: a TLS mismatch between the URL's
//! scheme and the listener (`amqp://` at a TLS port, `amqps://` at a plain one) and an untrusted
//! server certificate each get an error of their own ([`BrokerError::NotAmqp`],
//! [`BrokerError::TlsHandshake`], [`BrokerError::Certificate`]) that says which URL or file to
//! change, and that no retry loop waits on: they do not pass by waiting.
//!
//! lapin reports all of these as I/O or parse errors; the shapes told apart here are the ones the
//! end-to-end TLS test meets against a real TLS-only RabbitMQ (`e2e/tests/tls.rs`). Anything not
//! recognised stays the general [`BrokerError::Amqp`], which is retried as before.

use std::io::ErrorKind as Io;

use seedq_protocol::tls::is_tls_url;
use seedq_telemetry::{redact, Secrets};

use crate::BrokerError;

/// The error of one failed `Connection::connect_with_config` to `url`.
pub(crate) fn classify_connect_error(url: &str, source: lapin::Error) -> BrokerError {
    let address = redact(url);
    // The client's text could quote the URL: nothing leaves here with the password in it.
    let detail = Secrets::from_urls(&[url])
        .scrub(&error_text(&source))
        .into_owned();
    let lower = detail.to_ascii_lowercase();
    let io_kind = match source.kind() {
        lapin::ErrorKind::IOError(e) => Some(e.kind()),
        _ => None,
    };
    // Nothing listening, no route, a name that does not resolve: the service is down or the
    // address wrong, whatever the scheme; the general error (retried) says so.
    let unreachable = matches!(
        io_kind,
        Some(Io::ConnectionRefused | Io::TimedOut | Io::HostUnreachable | Io::NetworkUnreachable)
    ) || lower.contains("failed to lookup address");
    if unreachable {
        return BrokerError::Amqp {
            context: "connect".into(),
            source,
        };
    }
    if is_tls_url(url) {
        if lower.contains("certificate") || lower.contains("unknownissuer") {
            return BrokerError::Certificate { address, detail };
        }
        // rustls reading a plain listener's AMQP header as a TLS record, or the listener closing
        // on the ClientHello it cannot read.
        if matches!(
            io_kind,
            Some(Io::InvalidData | Io::UnexpectedEof | Io::ConnectionReset | Io::ConnectionAborted)
        ) || lower.contains("corrupt message")
            || lower.contains("handshake")
        {
            return BrokerError::TlsHandshake { address, detail };
        }
    } else {
        // A TLS listener answers plain text with a TLS alert (not an AMQP frame) or hangs up
        // before the AMQP handshake.
        let not_amqp = matches!(
            source.kind(),
            lapin::ErrorKind::ParsingError(_) | lapin::ErrorKind::InvalidProtocolVersion(_)
        ) || matches!(
            io_kind,
            Some(Io::InvalidData | Io::UnexpectedEof | Io::ConnectionReset | Io::ConnectionAborted)
        );
        if not_amqp {
            return BrokerError::NotAmqp { address, detail };
        }
    }
    BrokerError::Amqp {
        context: "connect".into(),
        source,
    }
}

/// The error and its causes, `: `-joined (lapin's own text often stops at "IO error").
fn error_text(e: &lapin::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::{Broker, BrokerError};

    /// A server that reads what the client sends first, answers `reply` and hangs up: enough of
    /// a listener to show the client each mismatch without a real broker.
    async fn one_shot_server(reply: &'static [u8]) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut first = [0u8; 512];
                let _ = socket.read(&mut first).await;
                let _ = socket.write_all(reply).await;
            }
        });
        port
    }

    async fn refusal(url: &str) -> BrokerError {
        match Broker::connect(url, "seedq-test@tls", "t-tls").await {
            Ok(_) => panic!("{url}: the fake server cannot take a connection"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn plain_amqp_at_a_tls_port_says_to_use_amqps() {
        // A TLS listener's answer to plain text: a fatal alert record (protocol_version).
        let port = one_shot_server(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]).await;
        let err = refusal(&format!("amqp://seedq:hunter22pw@127.0.0.1:{port}/%2f")).await;
        let text = err.to_string();
        assert!(matches!(err, BrokerError::NotAmqp { .. }), "{text}");
        assert!(err.is_permanent());
        assert!(text.contains("amqps://"), "{text}");
        assert!(!text.contains("hunter22pw"), "{text}");
        assert!(text.contains("amqp://seedq:***@127.0.0.1"), "{text}");
    }

    #[tokio::test]
    async fn amqps_at_a_plain_port_says_the_port_does_not_speak_tls() {
        // A plain listener's answer to a ClientHello: its own protocol header.
        let port = one_shot_server(b"AMQP\x00\x00\x09\x01").await;
        let err = refusal(&format!("amqps://seedq:hunter22pw@127.0.0.1:{port}/%2f")).await;
        let text = err.to_string();
        assert!(matches!(err, BrokerError::TlsHandshake { .. }), "{text}");
        assert!(err.is_permanent());
        assert!(!text.contains("hunter22pw"), "{text}");
    }

    #[tokio::test]
    async fn nothing_listening_stays_a_retried_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        for scheme in ["amqp", "amqps"] {
            let err = refusal(&format!("{scheme}://u:hunter22pw@127.0.0.1:{port}/%2f")).await;
            assert!(matches!(err, BrokerError::Amqp { .. }), "{err}");
            assert!(!err.is_permanent());
        }
    }
}
