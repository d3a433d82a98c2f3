//! Email: the RFC 5322 message every email transport sends, and the SMTP
//! transport.
//!
//! In: an [`Outbound`] email. [`build_email`] turns it into a lettre
//! [`Message`] (multipart text + HTML, `Message-ID`, `List-Unsubscribe` for
//! marketing, DKIM-signed when the outbound carries a [`DkimConfig`]);
//! [`SmtpTransport`] hands it to a relay over a pooled SMTP connection. Out: a
//! [`Receipt`] holding the relay's reply, or a [`DispatchError`]: 4xx replies,
//! connection, timeout and TLS failures are transient; 5xx replies (including
//! a refused login) and local misconfiguration are permanent. The relay's own
//! text is always kept in the error.

use std::time::Duration;

use base64::Engine as _;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimSigningAlgorithm, DkimSigningKey,
};
use lettre::message::{Mailbox, Message, MultiPart, SinglePart, header};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransport, PoolConfig};
use lettre::{AsyncTransport, Tokio1Executor};
use tidings_sdk::types::{Category, Channel};

use super::{DispatchError, Outbound, Receipt, SendFuture, Transport};

/// How long connecting, and each SMTP command, may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A tenant's DKIM key: messages are signed RSA-SHA256, relaxed/relaxed, for
/// `d=domain`, `s=selector`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`): the key is published at
    /// `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// The RSA private key, PKCS#1 (`BEGIN RSA PRIVATE KEY`) or PKCS#8
    /// (`BEGIN PRIVATE KEY`) PEM.
    #[serde(rename = "private_key")]
    pub private_key_pem: String,
}

impl DkimConfig {
    /// Whether the key can sign: checked when a tenant configures it, so a
    /// bad key is refused then rather than at the first send.
    pub fn check(&self) -> Result<(), String> {
        if self.domain.is_empty() || self.selector.is_empty() {
            return Err("domain and selector are required".into());
        }
        let pem = rsa_pkcs1_pem(&self.private_key_pem).map_err(str::to_owned)?;
        DkimSigningKey::new(&pem, DkimSigningAlgorithm::Rsa)
            .map(|_| ())
            .map_err(|e| format!("not an RSA private key: {e}"))
    }
}

/// Headers the DKIM signature covers, each when the message has it.
const SIGNED_HEADERS: [&str; 7] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "List-Unsubscribe",
];

/// The email for `message`: multipart text + HTML when there is HTML,
/// `Message-ID: <id@tidings>`, `List-Unsubscribe` for marketing, and a
/// `DKIM-Signature` when `message.dkim` is set.
pub fn build_email(message: &Outbound<'_>) -> Result<Message, DispatchError> {
    let mailbox = |what: &str, value: &str| -> Result<Mailbox, DispatchError> {
        value
            .parse()
            .map_err(|e| DispatchError::permanent(format!("invalid {what} address `{value}`: {e}")))
    };
    let to = message
        .to
        .ok_or_else(|| DispatchError::permanent("the customer has no email address"))?;
    let rendered = message.rendered;
    let mut builder = Message::builder()
        .from(mailbox("From", message.from)?)
        .reply_to(mailbox("Reply-To", message.reply_to)?)
        .to(mailbox("To", to)?)
        .subject(rendered.subject.clone().unwrap_or_default())
        .message_id(Some(format!("<{}@tidings>", message.id)));
    if message.category == Category::Marketing {
        builder = builder.header(ListUnsubscribe(format!(
            "<mailto:{}?subject=unsubscribe>",
            message.reply_to
        )));
    }
    let text = SinglePart::builder()
        .header(header::ContentType::TEXT_PLAIN)
        .body(rendered.text.clone());
    let mut email = match &rendered.html {
        Some(html) => builder.multipart(
            MultiPart::alternative().singlepart(text).singlepart(
                SinglePart::builder()
                    .header(header::ContentType::TEXT_HTML)
                    .body(html.clone()),
            ),
        ),
        None => builder.singlepart(text),
    }
    .map_err(|e| DispatchError::permanent(format!("cannot build the email: {e}")))?;
    if let Some(dkim) = message.dkim {
        email.sign(&dkim.lettre_config(&email)?);
    }
    Ok(email)
}

impl DkimConfig {
    fn lettre_config(
        &self,
        email: &Message,
    ) -> Result<lettre::message::dkim::DkimConfig, DispatchError> {
        let pem = rsa_pkcs1_pem(&self.private_key_pem).map_err(|why| {
            DispatchError::permanent(format!(
                "DKIM key for {} is not an RSA private key: {why}",
                self.domain
            ))
        })?;
        let key = DkimSigningKey::new(&pem, DkimSigningAlgorithm::Rsa).map_err(|e| {
            DispatchError::permanent(format!(
                "DKIM key for {} is not an RSA private key: {e}",
                self.domain
            ))
        })?;
        let headers = SIGNED_HEADERS
            .iter()
            .filter(|name| email.headers().get_raw(name).is_some())
            .map(|name| header::HeaderName::new_from_ascii_str(name))
            .collect();
        Ok(lettre::message::dkim::DkimConfig::new(
            self.selector.clone(),
            self.domain.clone(),
            key,
            headers,
            DkimCanonicalization {
                header: DkimCanonicalizationType::Relaxed,
                body: DkimCanonicalizationType::Relaxed,
            },
        ))
    }
}

/// `pem` as PKCS#1 PEM, which is what lettre reads: PKCS#1 is returned as
/// is; the RSA key inside PKCS#8 (RFC 5208 `PrivateKeyInfo`) is unwrapped.
fn rsa_pkcs1_pem(pem: &str) -> Result<String, &'static str> {
    const PKCS8: (&str, &str) = ("-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----");
    // rsaEncryption, 1.2.840.113549.1.1.1
    const RSA_OID: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    let pem = pem.trim();
    if pem.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
        return Ok(pem.to_owned());
    }
    let body = pem
        .strip_prefix(PKCS8.0)
        .and_then(|rest| rest.strip_suffix(PKCS8.1))
        .ok_or("expected a PKCS#1 or PKCS#8 PEM")?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.split_whitespace().collect::<String>())
        .map_err(|_| "the PEM body is not base64")?;
    let (info, _) = der_element(&der, 0x30)?;
    let (_version, rest) = der_element(info, 0x02)?;
    let (algorithm, rest) = der_element(rest, 0x30)?;
    if !algorithm.starts_with(RSA_OID) {
        return Err("the PKCS#8 key is not RSA");
    }
    let (pkcs1, _) = der_element(rest, 0x04)?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs1);
    let mut out = String::from("-----BEGIN RSA PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END RSA PRIVATE KEY-----\n");
    Ok(out)
}

/// The contents of the DER element with `tag` at the start of `der`, and
/// what follows it.
fn der_element(der: &[u8], tag: u8) -> Result<(&[u8], &[u8]), &'static str> {
    const MALFORMED: &str = "malformed PKCS#8 DER";
    let (&found, rest) = der.split_first().ok_or(MALFORMED)?;
    if found != tag {
        return Err(MALFORMED);
    }
    let (&first, rest) = rest.split_first().ok_or(MALFORMED)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(MALFORMED);
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(MALFORMED);
    }
    Ok(rest.split_at(len))
}

/// The `List-Unsubscribe` header (RFC 2369) for marketing email.
#[derive(Debug, Clone)]
struct ListUnsubscribe(String);

impl header::Header for ListUnsubscribe {
    fn name() -> header::HeaderName {
        header::HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> header::HeaderValue {
        header::HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// A relay URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpConfigError {
    /// Neither `smtp://` nor `smtps://`.
    #[error("unsupported SMTP URL scheme in `{0}`: expected smtp:// or smtps://")]
    Scheme(String),
    /// No host after the scheme.
    #[error("the SMTP URL has no host")]
    MissingHost,
    /// The port is not a number in 1..=65535.
    #[error("invalid port `{0}` in the SMTP URL")]
    Port(String),
    /// A path after the authority.
    #[error("unexpected path `{0}` in the SMTP URL")]
    Path(String),
    /// An unknown query parameter or value.
    #[error(
        "unsupported SMTP URL parameter `{0}`: the only one is tls=starttls, on smtp:// (smtps:// is always TLS)"
    )]
    Parameter(String),
    /// A bad `%XX` escape, or user or password that is not UTF-8.
    #[error("invalid percent-encoding in the SMTP URL {0}")]
    Encoding(&'static str),
    /// TLS could not be set up for the host.
    #[error("cannot set up TLS for `{host}`: {message}")]
    Tls {
        /// The host.
        host: String,
        /// Why.
        message: String,
    },
}

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// `smtp://`: plain text, for local relays and tests.
    Plain,
    /// `smtp://…?tls=starttls`: STARTTLS, required.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

/// A parsed relay URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Relay {
    security: Security,
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

impl Relay {
    fn parse(url: &str) -> Result<Self, SmtpConfigError> {
        let (security, rest) = if let Some(rest) = url.strip_prefix("smtp://") {
            (Security::Plain, rest)
        } else if let Some(rest) = url.strip_prefix("smtps://") {
            (Security::Implicit, rest)
        } else {
            return Err(SmtpConfigError::Scheme(redact(url)));
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !path.is_empty() {
            return Err(SmtpConfigError::Path(format!("/{path}")));
        }
        let security = query.split('&').filter(|p| !p.is_empty()).try_fold(
            security,
            |security, param| match (security, param) {
                (Security::Plain, "tls=starttls") => Ok(Security::StartTls),
                _ => Err(SmtpConfigError::Parameter(param.to_owned())),
            },
        )?;
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let credentials = userinfo
            .map(|userinfo| {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                Ok::<_, SmtpConfigError>((percent_decode(user)?, percent_decode(password)?))
            })
            .transpose()?;
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or(SmtpConfigError::MissingHost)?;
                let port = match after {
                    "" => None,
                    _ => Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| SmtpConfigError::Port(after.to_owned()))?,
                    ),
                };
                (host, port)
            }
            None => match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            },
        };
        if host.is_empty() {
            return Err(SmtpConfigError::MissingHost);
        }
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| SmtpConfigError::Port(port.to_owned()))?,
            None => match security {
                Security::Plain => 25,
                Security::StartTls => 587,
                Security::Implicit => 465,
            },
        };
        Ok(Self {
            security,
            host: host.to_owned(),
            port,
            credentials,
        })
    }

    /// The URL without the password, for receipts and logs.
    fn endpoint(&self) -> String {
        let scheme = match self.security {
            Security::Implicit => "smtps",
            Security::Plain | Security::StartTls => "smtp",
        };
        let user = match &self.credentials {
            Some((user, _)) => format!("{user}@"),
            None => String::new(),
        };
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        let query = match self.security {
            Security::StartTls => "?tls=starttls",
            Security::Plain | Security::Implicit => "",
        };
        format!("{scheme}://{user}{host}:{}{query}", self.port)
    }
}

/// `url` with any password replaced, for error messages.
fn redact(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| {
        let (userinfo, hostport) = rest.split_once('@')?;
        let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
        Some(format!("{scheme}://{user}:***@{hostport}"))
    }) {
        Some(redacted) => redacted,
        None => url.to_owned(),
    }
}

fn percent_decode(s: &str) -> Result<String, SmtpConfigError> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail
                .get(..2)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(SmtpConfigError::Encoding(
                    "(a % not followed by two hex digits)",
                ))?;
            bytes.push(hex);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map_err(|_| SmtpConfigError::Encoding("(not UTF-8)"))
}

/// Connections kept open to one relay: as many as the message worker sends
/// to one destination at once, so none is opened per message.
const POOLED: u32 = crate::schedule::PER_DESTINATION as u32;

/// Sends email to an SMTP relay over pooled connections.
#[derive(Clone)]
pub struct SmtpTransport {
    inner: AsyncSmtpTransport<Tokio1Executor>,
    endpoint: String,
}

impl std::fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTransport")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl SmtpTransport {
    /// A transport for the relay at `url`:
    ///
    /// - `smtp://host:port`: plain text (local relays, tests);
    /// - `smtp://host:port?tls=starttls`: STARTTLS, required;
    /// - `smtps://host:port`: implicit TLS;
    ///
    /// with optional percent-encoded `user:password@` for AUTH (PLAIN or
    /// LOGIN). Ports default to 25, 587 and 465. Certificates are checked
    /// against the Mozilla roots (webpki-roots). Nothing is connected until
    /// the first send.
    pub fn from_url(url: &str) -> Result<Self, SmtpConfigError> {
        let relay = Relay::parse(url)?;
        let tls = |host: &str| {
            TlsParameters::builder(host.to_owned())
                .build_rustls()
                .map_err(|e| SmtpConfigError::Tls {
                    host: host.to_owned(),
                    message: e.to_string(),
                })
        };
        let tls = match relay.security {
            Security::Plain => Tls::None,
            Security::StartTls => Tls::Required(tls(&relay.host)?),
            Security::Implicit => Tls::Wrapper(tls(&relay.host)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&relay.host)
            .port(relay.port)
            .tls(tls)
            .timeout(Some(TIMEOUT))
            .pool_config(PoolConfig::new().max_size(POOLED));
        if let Some((user, password)) = &relay.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            inner: builder.build(),
            endpoint: relay.endpoint(),
        })
    }

    /// The relay, without the password.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn deliver(&self, message: &Outbound<'_>) -> Result<Receipt, DispatchError> {
        if message.channel != Channel::Email {
            return Err(DispatchError::permanent(format!(
                "the SMTP transport sends email only, not {:?}",
                message.channel
            )));
        }
        let email = build_email(message)?;
        let response = self
            .inner
            .send(email)
            .await
            .map_err(|e| classify(&self.endpoint, &e))?;
        let reply = response.message().collect::<Vec<_>>().join(" ");
        Ok(Receipt {
            transport_id: format!("{} {} {reply}", self.endpoint, response.code()),
            provider_id: None,
        })
    }
}

impl Transport for SmtpTransport {
    fn send<'a>(&'a self, message: &'a Outbound<'a>) -> SendFuture<'a> {
        Box::pin(self.deliver(message))
    }
}

/// Transient or permanent, keeping the relay's text and every cause.
///
/// | failure                                          | class     |
/// |--------------------------------------------------|-----------|
/// | 4xx reply (greylisting, mailbox busy, 451)       | transient |
/// | 5xx reply (unknown user, 535 bad login, 530)     | permanent |
/// | refused, reset, DNS, timeout, malformed reply    | transient |
/// | TLS handshake, including a bad certificate       | transient |
/// | client-side: no common AUTH mechanism, no STARTTLS | permanent |
///
/// A certificate failure is transient on purpose: it is almost always the
/// relay's operator mid-rotation, and retries end in `dead` anyway, with the
/// error recorded, if it is not fixed within the retry window.
fn classify(endpoint: &str, error: &lettre::transport::smtp::Error) -> DispatchError {
    let mut message = format!("SMTP {endpoint}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    if error.is_permanent() || error.is_client() {
        DispatchError::permanent(message)
    } else {
        DispatchError::transient(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(url: &str) -> Relay {
        Relay::parse(url).expect("valid URL")
    }

    #[test]
    fn relay_urls_select_security_port_and_credentials() {
        assert_eq!(
            relay("smtp://127.0.0.1:2525"),
            Relay {
                security: Security::Plain,
                host: "127.0.0.1".into(),
                port: 2525,
                credentials: None,
            }
        );
        assert_eq!(
            relay("smtp://mail.example.com?tls=starttls").security,
            Security::StartTls
        );
        assert_eq!(relay("smtp://mail.example.com?tls=starttls").port, 587);
        assert_eq!(relay("smtps://mail.example.com").port, 465);
        assert_eq!(relay("smtp://mail.example.com/").port, 25);
        let auth = relay("smtps://shop%40example.com:p%3Ass%20w@mail.example.com:2465");
        assert_eq!(auth.security, Security::Implicit);
        assert_eq!(
            auth.credentials,
            Some(("shop@example.com".into(), "p:ss w".into()))
        );
        assert_eq!(
            auth.endpoint(),
            "smtps://shop@example.com@mail.example.com:2465"
        );
        assert_eq!(relay("smtp://[::1]:25").host, "::1");
        assert_eq!(relay("smtp://[::1]").endpoint(), "smtp://[::1]:25");
    }

    #[test]
    fn bad_relay_urls_say_what_is_wrong() {
        let err = |url| Relay::parse(url).expect_err(url);
        assert_eq!(
            err("http://u:secret@host"),
            SmtpConfigError::Scheme("http://u:***@host".into())
        );
        assert_eq!(err("smtp://:25"), SmtpConfigError::MissingHost);
        assert_eq!(
            err("smtp://host:smtp"),
            SmtpConfigError::Port("smtp".into())
        );
        assert_eq!(err("smtp://host:0"), SmtpConfigError::Port("0".into()));
        assert_eq!(err("smtp://host/x"), SmtpConfigError::Path("/x".into()));
        assert_eq!(
            err("smtps://host?tls=starttls"),
            SmtpConfigError::Parameter("tls=starttls".into())
        );
        assert_eq!(
            err("smtp://host?tls=maybe"),
            SmtpConfigError::Parameter("tls=maybe".into())
        );
        assert!(matches!(
            err("smtp://u:%zz@host"),
            SmtpConfigError::Encoding(_)
        ));
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(rsa_pkcs1_pem("not a key").is_err());
        assert!(
            rsa_pkcs1_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").is_err()
        );
    }
}
