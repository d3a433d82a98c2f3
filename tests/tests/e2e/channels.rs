//! SMS, WhatsApp and webhooks through `TwilioTransport` and
//! `WebhookTransport` to local HTTP servers the tests start on loopback:
//! the wire format as the provider reads it, how each failure is classed,
//! the Standard Webhooks signature checked independently, and the guard
//! against private destinations.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;
use tidings_host::dispatch::http::{HttpClient, HttpConfig};
use tidings_host::dispatch::twilio::{TwilioAccount, TwilioTransport};
use tidings_host::dispatch::webhook::{WebhookEndpoint, WebhookTransport};
use tidings_host::dispatch::{DispatchError, Outbound};
use tidings_host::render::Rendered;
use tidings_sdk::types::{Category, Channel};

/// 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600;

/// A request as the server received it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    query: Option<String>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// What the server answers every request with.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
    location: Option<String>,
    delay: Duration,
}

impl Answer {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.to_string(),
            location: None,
            delay: Duration::ZERO,
        }
    }

    fn text(status: u16, body: &str) -> Self {
        Self {
            content_type: "text/plain",
            body: body.to_owned(),
            ..Self::json(status, Value::Null)
        }
    }
}

/// An HTTP server on a free loopback port that records every request;
/// stopped when dropped.
struct Server {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(answer: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let app = Router::new().fallback(move |request: Request| {
            let log = log.clone();
            let answer = answer.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .expect("request body");
                log.lock().expect("log").push(Received {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().map(str::to_owned),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(name, value)| {
                            (
                                name.as_str().to_owned(),
                                value.to_str().expect("ASCII header").to_owned(),
                            )
                        })
                        .collect(),
                    body: body.to_vec(),
                });
                tokio::time::sleep(answer.delay).await;
                let mut response = Response::builder()
                    .status(answer.status)
                    .header("content-type", answer.content_type);
                if let Some(location) = &answer.location {
                    response = response.header("location", location);
                }
                response
                    .body(Body::from(answer.body))
                    .expect("a valid response")
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self {
            addr,
            received,
            task,
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn client(allow_private: bool, timeout: Duration) -> HttpClient {
    HttpClient::new(HttpConfig {
        timeout,
        allow_private,
    })
}

fn rendered(channel: Channel) -> Rendered {
    Rendered {
        template: "order-shipped".into(),
        channel,
        locale: "it".into(),
        subject: None,
        text: "Ciao Ada, l'ordine #1001 è partito: 100% & in viaggio!".into(),
        html: None,
    }
}

fn outbound<'a>(
    id: &'a str,
    channel: Channel,
    to: Option<&'a str>,
    rendered: &'a Rendered,
) -> Outbound<'a> {
    Outbound {
        id,
        tenant_id: "t_shop",
        channel,
        to,
        customer_id: "c_ada",
        from: "",
        reply_to: "",
        category: Category::Transactional,
        rendered,
        dkim: None,
        twilio: None,
        endpoint: None,
    }
}

fn account(from: &str) -> TwilioAccount {
    TwilioAccount {
        account_sid: "AC0123456789abcdef0123456789abcdef".into(),
        auth_token: "auth-token-0123".into(),
        from: from.into(),
    }
}

fn created(sid: &str) -> Answer {
    Answer::json(
        201,
        json!({
            "sid": sid,
            "status": "queued",
            "account_sid": "AC0123456789abcdef0123456789abcdef",
            "api_version": "2010-04-01",
        }),
    )
}

/// `application/x-www-form-urlencoded` pairs, decoded independently of the
/// host's encoder.
fn form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
                    out.push(u8::from_str_radix(hex, 16).expect("a %XX escape"));
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).expect("UTF-8 field")
    };
    std::str::from_utf8(body)
        .expect("ASCII form")
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("name=value");
            (decode(name), decode(value))
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn sms_is_a_form_post_with_basic_auth_and_a_status_callback_and_returns_the_sid() {
    let server = Server::start(created("SM00000000000000000000000000000001")).await;
    let transport = TwilioTransport::new(
        client(false, Duration::from_secs(5)),
        server.base(),
        Some("https://tidings.example.com/".into()),
    );
    let content = rendered(Channel::Sms);
    let receipt = transport
        .send(
            &account("+15005550006"),
            &outbound("msg_sms_1", Channel::Sms, Some("+393331234567"), &content),
        )
        .await
        .expect("sent");
    assert_eq!(
        receipt.provider_id.as_deref(),
        Some("SM00000000000000000000000000000001")
    );
    assert_eq!(
        receipt.transport_id,
        "twilio SM00000000000000000000000000000001"
    );

    let received = server.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"
    );
    let credentials = base64::engine::general_purpose::STANDARD
        .encode("AC0123456789abcdef0123456789abcdef:auth-token-0123");
    assert_eq!(
        request.headers["authorization"],
        format!("Basic {credentials}")
    );
    assert_eq!(
        request.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        form(&request.body),
        pairs(&[
            ("To", "+393331234567"),
            ("From", "+15005550006"),
            (
                "Body",
                "Ciao Ada, l'ordine #1001 è partito: 100% & in viaggio!"
            ),
            (
                "StatusCallback",
                "https://tidings.example.com/v1/callbacks/twilio/t_shop"
            ),
        ])
    );
}

#[tokio::test]
async fn whatsapp_addresses_get_the_whatsapp_prefix_once_and_messaging_services_go_by_sid() {
    let server = Server::start(created("SM00000000000000000000000000000002")).await;
    let transport = TwilioTransport::new(client(true, Duration::from_secs(5)), server.base(), None);
    let content = rendered(Channel::Whatsapp);
    for (from, to) in [
        ("+15005550006", "+393331234567"),
        ("whatsapp:+15005550006", "whatsapp:+393331234567"),
        ("MG0123456789abcdef0123456789abcdef", "+393331234567"),
    ] {
        transport
            .send(
                &account(from),
                &outbound("msg_wa_1", Channel::Whatsapp, Some(to), &content),
            )
            .await
            .expect("sent");
    }

    let fields: Vec<_> = server
        .received()
        .iter()
        .map(|request| form(&request.body))
        .collect();
    let body = (
        "Body",
        "Ciao Ada, l'ordine #1001 è partito: 100% & in viaggio!",
    );
    assert_eq!(
        fields,
        vec![
            pairs(&[
                ("To", "whatsapp:+393331234567"),
                ("From", "whatsapp:+15005550006"),
                body,
            ]),
            pairs(&[
                ("To", "whatsapp:+393331234567"),
                ("From", "whatsapp:+15005550006"),
                body,
            ]),
            pairs(&[
                ("To", "whatsapp:+393331234567"),
                ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"),
                body,
            ]),
        ]
    );
}

#[tokio::test]
async fn twilio_errors_are_transient_or_permanent_as_twilio_means_them() {
    let cases = [
        (
            Answer::json(
                429,
                json!({"code": 20429, "message": "Too Many Requests", "status": 429}),
            ),
            true,
            "20429",
        ),
        (Answer::text(500, "Internal Server Error"), true, "HTTP 500"),
        (
            Answer::json(
                400,
                json!({
                    "code": 21211,
                    "message": "The 'To' number +39000 is not a valid phone number.",
                    "more_info": "https://www.twilio.com/docs/errors/21211",
                    "status": 400,
                }),
            ),
            false,
            "error 21211: The 'To' number +39000 is not a valid phone number.",
        ),
        (
            Answer::json(
                401,
                json!({"code": 20003, "message": "Authenticate", "status": 401}),
            ),
            false,
            "HTTP 401: error 20003: Authenticate",
        ),
    ];
    let content = rendered(Channel::Sms);
    for (answer, transient, expected) in cases {
        let status = answer.status;
        let server = Server::start(answer).await;
        let transport =
            TwilioTransport::new(client(true, Duration::from_secs(5)), server.base(), None);
        let error = transport
            .send(
                &account("+15005550006"),
                &outbound("msg_err", Channel::Sms, Some("+39000"), &content),
            )
            .await
            .expect_err("refused");
        assert_eq!(error.is_transient(), transient, "{status}: {error}");
        let message = error.to_string();
        assert!(message.contains(expected), "{status}: {message}");
        assert!(!message.contains("auth-token-0123"), "{message}");
        assert_eq!(server.received().len(), 1);
    }
}

#[tokio::test]
async fn a_customer_without_a_phone_number_is_refused_for_good_without_a_request() {
    let server = Server::start(created("SM1")).await;
    let transport = TwilioTransport::new(client(true, Duration::from_secs(5)), server.base(), None);
    let content = rendered(Channel::Sms);
    let error = transport
        .send(
            &account("+15005550006"),
            &outbound("msg_nophone", Channel::Sms, None, &content),
        )
        .await
        .expect_err("no phone");
    assert!(!error.is_transient(), "{error}");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn an_unreachable_provider_is_a_transient_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let transport = TwilioTransport::new(
        client(true, Duration::from_secs(5)),
        format!("http://127.0.0.1:{port}"),
        None,
    );
    let content = rendered(Channel::Sms);
    let error = transport
        .send(
            &account("+15005550006"),
            &outbound("msg_down", Channel::Sms, Some("+393331234567"), &content),
        )
        .await
        .expect_err("nobody listens");
    assert!(error.is_transient(), "{error}");
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
}

fn endpoint(server: &Server, secret: &str) -> WebhookEndpoint {
    WebhookEndpoint {
        url: server.url("/hooks/tidings?shop=corner"),
        secret: secret.into(),
    }
}

fn hmac_sha256(key: &[u8], content: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(content);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn webhook_messages_carry_standard_webhooks_headers_that_verify_independently() {
    let server = Server::start(Answer::text(200, "ok")).await;
    let key: Vec<u8> = (0u8..32).map(|b| b.wrapping_mul(37) ^ 0x5a).collect();
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(&key)
    );
    let endpoint = endpoint(&server, &secret);
    let transport = WebhookTransport::new(client(true, Duration::from_secs(5)));
    let content = rendered(Channel::Push);
    let message = outbound("msg_push_1", Channel::Push, None, &content);
    let receipt = transport
        .send(Some(&endpoint), &message, NOW)
        .await
        .expect("sent");
    assert_eq!(
        receipt.transport_id,
        format!("webhook {} 200", server.url("/hooks/tidings"))
    );
    assert_eq!(receipt.provider_id, None);
    // A retry of the same message keeps its id: the receiver's idempotency key.
    transport
        .send(Some(&endpoint), &message, NOW + 60)
        .await
        .expect("sent again");

    let received = server.received();
    assert_eq!(received.len(), 2);
    for (request, timestamp) in received.iter().zip([NOW, NOW + 60]) {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hooks/tidings");
        assert_eq!(request.query.as_deref(), Some("shop=corner"));
        assert_eq!(request.headers["content-type"], "application/json");
        assert_eq!(request.headers["webhook-id"], "msg_push_1");
        assert_eq!(request.headers["webhook-timestamp"], timestamp.to_string());
        let signed = [
            b"msg_push_1.".as_slice(),
            timestamp.to_string().as_bytes(),
            b".",
            &request.body,
        ]
        .concat();
        assert_eq!(
            request.headers["webhook-signature"],
            format!("v1,{}", hmac_sha256(&key, &signed))
        );
    }
    let body: Value = serde_json::from_slice(&received[0].body).expect("JSON body");
    assert_eq!(
        body,
        json!({
            "type": "message.push",
            "timestamp": "2026-01-01T00:00:00Z",
            "data": {
                "message_id": "msg_push_1",
                "tenant_id": "t_shop",
                "channel": "push",
                "customer_id": "c_ada",
                "template": "order-shipped",
                "locale": "it",
                "subject": null,
                "text": "Ciao Ada, l'ordine #1001 è partito: 100% & in viaggio!",
                "html": null,
            },
        })
    );
}

#[tokio::test]
async fn agent_notifications_to_a_bare_url_are_unsigned_json_with_a_top_level_text() {
    let server = Server::start(Answer::text(200, "ok")).await;
    let transport = WebhookTransport::new(client(true, Duration::from_secs(5)));
    let content = rendered(Channel::Webhook);
    let url = server.url("/services/T000/B000/XXXX");
    let receipt = transport
        .send(
            None,
            &outbound("msg_agent_1", Channel::Webhook, Some(&url), &content),
            NOW,
        )
        .await
        .expect("sent");
    assert_eq!(receipt.transport_id, format!("webhook {url} 200"));

    let received = server.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.path, "/services/T000/B000/XXXX");
    assert_eq!(request.headers["webhook-id"], "msg_agent_1");
    assert!(!request.headers.contains_key("webhook-signature"));
    let body: Value = serde_json::from_slice(&request.body).expect("JSON body");
    assert_eq!(body["type"], "message.webhook");
    assert_eq!(body["data"]["message_id"], "msg_agent_1");
    assert_eq!(body["text"], content.text);
}

#[tokio::test]
async fn webhook_error_statuses_are_transient_or_permanent() {
    let content = rendered(Channel::Push);
    for (status, transient) in [
        (429, true),
        (503, true),
        (408, true),
        (410, false),
        (400, false),
    ] {
        let server = Server::start(Answer::text(status, "nope")).await;
        let transport = WebhookTransport::new(client(true, Duration::from_secs(5)));
        let error = transport
            .send(
                Some(&endpoint(&server, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
                &outbound("msg_status", Channel::Push, None, &content),
                NOW,
            )
            .await
            .expect_err("refused");
        assert_eq!(error.is_transient(), transient, "{status}: {error}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("HTTP {status}: nope")),
            "{message}"
        );
        assert!(!message.contains("shop=corner"), "{message}");
    }
}

#[tokio::test]
async fn a_webhook_endpoint_that_hangs_past_the_timeout_is_a_transient_error_quickly() {
    let server = Server::start(Answer {
        delay: Duration::from_secs(30),
        ..Answer::text(200, "too late")
    })
    .await;
    let transport = WebhookTransport::new(client(true, Duration::from_millis(500)));
    let content = rendered(Channel::Push);
    let started = Instant::now();
    let error = transport
        .send(
            Some(&endpoint(&server, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
            &outbound("msg_slow", Channel::Push, None, &content),
            NOW,
        )
        .await
        .expect_err("timed out");
    let elapsed = started.elapsed();
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("no reply within"), "{error}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_redirecting_webhook_endpoint_is_a_permanent_error_and_is_not_followed() {
    let server = Server::start(Answer {
        location: Some("http://169.254.169.254/latest/meta-data/".into()),
        ..Answer::text(302, "")
    })
    .await;
    let transport = WebhookTransport::new(client(true, Duration::from_secs(5)));
    let content = rendered(Channel::Push);
    let error = transport
        .send(
            Some(&endpoint(&server, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
            &outbound("msg_redirect", Channel::Push, None, &content),
            NOW,
        )
        .await
        .expect_err("redirected");
    assert!(!error.is_transient(), "{error}");
    assert!(error.to_string().contains("HTTP 302"), "{error}");
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn private_and_loopback_webhook_urls_are_refused_for_good_without_connecting() {
    let server = Server::start(Answer::text(200, "ok")).await;
    let port = server.addr.port();
    let transport = WebhookTransport::new(client(false, Duration::from_secs(5)));
    let content = rendered(Channel::Webhook);
    let started = Instant::now();
    for (url, class) in [
        (format!("http://127.0.0.1:{port}/hook"), "loopback"),
        (
            format!("http://localhost:{port}/hook"),
            "loopback host name",
        ),
        ("http://10.0.0.1/hook".to_owned(), "private (RFC 1918)"),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "cloud metadata",
        ),
        (format!("http://[::1]:{port}/hook"), "loopback"),
        (format!("http://[::ffff:127.0.0.1]:{port}/hook"), "loopback"),
        // Not an IP literal to the guard: the resolver turns it into
        // 127.0.0.1, and the resolved address is what is refused.
        (format!("http://2130706433:{port}/hook"), "loopback"),
    ] {
        let message = outbound("msg_ssrf", Channel::Webhook, Some(&url), &content);
        let configured = WebhookEndpoint {
            url: url.clone(),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        };
        let refusals: [Result<_, DispatchError>; 2] = [
            transport.send(None, &message, NOW).await,
            transport.send(Some(&configured), &message, NOW).await,
        ];
        for refusal in refusals {
            let error = refusal.expect_err(&url);
            assert!(!error.is_transient(), "{url}: {error}");
            let text = error.to_string();
            assert!(text.contains(class), "{url}: {text}");
            assert!(text.contains("operator allows"), "{url}: {text}");
            if url.contains("2130706433") {
                assert!(text.contains("resolves to 127.0.0.1"), "{url}: {text}");
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refusals must not wait on connections"
    );
    assert!(server.received().is_empty(), "{:?}", server.received());
}

#[tokio::test]
async fn the_twilio_api_base_is_operator_config_and_is_not_guarded() {
    let server = Server::start(created("SM00000000000000000000000000000003")).await;
    let transport =
        TwilioTransport::new(client(false, Duration::from_secs(5)), server.base(), None);
    let content = rendered(Channel::Sms);
    transport
        .send(
            &account("+15005550006"),
            &outbound("msg_sms_2", Channel::Sms, Some("+393331234567"), &content),
        )
        .await
        .expect("sent to the operator's API base on loopback");
    assert_eq!(server.received().len(), 1);
}
