//! Email through `SmtpTransport` to a real, independent SMTP server (Python's
//! aiosmtpd, run as a process), read back and parsed by Python's `email`
//! package, with DKIM checked by an independent verifier (dkimpy).
//!
//! Needs `python3 -m pip install aiosmtpd dkimpy` (`make python-deps`) and the
//! `openssl` command for the DKIM keys.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use rand::RngExt as _;
use serde_json::Value;
use tidings_host::dispatch::email::{DkimConfig, SmtpTransport};
use tidings_host::dispatch::{DispatchError, Outbound, Receipt, Transport};
use tidings_host::render::Rendered;
use tidings_sdk::types::{Category, Channel};

/// Saves every message as `<n>.json` (envelope) and `<n>.eml` (raw data);
/// `mode` makes it refuse recipients or require a login.
const SERVER: &str = r#"
import asyncio, json, os, sys
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

out, mode = sys.argv[1], sys.argv[2]

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if mode == "reject":
            return "550 5.1.1 no such user here"
        if mode == "defer":
            return "451 4.3.0 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if mode == "slow":
            await asyncio.sleep(0.3)
        n = len([f for f in os.listdir(out) if f.endswith(".eml")])
        with open(os.path.join(out, f"{n}.json"), "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos}, f)
        with open(os.path.join(out, f"{n}.tmp"), "wb") as f:
            f.write(envelope.original_content)
        os.replace(os.path.join(out, f"{n}.tmp"), os.path.join(out, f"{n}.eml"))
        return f"250 2.0.0 queued as {n}"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"shop", b"s3cret")
    # handled=False: aiosmtpd then replies 535 itself (its default, True,
    # means "the authenticator already replied" and the client would wait).
    return AuthResult(success=ok, handled=False)

def smtp():
    if mode == "auth":
        return SMTP(Handler(), hostname="localhost", authenticator=authenticator,
                    auth_required=True, auth_require_tls=False)
    return SMTP(Handler(), hostname="localhost")

async def main():
    server = await asyncio.get_running_loop().create_server(smtp, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"#;

/// Prints the message on stdin as JSON: lower-cased headers and the decoded
/// body of every leaf part by content type.
const INSPECT: &str = r#"
import email, json, sys
from email import policy
msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)
print(json.dumps({
    "content_type": msg.get_content_type(),
    "headers": {k.lower(): str(v) for k, v in msg.items()},
    "parts": {p.get_content_type(): p.get_content() for p in msg.walk() if not p.is_multipart()},
}))
"#;

/// `dkim.verify` of the message in argv[1], with DNS answering only
/// `sel2026._domainkey.shop.example` with the public key in argv[2].
const VERIFY: &str = r#"
import dkim, sys
record = b"v=DKIM1; k=rsa; p=" + sys.argv[2].encode()
def dns(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    return record if name.rstrip(".") == "sel2026._domainkey.shop.example" else None
print(dkim.verify(open(sys.argv[1], "rb").read(), dnsfunc=dns))
"#;

/// An aiosmtpd process on a free loopback port, killed when dropped.
pub(crate) struct SmtpServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl SmtpServer {
    /// `mode`: `accept`, `slow` (accepts, 300 ms per message), `reject`
    /// (550 to RCPT), `defer` (451 to RCPT) or `auth` (login `shop` /
    /// `s3cret` required).
    pub(crate) fn start(mode: &str) -> Self {
        let dir = scratch_dir(mode);
        std::fs::write(dir.join("server.py"), SERVER).expect("write the server script");
        let stderr = std::fs::File::create(dir.join("server.log")).expect("server log");
        let mut child = Command::new("python3")
            .arg(dir.join("server.py"))
            .arg(&dir)
            .arg(mode)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the port");
        let mut server = Self {
            child,
            port: 0,
            dir,
        };
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!(
                "the SMTP server did not start (is aiosmtpd installed? `make python-deps`): {}",
                std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default()
            )
        });
        server.port = port;
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far: (envelope, raw bytes).
    pub(crate) fn received(&self) -> Vec<(Value, Vec<u8>)> {
        (0..)
            .map(|n| self.dir.join(format!("{n}.eml")))
            .take_while(|eml| eml.exists())
            .map(|eml| {
                let envelope = std::fs::read(eml.with_extension("json")).expect("envelope");
                (
                    serde_json::from_slice(&envelope).expect("envelope JSON"),
                    std::fs::read(&eml).expect("message"),
                )
            })
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let n: u64 = rand::rng().random();
    let dir = std::env::temp_dir().join(format!(
        "tidings-smtp-{name}-{}-{n:016x}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn rendered(html: bool) -> Rendered {
    Rendered {
        template: "order-shipped".into(),
        channel: Channel::Email,
        locale: "en".into(),
        subject: Some("Your order 1001 has shipped".into()),
        text: "Hello Ada,\nyour order 1001 is on its way.\n".into(),
        html: html.then(|| "<p>Hello Ada,<br>your order <b>1001</b> is on its way.</p>".into()),
    }
}

fn outbound<'a>(
    id: &'a str,
    category: Category,
    rendered: &'a Rendered,
    dkim: Option<&'a DkimConfig>,
) -> Outbound<'a> {
    Outbound {
        id,
        tenant_id: "t_shop",
        channel: Channel::Email,
        to: Some("Ada Lovelace <ada@customer.example>"),
        customer_id: "c_ada",
        from: "Corner Shop <orders@shop.example>",
        reply_to: "care@shop.example",
        category,
        rendered,
        dkim,
        twilio: None,
        endpoint: None,
    }
}

async fn send(url: &str, message: &Outbound<'_>) -> Result<Receipt, DispatchError> {
    SmtpTransport::from_url(url)
        .expect("valid URL")
        .send(message)
        .await
}

fn python(script: &str, args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("python3 finishes");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A decoded part as text with LF line ends (the wire has CRLF).
fn body(part: &Value) -> String {
    part.as_str()
        .expect("a text part")
        .replace("\r\n", "\n")
        .trim_end()
        .to_owned()
}

fn inspect(raw: &[u8]) -> Value {
    serde_json::from_str(&python(INSPECT, &[], raw)).expect("inspect JSON")
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A fresh RSA key as PEM (PKCS#8, or PKCS#1 when `traditional`) and its
/// public key as the base64 DER of a DKIM TXT record's `p=`.
fn rsa_key(dir: &Path, traditional: bool) -> (String, String) {
    let path = dir.join(format!("key-{traditional}.pem"));
    let path = path.to_str().expect("UTF-8 path");
    let mut genrsa = vec!["genrsa", "-out", path];
    if traditional {
        genrsa.push("-traditional");
    }
    genrsa.push("2048");
    openssl(&genrsa);
    let public = openssl(&["rsa", "-in", path, "-pubout", "-outform", "DER"]);
    (
        std::fs::read_to_string(path).expect("key PEM"),
        base64::engine::general_purpose::STANDARD.encode(public),
    )
}

fn dkim_verifies(dir: &Path, raw: &[u8], public_key: &str) -> bool {
    let path = dir.join("verify.eml");
    std::fs::write(&path, raw).expect("write the message");
    let path = path.to_str().expect("UTF-8 path");
    match python(VERIFY, &[path, public_key], b"").trim() {
        "True" => true,
        "False" => false,
        other => panic!("dkim.verify printed {other}"),
    }
}

#[tokio::test]
async fn marketing_email_arrives_multipart_with_its_headers_and_list_unsubscribe() {
    let server = SmtpServer::start("accept");
    let content = rendered(true);
    let receipt = send(
        &server.url(),
        &outbound("msg_0001", Category::Marketing, &content, None),
    )
    .await
    .expect("sent");
    assert!(
        receipt.transport_id.contains("250") && receipt.transport_id.contains("queued as 0"),
        "{}",
        receipt.transport_id
    );

    let received = server.received();
    assert_eq!(received.len(), 1);
    let (envelope, raw) = &received[0];
    assert_eq!(envelope["mail_from"], "orders@shop.example");
    assert_eq!(
        envelope["rcpt_tos"],
        serde_json::json!(["ada@customer.example"])
    );
    let email = inspect(raw);
    let headers = &email["headers"];
    assert_eq!(headers["from"], "Corner Shop <orders@shop.example>");
    assert_eq!(headers["to"], "Ada Lovelace <ada@customer.example>");
    assert_eq!(headers["reply-to"], "care@shop.example");
    assert_eq!(headers["subject"], "Your order 1001 has shipped");
    assert_eq!(headers["message-id"], "<msg_0001@tidings>");
    assert_eq!(
        headers["list-unsubscribe"],
        "<mailto:care@shop.example?subject=unsubscribe>"
    );
    assert!(headers["date"].is_string());
    assert_eq!(email["content_type"], "multipart/alternative");
    assert_eq!(
        body(&email["parts"]["text/plain"]),
        "Hello Ada,\nyour order 1001 is on its way."
    );
    assert_eq!(
        body(&email["parts"]["text/html"]),
        "<p>Hello Ada,<br>your order <b>1001</b> is on its way.</p>"
    );
}

#[tokio::test]
async fn transactional_email_without_html_is_plain_text_without_list_unsubscribe() {
    let server = SmtpServer::start("accept");
    let content = rendered(false);
    let transport = SmtpTransport::from_url(&server.url()).expect("valid URL");
    // Two messages over the pooled connection.
    for id in ["msg_0002", "msg_0003"] {
        transport
            .send(&outbound(id, Category::Transactional, &content, None))
            .await
            .expect("sent");
    }

    let received = server.received();
    assert_eq!(received.len(), 2);
    let email = inspect(&received[1].1);
    assert_eq!(email["headers"]["message-id"], "<msg_0003@tidings>");
    assert!(email["headers"].get("list-unsubscribe").is_none());
    assert_eq!(email["content_type"], "text/plain");
    assert_eq!(
        body(&email["parts"]["text/plain"]),
        "Hello Ada,\nyour order 1001 is on its way."
    );
}

#[tokio::test]
async fn dkim_signatures_from_pkcs1_and_pkcs8_keys_verify_with_dkimpy() {
    let server = SmtpServer::start("accept");
    let keys = scratch_dir("keys");
    let content = rendered(true);
    for (n, traditional) in [false, true].into_iter().enumerate() {
        let (private_key_pem, public_key) = rsa_key(&keys, traditional);
        assert_eq!(
            private_key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
            traditional
        );
        let dkim = DkimConfig {
            domain: "shop.example".into(),
            selector: "sel2026".into(),
            private_key_pem,
        };
        let id = format!("msg_dkim_{n}");
        send(
            &server.url(),
            &outbound(&id, Category::Marketing, &content, Some(&dkim)),
        )
        .await
        .expect("sent");

        let (_, raw) = &server.received()[n];
        let signature = inspect(raw)["headers"]["dkim-signature"]
            .as_str()
            .expect("a DKIM-Signature header")
            .split_whitespace()
            .collect::<String>();
        for tag in [
            "a=rsa-sha256;",
            "c=relaxed/relaxed;",
            "d=shop.example;",
            "s=sel2026;",
            "h=from:to:subject:date:message-id:reply-to:list-unsubscribe;",
        ] {
            assert!(signature.contains(tag), "{tag} missing in {signature}");
        }
        assert!(
            dkim_verifies(&keys, raw, &public_key),
            "traditional: {traditional}"
        );

        let tampered = String::from_utf8_lossy(raw).replace("order 1001", "order 1002");
        assert!(!dkim_verifies(&keys, tampered.as_bytes(), &public_key));
    }
    let _ = std::fs::remove_dir_all(&keys);
}

#[tokio::test]
async fn a_closed_port_is_a_transient_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let content = rendered(false);
    let err = send(
        &format!("smtp://127.0.0.1:{port}"),
        &outbound("msg_down", Category::Transactional, &content, None),
    )
    .await
    .expect_err("nobody listens");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[tokio::test]
async fn a_550_to_rcpt_is_permanent_and_keeps_the_server_text() {
    let server = SmtpServer::start("reject");
    let content = rendered(false);
    let err = send(
        &server.url(),
        &outbound("msg_550", Category::Transactional, &content, None),
    )
    .await
    .expect_err("rejected");
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("550"), "{err}");
    assert!(err.to_string().contains("no such user here"), "{err}");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_451_to_rcpt_is_transient_and_keeps_the_server_text() {
    let server = SmtpServer::start("defer");
    let content = rendered(false);
    let err = send(
        &server.url(),
        &outbound("msg_451", Category::Transactional, &content, None),
    )
    .await
    .expect_err("deferred");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("451"), "{err}");
    assert!(err.to_string().contains("mailbox busy"), "{err}");
}

#[tokio::test]
async fn a_wrong_password_is_permanent_and_the_right_one_sends() {
    let server = SmtpServer::start("auth");
    let content = rendered(false);
    let message = outbound("msg_auth", Category::Transactional, &content, None);
    let url = |userinfo: &str| format!("smtp://{userinfo}@127.0.0.1:{}", server.port);

    let err = send(&url("shop:wrong"), &message)
        .await
        .expect_err("bad login");
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("535"), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "the password leaked: {err}"
    );

    let err = send(&server.url(), &message).await.expect_err("no login");
    assert!(!err.is_transient(), "{err}");

    // `%33` is `3`: user and password are percent-decoded.
    send(&url("shop:s%33cret"), &message)
        .await
        .expect("good login");
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn tls_failures_are_classified() {
    let server = SmtpServer::start("accept");
    let content = rendered(false);
    let message = outbound("msg_tls", Category::Transactional, &content, None);

    // Implicit TLS against a plain-text server: the handshake fails.
    let err = send(&format!("smtps://127.0.0.1:{}", server.port), &message)
        .await
        .expect_err("no TLS there");
    assert!(err.is_transient(), "{err}");

    // STARTTLS required but not offered: the relay is misconfigured.
    let err = send(&format!("{}?tls=starttls", server.url()), &message)
        .await
        .expect_err("no STARTTLS there");
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("STARTTLS"), "{err}");
    assert!(server.received().is_empty());
}

/// The whole service with `--smtp-url`: a lifecycle's email reaches the SMTP
/// server DKIM-signed with the key the tenant set through the API; a relay
/// that refuses the recipient makes the message `dead` with its reply; a
/// relay that is down makes it wait for a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_sends_through_the_relay_signed_with_the_tenants_dkim_key() {
    use axum::http::{Method, StatusCode};
    use serde_json::json;
    use tidings_sdk::testing::fixture;
    use tidings_sdk::types::EventKind;
    use tidings_tests::service::{Db, TestService};

    let server = SmtpServer::start("accept");
    let keys = scratch_dir("service-keys");
    let (private_key, public_key) = rsa_key(&keys, false);
    let mut service = TestService::new(Db::Sqlite).await;
    service.delivery.smtp_url = Some(server.url());
    let (_, key) = service
        .tenant(
            "Shop",
            json!({ "email": { "from": "Bottega <orders@shop.example>" } }),
        )
        .await;
    service
        .install(&key, tidings_tests::guests::STANDARD_LIFECYCLE, json!({}))
        .await;
    service.default_templates(&key).await;
    let (status, body) = service
        .call(
            Method::PUT,
            "/v1/channels/email",
            Some(&key),
            Some(json!({ "dkim": { "domain": "shop.example", "selector": "sel2026", "private_key": private_key } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.to_string().contains("PRIVATE KEY"), "{body}");

    let mut e = fixture(EventKind::OrderCreated);
    e.order.id = "ord_relay".into();
    service.post_event(&key, &e).await;
    service.run_workers().await;
    let messages = service.messages(&key, "ord_relay").await;
    assert_eq!(messages[0]["status"], "sent", "{messages:?}");
    let received = server.received();
    assert_eq!(received.len(), 1);
    let (envelope, raw) = &received[0];
    assert_eq!(envelope["rcpt_tos"], json!([e.order.customer.email]));
    let email = inspect(raw);
    assert_eq!(
        email["headers"]["message-id"],
        json!(format!(
            "<{}@tidings>",
            messages[0]["id"].as_str().expect("id")
        ))
    );
    assert!(email["parts"]["text/html"].is_string(), "{email}");
    assert!(
        dkim_verifies(&keys, raw, &public_key),
        "the tenant's DKIM signature verifies"
    );

    // A relay that refuses the recipient: dead, with the relay's words.
    let rejecting = SmtpServer::start("reject");
    service.delivery.smtp_url = Some(rejecting.url());
    let mut e = fixture(EventKind::OrderCreated);
    e.order.id = "ord_rejected".into();
    e.id = "evt_ord_rejected".into();
    service.post_event(&key, &e).await;
    service.run_workers().await;
    let dead = &service.messages(&key, "ord_rejected").await[0];
    assert_eq!(dead["status"], "dead", "{dead}");
    assert!(
        dead["status_reason"]
            .as_str()
            .expect("reason")
            .contains("550"),
        "{dead}"
    );

    // A relay that is down: retried later.
    drop(rejecting);
    let mut e = fixture(EventKind::OrderCreated);
    e.order.id = "ord_down".into();
    e.id = "evt_ord_down".into();
    service.post_event(&key, &e).await;
    service.run_workers().await;
    let waiting = &service.messages(&key, "ord_down").await[0];
    assert_eq!(waiting["status"], "scheduled", "{waiting}");
    assert!(
        waiting["status_reason"]
            .as_str()
            .expect("reason")
            .starts_with("retrying after"),
        "{waiting}"
    );
    let _ = std::fs::remove_dir_all(&keys);
}
