//! Outbound HTTP for the provider and webhook transports: JSON or form
//! POSTs with a timeout, and a guard against server-side request forgery for
//! URLs a tenant chose.
//!
//! In: a URL, headers and a body. [`HttpClient::post`] sends them from a
//! blocking thread (ureq under `spawn_blocking`). Out: an [`HttpReply`] for
//! every status the server answers with (its body cut to
//! [`MAX_REPLY_BYTES`]); [`classify_status`] then turns non-2xx replies into
//! errors. How it fails:
//!
//! | failure                                                    | class     |
//! |------------------------------------------------------------|-----------|
//! | refused, reset, DNS failure, timeout, TLS, malformed reply | transient |
//! | 408, 425, 429, 5xx                                         | transient |
//! | other 4xx, 3xx (redirects are never followed)              | permanent |
//! | a guarded URL that is not http(s) or reaches a private address | permanent |
//! | a URL or header that cannot be sent at all                 | permanent |
//!
//! The guard (for `guarded` posts, unless [`HttpConfig::allow_private`]):
//! the host name must not be `localhost`, `*.localhost` or
//! `metadata.google.internal`, and every address it resolves to must pass
//! [`forbidden_reason`]. The check runs inside the resolver ureq connects
//! with, so the connection goes to exactly the addresses that were checked:
//! DNS cannot answer differently between the check and the connect.
//! Environment proxies (`HTTP_PROXY` …) are not used, for the same reason.
//!
//! Messages name the URL without user info, query or fragment, and never a
//! header value.

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use super::DispatchError;

/// The most of a reply body that is kept.
pub const MAX_REPLY_BYTES: usize = 16 * 1024;

/// How much of a reply body an error message quotes.
const EXCERPT_CHARS: usize = 200;

/// How outbound HTTP behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// The most a request may take, from resolving the host to the last
    /// byte of the reply.
    pub timeout: Duration,
    /// The operator allows guarded posts to loopback and private addresses
    /// (a webhook receiver on the same network; tests).
    pub allow_private: bool,
}

impl Default for HttpConfig {
    /// 10 seconds; private destinations refused.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            allow_private: false,
        }
    }
}

/// What a server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    /// The HTTP status.
    pub status: u16,
    /// The body, lossily UTF-8, at most [`MAX_REPLY_BYTES`].
    pub body: String,
}

/// POSTs with a timeout, no redirects and no proxy; cheap to clone (the
/// connection pools are shared).
#[derive(Clone)]
pub struct HttpClient {
    /// Connects wherever the URL says.
    direct: ureq::Agent,
    /// Refuses forbidden destinations, unless the operator allows them.
    guarded: ureq::Agent,
    config: HttpConfig,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client; nothing is connected until the first post.
    pub fn new(config: HttpConfig) -> Self {
        let agent_config = || {
            Config::builder()
                .http_status_as_error(false)
                // A redirect to an internal address would get past the guard,
                // and a provider API that redirects is misconfigured.
                .max_redirects(0)
                .proxy(None)
                .timeout_global(Some(config.timeout))
                .user_agent(concat!("tidings/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        let direct = ureq::Agent::with_parts(
            agent_config(),
            DefaultConnector::default(),
            DefaultResolver::default(),
        );
        let guarded = match config.allow_private {
            true => direct.clone(),
            false => ureq::Agent::with_parts(
                agent_config(),
                DefaultConnector::default(),
                GuardedResolver::default(),
            ),
        };
        Self {
            direct,
            guarded,
            config,
        }
    }

    /// The configuration it was built from.
    pub fn config(&self) -> HttpConfig {
        self.config
    }

    /// POST `body` to `url` as `content_type` with `headers`.
    ///
    /// `guarded`: `url` came from a tenant, so it must pass the guard unless
    /// the operator allows private destinations. Every status comes back as
    /// a reply; errors are for requests that got no reply (transient) or
    /// could not be made (permanent, including a refused destination).
    pub async fn post(
        &self,
        url: &str,
        guarded: bool,
        content_type: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<HttpReply, DispatchError> {
        let shown = display_url(url);
        let guard = guarded && !self.config.allow_private;
        if guard {
            check_url(url).map_err(|refused| refused.into_error(&shown))?;
        }
        let agent = match guard {
            true => self.guarded.clone(),
            false => self.direct.clone(),
        };
        let url = url.to_owned();
        let content_type = content_type.to_owned();
        let timeout = self.config.timeout;
        let shown_in_task = shown.clone();
        tokio::task::spawn_blocking(move || {
            post_blocking(
                &agent,
                &url,
                &shown_in_task,
                timeout,
                &content_type,
                headers,
                &body,
            )
        })
        .await
        .map_err(|e| match e.is_panic() {
            true => DispatchError::permanent(format!("POST {shown}: the HTTP worker panicked")),
            false => DispatchError::transient(format!("POST {shown}: cancelled at shutdown")),
        })?
    }
}

fn post_blocking(
    agent: &ureq::Agent,
    url: &str,
    shown: &str,
    timeout: Duration,
    content_type: &str,
    headers: Vec<(String, String)>,
    body: &[u8],
) -> Result<HttpReply, DispatchError> {
    let mut request = agent.post(url).header("content-type", content_type);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request
        .send(body)
        .map_err(|e| request_error(shown, timeout, &e))?;
    let status = response.status().as_u16();
    let mut bytes = Vec::new();
    // The status is what counts: a body cut short by the timeout still
    // leaves a reply (re-sending an accepted message would duplicate it).
    if let Err(e) = response
        .into_body()
        .into_reader()
        .take(MAX_REPLY_BYTES as u64)
        .read_to_end(&mut bytes)
    {
        tracing::debug!(url = shown, status, error = %e, "reading the reply body failed");
    }
    Ok(HttpReply {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// Transient unless the request could never succeed.
fn request_error(shown: &str, timeout: Duration, error: &ureq::Error) -> DispatchError {
    use ureq::Error as E;
    if let E::Io(io) = error
        && let Some(refused) = io.get_ref().and_then(|e| e.downcast_ref::<Refused>())
    {
        return refused.clone().into_error(shown);
    }
    match error {
        E::Timeout(which) => DispatchError::transient(format!(
            "POST {shown}: no reply within {timeout:?} (the {which} timeout)"
        )),
        E::HostNotFound => DispatchError::transient(format!("POST {shown}: host not found")),
        // ureq's text for a bad URI repeats the URI, query and all.
        E::BadUri(_) => DispatchError::permanent(format!("POST {shown}: invalid URL")),
        E::Http(_) | E::BodyExceedsLimit(_) | E::InvalidProxyUrl => {
            DispatchError::permanent(format!("POST {shown}: cannot send the request: {error}"))
        }
        E::RedirectFailed | E::TooManyRedirects => DispatchError::permanent(format!(
            "POST {shown}: redirected, and redirects are not followed"
        )),
        _ => DispatchError::transient(format!("POST {shown}: {error}")),
    }
}

/// `Ok` for 2xx; otherwise an error naming `what`, the status and the start
/// of the body: transient for 408, 425, 429 and 5xx, permanent for the rest
/// (3xx included: redirects are not followed).
pub fn classify_status(what: &str, reply: &HttpReply) -> Result<(), DispatchError> {
    let status = reply.status;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let excerpt = excerpt(&reply.body);
    let mut message = format!("{what}: HTTP {status}");
    if !excerpt.is_empty() {
        message.push_str(": ");
        message.push_str(&excerpt);
    }
    Err(match status {
        408 | 425 | 429 | 500..=599 => DispatchError::transient(message),
        300..=399 => DispatchError::permanent(format!("{message} (redirects are not followed)")),
        _ => DispatchError::permanent(message),
    })
}

/// The first [`EXCERPT_CHARS`] characters of `body`, whitespace collapsed.
pub fn excerpt(body: &str) -> String {
    let collapsed = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match collapsed.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &collapsed[..cut]),
        None => collapsed,
    }
}

/// `url` as it may appear in messages and receipts: no user info, query or
/// fragment.
pub fn display_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(slash) => rest.split_at(slash),
                None => (rest, ""),
            };
            let host = authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Why a guarded destination was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refused {
    host: String,
    address: Option<IpAddr>,
    reason: &'static str,
}

impl Refused {
    fn into_error(self, shown: &str) -> DispatchError {
        let what = match self.address {
            Some(ip) if ip.to_string() != self.host => {
                format!("{} resolves to {ip}, a {} address", self.host, self.reason)
            }
            Some(_) => format!("{} is a {} address", self.host, self.reason),
            None => format!("`{}` is {}", self.host, self.reason),
        };
        DispatchError::permanent(format!(
            "refused to POST to {shown}: {what}; private and internal destinations are \
             blocked unless the operator allows them"
        ))
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.address {
            Some(ip) => write!(f, "{} ({ip}) is a {} address", self.host, self.reason),
            None => write!(f, "{} is {}", self.host, self.reason),
        }
    }
}

impl std::error::Error for Refused {}

/// The scheme and host name of a guarded URL; addresses are checked when
/// they are resolved.
fn check_url(url: &str) -> Result<(), Refused> {
    let refused = |host: &str, reason| Refused {
        host: host.to_owned(),
        address: None,
        reason,
    };
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("http" | "https")) {
        return Err(refused(&display_url(url), "not an http:// or https:// URL"));
    }
    let uri: Uri = url
        .parse()
        .map_err(|_| refused(&display_url(url), "not a valid URL"))?;
    let host = uri.host().unwrap_or_default();
    if host.is_empty() {
        return Err(refused(&display_url(url), "a URL without a host"));
    }
    check_host(host)
}

/// A host name (or literal address) from a URL.
fn check_host(host: &str) -> Result<(), Refused> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return match forbidden_reason(ip) {
            Some(reason) => Err(Refused {
                host: bare.to_owned(),
                address: Some(ip),
                reason,
            }),
            None => Ok(()),
        };
    }
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    let reason = if name == "localhost" || name.ends_with(".localhost") {
        Some("a loopback host name")
    } else if name == "metadata.google.internal" {
        Some("a cloud metadata host name")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Refused {
            host: host.to_owned(),
            address: None,
            reason,
        }),
        None => Ok(()),
    }
}

/// Why a guarded post must not reach `ip`, or `None` when it may.
///
/// Refused: loopback, private (RFC 1918), shared/CGNAT (RFC 6598),
/// link-local (with the cloud metadata address), `0.0.0.0/8`, IETF protocol
/// assignments, documentation, benchmarking, reserved, multicast and
/// broadcast; for IPv6 the unspecified and loopback addresses, unique local
/// `fc00::/7`, link-local `fe80::/10`, deprecated site-local `fec0::/10`,
/// multicast, documentation, benchmarking, discard-only, Teredo and ORCHID;
/// and IPv6 addresses that carry an IPv4 one (mapped `::ffff:a.b.c.d`,
/// compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) when that
/// IPv4 address is refused. See the IANA special-purpose address registries
/// (<https://www.iana.org/assignments/iana-ipv4-special-registry>,
/// <https://www.iana.org/assignments/iana-ipv6-special-registry>).
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip == Ipv4Addr::BROADCAST => "broadcast",
        _ if ip == Ipv4Addr::UNSPECIFIED => "unspecified",
        (0, _, _) => "\"this network\" (0.0.0.0/8)",
        (10, _, _) => "private (RFC 1918)",
        (172, 16..=31, _) => "private (RFC 1918)",
        (192, 168, _) => "private (RFC 1918)",
        (100, 64..=127, _) => "shared/CGNAT (100.64.0.0/10)",
        (127, _, _) => "loopback",
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "cloud metadata (link-local)",
        (169, 254, _) => "link-local",
        (192, 0, 0) => "IETF protocol assignment (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (192, 88, 99) => "6to4 relay anycast (192.88.99.0/24)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let embedded_v4 = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // Forms that carry an IPv4 address: refused when that address is.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    match segments {
        // IPv4-compatible (deprecated) `::a.b.c.d`.
        [0, 0, 0, 0, 0, 0, high, low] => return forbidden_v4(embedded_v4(high, low)),
        // NAT64 well-known prefix (RFC 6052).
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => return forbidden_v4(embedded_v4(high, low)),
        // 6to4 (RFC 3056): the IPv4 address follows the prefix.
        [0x2002, high, low, ..] => return forbidden_v4(embedded_v4(high, low)),
        _ => {}
    }
    let first = segments[0];
    Some(match segments {
        _ if first & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
        _ if first & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        _ if first & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        _ if first & 0xff00 == 0xff00 => "multicast",
        [0x2001, 0x0db8, ..] => "documentation (2001:db8::/32)",
        [0x3fff, second, ..] if second & 0xf000 == 0 => "documentation (3fff::/20)",
        [0x2001, 0x0002, 0, ..] => "benchmarking (2001:2::/48)",
        [0x2001, 0, ..] => "Teredo (2001::/32)",
        [0x2001, second, ..] if second & 0xfff0 == 0x0010 || second & 0xfff0 == 0x0020 => {
            "ORCHID (2001:10::/28, 2001:20::/28)"
        }
        [0x0064, 0xff9b, 0x0001, ..] => "local-use NAT64 (64:ff9b:1::/48)",
        [0x0100, 0, 0, 0, ..] => "discard-only (100::/64)",
        _ => return None,
    })
}

/// ureq's resolver, refusing the whole lookup when any address is
/// forbidden, so the connector only ever sees addresses that passed.
#[derive(Debug, Default)]
struct GuardedResolver(DefaultResolver);

impl Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().unwrap_or_default();
        let refuse = |refused: Refused| {
            ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                refused,
            ))
        };
        check_host(host).map_err(refuse)?;
        let addresses = self.0.resolve(uri, config, timeout)?;
        for address in addresses.iter() {
            if let Some(reason) = forbidden_reason(address.ip()) {
                return Err(refuse(Refused {
                    host: host.to_owned(),
                    address: Some(address.ip()),
                    reason,
                }));
            }
        }
        Ok(addresses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(ip: &str) -> Option<&'static str> {
        forbidden_reason(ip.parse().expect("an IP address"))
    }

    #[test]
    fn private_and_special_ipv4_addresses_are_forbidden() {
        for (ip, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private (RFC 1918)"),
            ("10.255.255.255", "private (RFC 1918)"),
            ("172.16.0.1", "private (RFC 1918)"),
            ("172.31.255.255", "private (RFC 1918)"),
            ("192.168.1.1", "private (RFC 1918)"),
            ("100.64.0.1", "shared/CGNAT (100.64.0.0/10)"),
            ("100.127.255.255", "shared/CGNAT (100.64.0.0/10)"),
            ("169.254.169.254", "cloud metadata (link-local)"),
            ("169.254.0.1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "\"this network\" (0.0.0.0/8)"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("192.0.0.8", "IETF protocol assignment (192.0.0.0/24)"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("198.18.0.1", "benchmarking (198.18.0.0/15)"),
            ("198.19.255.255", "benchmarking (198.18.0.0/15)"),
            ("192.88.99.1", "6to4 relay anycast (192.88.99.0/24)"),
            ("240.0.0.1", "reserved (240.0.0.0/4)"),
        ] {
            assert_eq!(reason(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn public_ipv4_addresses_next_to_forbidden_ranges_are_allowed() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.167.255.255",
            "192.169.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "126.255.255.255",
            "128.0.0.1",
            "169.253.255.255",
            "169.255.0.1",
            "192.0.1.1",
            "192.0.3.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
        ] {
            assert_eq!(reason(ip), None, "{ip}");
        }
    }

    #[test]
    fn private_and_special_ipv6_addresses_are_forbidden() {
        for (ip, expected) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fc00::1", "unique local (fc00::/7)"),
            ("fd12:3456:789a::1", "unique local (fc00::/7)"),
            ("fe80::1", "link-local (fe80::/10)"),
            ("febf::1", "link-local (fe80::/10)"),
            ("fec0::1", "site-local (fec0::/10)"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation (2001:db8::/32)"),
            ("3fff::1", "documentation (3fff::/20)"),
            ("2001:2::1", "benchmarking (2001:2::/48)"),
            ("2001:0:4136:e378::1", "Teredo (2001::/32)"),
            ("2001:20::1", "ORCHID (2001:10::/28, 2001:20::/28)"),
            ("64:ff9b:1::1", "local-use NAT64 (64:ff9b:1::/48)"),
            ("100::1", "discard-only (100::/64)"),
        ] {
            assert_eq!(reason(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_carrying_a_forbidden_ipv4_address_are_forbidden() {
        for (ip, expected) in [
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:7f00:1", "loopback"),
            ("::ffff:10.1.2.3", "private (RFC 1918)"),
            ("::ffff:169.254.169.254", "cloud metadata (link-local)"),
            ("::127.0.0.1", "loopback"),
            ("::192.168.0.1", "private (RFC 1918)"),
            ("::0.0.0.2", "\"this network\" (0.0.0.0/8)"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "cloud metadata (link-local)"),
            ("2002:7f00:1::", "loopback"),
            ("2002:c0a8:101::1", "private (RFC 1918)"),
        ] {
            assert_eq!(reason(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn public_ipv6_addresses_and_forms_carrying_public_ipv4_are_allowed() {
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:82b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:4860:4860::8888",
            "fbff::1",
            "fe00::1",
        ] {
            assert_eq!(reason(ip), None, "{ip}");
        }
    }

    #[test]
    fn guarded_urls_must_be_http_and_not_name_local_hosts() {
        let refused = |url| check_url(url).expect_err(url).reason;
        assert_eq!(
            refused("ftp://example.com/x"),
            "not an http:// or https:// URL"
        );
        assert_eq!(
            refused("file:///etc/passwd"),
            "not an http:// or https:// URL"
        );
        assert_eq!(
            refused("example.com/hook"),
            "not an http:// or https:// URL"
        );
        assert_eq!(refused("http://localhost:8080/"), "a loopback host name");
        assert_eq!(refused("http://LocalHost./"), "a loopback host name");
        assert_eq!(refused("https://api.localhost/"), "a loopback host name");
        assert_eq!(
            refused("http://metadata.google.internal/computeMetadata/v1/"),
            "a cloud metadata host name"
        );
        assert_eq!(refused("http://127.0.0.1:9/"), "loopback");
        assert_eq!(refused("http://[::1]:9/"), "loopback");
        assert_eq!(refused("http://[::ffff:10.0.0.1]/"), "private (RFC 1918)");
        assert_eq!(refused("not a url"), "not an http:// or https:// URL");
        assert_eq!(refused("http://exa mple.com/"), "not a valid URL");
        for url in [
            "https://hooks.example.com/tidings",
            "HTTP://example.com",
            "https://93.184.215.14:8443/x?y=1",
            "https://[2606:4700:4700::1111]/",
            "https://localhost.example.com/",
        ] {
            assert_eq!(check_url(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn refusals_name_the_address_class_and_the_operator_override() {
        let error = check_url("http://user:pw@10.0.0.1/hook?token=abc")
            .expect_err("private")
            .into_error(&display_url("http://user:pw@10.0.0.1/hook?token=abc"));
        assert!(!error.is_transient());
        let message = error.to_string();
        assert!(message.contains("http://10.0.0.1/hook"), "{message}");
        assert!(message.contains("private (RFC 1918)"), "{message}");
        assert!(message.contains("operator allows"), "{message}");
        assert!(
            !message.contains("pw") && !message.contains("abc"),
            "{message}"
        );
    }

    #[test]
    fn displayed_urls_drop_user_info_query_and_fragment() {
        assert_eq!(
            display_url("https://u:secret@hooks.example.com:8443/a/b?sig=x#f"),
            "https://hooks.example.com:8443/a/b"
        );
        assert_eq!(display_url("http://example.com"), "http://example.com");
        assert_eq!(display_url("http://example.com?x"), "http://example.com");
        assert_eq!(display_url("http://[::1]:80/p"), "http://[::1]:80/p");
    }

    fn reply(status: u16, body: &str) -> HttpReply {
        HttpReply {
            status,
            body: body.to_owned(),
        }
    }

    #[test]
    fn statuses_are_classified_transient_or_permanent() {
        for status in [200, 201, 202, 204, 299] {
            assert!(classify_status("x", &reply(status, "")).is_ok(), "{status}");
        }
        for status in [408, 425, 429, 500, 502, 503, 504, 599] {
            let error = classify_status("x", &reply(status, "")).expect_err("an error");
            assert!(error.is_transient(), "{status}");
        }
        for status in [301, 302, 307, 400, 401, 403, 404, 409, 410, 413, 422] {
            let error = classify_status("x", &reply(status, "")).expect_err("an error");
            assert!(!error.is_transient(), "{status}");
        }
        let redirect = classify_status("x", &reply(302, "")).expect_err("an error");
        assert!(redirect.to_string().contains("not followed"), "{redirect}");
    }

    #[test]
    fn status_errors_quote_the_start_of_the_body() {
        let error = classify_status(
            "webhook https://h.example/x",
            &reply(503, "  busy,\n\n try later "),
        )
        .expect_err("an error");
        assert_eq!(
            error.to_string(),
            "webhook https://h.example/x: HTTP 503: busy, try later"
        );
        let long = "word ".repeat(100);
        let quoted = excerpt(&long);
        assert!(quoted.ends_with('…'), "{quoted}");
        assert!(quoted.chars().count() <= EXCERPT_CHARS + 1, "{quoted}");
        assert_eq!(excerpt(&"é".repeat(300)).chars().count(), EXCERPT_CHARS + 1);
        assert_eq!(
            classify_status("x", &reply(404, ""))
                .expect_err("an error")
                .to_string(),
            "x: HTTP 404"
        );
    }
}
